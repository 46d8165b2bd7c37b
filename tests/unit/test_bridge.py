"""The ModSecurity bridge's message, built by the real Lua script (Lua 5.1, as ModSecurity
2.9 runs it) from a stand-in for ModSecurity's ``m`` API, and read by the analyzer's protocol
parser. The live path (Apache, ModSecurity, the socket) is the Molecule scenarios' job."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlwaf.protocol import parse_request
from mlwaf.request import Arg

BRIDGE = Path(__file__).parents[2] / "roles/ml_analyzer/files/usr/share/mlwaf/modsecurity/mlwaf-bridge.lua"
LUA = shutil.which("lua5.1")

# What ModSecurity would hold for a JSON POST with a query and a cookie: ARGS holds the
# query's and the JSON body processor's arguments (one of them named and valued as the
# query's), ARGS_POST none of the JSON ones.
HARNESS = r"""
local vars = {
  UNIQUE_ID = "abc", REQUEST_METHOD = "POST", REQUEST_FILENAME = "/api/item", QUERY_STRING = "q=1",
  REMOTE_ADDR = "203.0.113.9", TIME_EPOCH = "1700000000", REQUEST_PROTOCOL = "HTTP/1.1",
  REQBODY_PROCESSOR = PROCESSOR, REQUEST_BODY = BODY, ["tx.mlwaf_xml"] = XML,
}
local collections = {
  ARGS_GET = { { name = "ARGS_GET:q", value = "1" } },
  ARGS_POST = {},
  REQUEST_COOKIES = { { name = "REQUEST_COOKIES:sid", value = "x1" } },
  ARGS = { { name = "ARGS:q", value = "1" }, { name = "ARGS:a.b", value = ";id" }, { name = "ARGS:q", value = "1" } },
  REQUEST_HEADERS = {
    { name = "REQUEST_HEADERS:Host", value = "shop.example" },
    { name = "REQUEST_HEADERS:X-Note", value = "<script>\"x\"</script>" },
    { name = "REQUEST_HEADERS:Cookie", value = "sid=x1" },
  },
  REQUEST_HEADERS_NAMES = { {}, {}, {} },
}
local sent
m = {
  getvar = function(name) return vars[name] end,
  getvars = function(name) return collections[name] or {} end,
  setvar = function(name, value) io.stderr:write("setvar ", name, "=", tostring(value), "\n") end,
  log = function(_, text) io.stderr:write(text, "\n") end,
}
package.loaded["socket.unix"] = { stream = function()
  return {
    settimeout = function() end, connect = function() return 1 end, close = function() end,
    send = function(_, text) sent = text; return #text end,
    receive = function() return REPLY end,
  }
end }
dofile(arg[1])
main()
io.write(sent)
"""


NO_FINDINGS = '{"v":1,"verdict":"allow","scores":{}}'


def run_bridge(processor: str, body: str = "", xml: str | None = None, reply: str = NO_FINDINGS) -> tuple[bytes, str]:
    """The bridge's message and the TX variables it set (stderr lines ``setvar name=value``);
    ModSecurity gives an empty REQBODY_PROCESSOR when none parsed the body."""
    setup = (
        f"PROCESSOR = {json.dumps(processor)}\nBODY = {json.dumps(body)}\nXML = {json.dumps(xml) if xml else 'nil'}\n"
        f"REPLY = {json.dumps(reply)}\n"
    )
    result = subprocess.run(
        [LUA, "-", str(BRIDGE)], input=setup + HARNESS, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.encode(), result.stderr


def bridge_message(processor: str, body: str = "", xml: str | None = None) -> bytes:
    return run_bridge(processor, body, xml)[0]


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (make host-deps)")
def test_the_bridge_sends_json_arguments_every_header_and_an_unparsed_body() -> None:
    request = parse_request(bridge_message("JSON"))
    # the second q=1 in ARGS is the JSON body's own q
    json_args = [Arg("json", "a.b", ";id"), Arg("json", "q", "1")]
    assert request.args == [Arg("query", "q", "1"), Arg("cookie", "sid", "x1"), *json_args]
    assert request.headers == {"host": "shop.example", "x-note": '<script>"x"</script>'}, "cookies go as cookies"
    assert (request.method, request.path, request.client_ip) == ("POST", "/api/item", "203.0.113.9")
    plain = parse_request(bridge_message("", '{"beacon": "<svg onload=alert(1)>"}'))
    assert Arg("json", "beacon", "<svg onload=alert(1)>") in plain.args, "a text/plain body is read as what it is"
    parsed = parse_request(bridge_message("URLENCODED", "q=1"))
    assert not any(a.source == "body" for a in parsed.args), "a body a processor parsed is not sent again"
    xml = parse_request(bridge_message("XML", xml="12<|>`id`<|><|>hello<|>a b<|>"))  # as rule 1014 joins them
    assert [a for a in xml.args if a.source == "xml"] == [Arg("xml", "", "`id`"), Arg("xml", "", "a b")]
    padded = parse_request(bridge_message("XML", xml="tea<|>" * 1500 + "`id`<|>"))
    assert Arg("xml", "", "`id`") in padded.args, "plain pieces do not count against the bridge's argument limit"


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (make host-deps)")
def test_the_bridge_gives_rules_each_score_as_an_integer_too() -> None:
    reply = '{"v":1,"verdict":"log","scores":{"attack":0.7236,"profile":1e-05},"summary":"attack=0.724"}'
    _, log = run_bridge("URLENCODED", "q=1", reply=reply)
    assert "setvar tx.mlwaf_verdict=log" in log
    assert "setvar tx.mlwaf_score_attack=0.7236" in log
    assert "setvar tx.mlwaf_permille_attack=724" in log, "rules compare integers only"
    assert "setvar tx.mlwaf_permille_profile=0" in log


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (make host-deps)")
def test_the_bridge_says_when_a_limit_kept_part_of_the_request_back() -> None:
    message, whole = run_bridge("URLENCODED", "q=1")
    assert "tx.mlwaf_partial" not in whole
    assert parse_request(message).anomalies == []
    message, cut = run_bridge("", "x" * 200_000)  # an unparsed body over the bridge's 128 KB
    assert "setvar tx.mlwaf_partial=1" in cut
    assert "bridge_cut" in parse_request(message).anomalies, "the analyzer is told, and counts it"
    _, many = run_bridge("XML", xml="`id`<|>" * 1200)  # more pieces than the argument limit
    assert "setvar tx.mlwaf_partial=1" in many
    capped = '{"v":1,"verdict":"allow","scores":{"attack":0.01},"anomalies":["json_invalid","inputs_truncated"]}'
    _, analyzer_cut = run_bridge("URLENCODED", "q=1", reply=capped)
    assert "setvar tx.mlwaf_partial=1" in analyzer_cut, "the analyzer's own limits count too"
