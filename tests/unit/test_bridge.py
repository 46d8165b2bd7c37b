"""The ModSecurity bridge's message, built by the real Lua script (Lua 5.1, as ModSecurity
2.9 runs it) from a stand-in for ModSecurity's ``m`` API, and read by the analyzer's protocol
parser. The live path (Apache, ModSecurity, the socket) is the Molecule scenarios' job."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mlwaf.protocol import parse_request
from mlwaf.request import Arg

ROLE_FILES = Path(__file__).parents[2] / "roles/ml_analyzer/files"
BRIDGE = ROLE_FILES / "usr/share/mlwaf/modsecurity/mlwaf-bridge.lua"
NATIVE_SOURCE = ROLE_FILES / "usr/local/src/mlwaf/mlwaf_bridge.c"
LUA = shutil.which("lua5.1")
CAN_BUILD = shutil.which("gcc") is not None and Path("/usr/include/lua5.1/lua.h").exists()

# What ModSecurity would hold for a JSON POST with a query and a cookie: ARGS holds the
# query's and the JSON body processor's arguments (one of them named and valued as the
# query's), ARGS_POST none of the JSON ones.
HARNESS = r"""
local vars = {
  UNIQUE_ID = "abc", REQUEST_METHOD = "POST", REQUEST_FILENAME = "/api/item", QUERY_STRING = "q=1",
  REMOTE_ADDR = "203.0.113.9", TIME_EPOCH = "1700000000", REQUEST_PROTOCOL = "HTTP/1.1",
  REQBODY_PROCESSOR = PROCESSOR, REQUEST_BODY = BODY, ["tx.mlwaf_xml"] = XML,
  ["tx.mlwaf_native"] = NATIVE, ["tx.mlwaf_socket"] = SOCKET, ["tx.mlwaf_timeout_ms"] = TIMEOUT_MS,
  ["tx.mlwaf_crs"] = CRS, ["tx.anomaly_score"] = "10",
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
    { name = "REQUEST_HEADERS:X-Odd", value = ODD },
    { name = "REQUEST_HEADERS:Content-Length", value = "48" },
  },
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
io.write(sent or "")
"""


NO_FINDINGS = '{"v":1,"verdict":"allow","scores":{}}'


def lua_string(text: str | None) -> str:
    """A Lua 5.1 string literal holding any bytes (decimal escapes), or nil."""
    if text is None:
        return "nil"
    return '"' + "".join(f"\\{b}" for b in text.encode()) + '"'


def run_bridge(
    processor: str,
    body: str = "",
    *,
    xml: str | None = None,
    reply: str = NO_FINDINGS,
    odd: str = "x",
    native: Path | None = None,
    sock: Path | None = None,
    timeout_ms: int = 50,
    crs: str | None = None,
) -> tuple[bytes, str]:
    """The bridge's message and the TX variables it set (stderr lines ``setvar name=value``);
    ModSecurity gives an empty REQBODY_PROCESSOR when none parsed the body. With `native`
    the bridge loads that library and exchanges over the real socket `sock`; the message
    is then what the socket received."""
    setup = (
        f"PROCESSOR = {json.dumps(processor)}\nBODY = {lua_string(body)}\nXML = {lua_string(xml)}\n"
        f"REPLY = {json.dumps(reply)}\nODD = {lua_string(odd)}\nNATIVE = {lua_string(native and str(native))}\n"
        f"SOCKET = {lua_string(sock and str(sock))}\nTIMEOUT_MS = {json.dumps(str(timeout_ms))}\n"
        f"CRS = {lua_string(crs)}\n"
    )
    result = subprocess.run(
        [LUA, "-", str(BRIDGE)], input=setup + HARNESS, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.encode(), result.stderr


def bridge_message(processor: str, body: str = "", xml: str | None = None) -> bytes:
    return run_bridge(processor, body, xml=xml)[0]


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (make host-deps)")
def test_the_bridge_sends_json_arguments_every_header_and_an_unparsed_body() -> None:
    request = parse_request(bridge_message("JSON"))
    # the second q=1 in ARGS is the JSON body's own q
    json_args = [Arg("json", "a.b", ";id"), Arg("json", "q", "1")]
    assert request.args == [Arg("query", "q", "1"), Arg("cookie", "sid", "x1"), *json_args]
    headers = {"host": "shop.example", "x-note": '<script>"x"</script>', "x-odd": "x", "content-length": "48"}
    assert request.headers == headers, "cookies go as cookies"
    assert request.header_count == 5, "every header counts, the cookie's too"
    assert request.content_length == 48
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
def test_while_learning_the_bridge_reports_the_crs_rules_that_fired() -> None:
    learning = parse_request(run_bridge("URLENCODED", "q=1", crs=' 941100@ARGS:q 920350@REQUEST_HEADERS:Host "x')[0])
    assert learning.crs_hits == (("941100", "ARGS:q"), ("920350", "REQUEST_HEADERS:Host"))
    assert learning.crs_score == 10
    message = run_bridge("URLENCODED", "q=1")[0]
    assert b'"crs"' not in message, "nothing about CRS when the appliance is not learning"


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


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native half, built with the role's compiler flags."""
    if LUA is None or not CAN_BUILD:
        pytest.skip("lua5.1, gcc or the Lua 5.1 headers are missing (make host-deps)")
    library = tmp_path_factory.mktemp("native") / "mlwaf_bridge.so"
    command = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared", "-fstack-protector-strong"]
    command += ["-D_FORTIFY_SOURCE=2", "-I/usr/include/lua5.1", "-o", str(library), str(NATIVE_SOURCE), "-llua5.1"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return library


class Analyzer:
    """A stand-in for the analyzer on a real Unix socket: it keeps what it received and
    answers each connection with `reply` (after `delay` seconds), or hangs up (reply None)."""

    def __init__(self, path: Path, reply: str | None = NO_FINDINGS, delay: float = 0.0) -> None:
        self.received: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.reply, self.delay = reply, delay
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.received.append(data)
                time.sleep(self.delay)
                if self.reply is not None:
                    with contextlib.suppress(BrokenPipeError):  # the bridge gave up first
                        conn.sendall(self.reply.encode() + b"\n")


@pytest.fixture
def analyzer_socket(tmp_path: Path) -> Path:
    return tmp_path / "analyzer.sock"


ODD_VALUES = ['tab\there "quoted" back\\slash', "\x00\x01\x1f\x7f end", "caf\u00e9 \u2603 <svg/onload=x>", "a\nb\r\nc"]


@pytest.mark.parametrize("odd", ODD_VALUES)
def test_the_native_half_sends_what_the_lua_bridge_sends(native: Path, analyzer_socket: Path, odd: str) -> None:
    expected, _ = run_bridge("JSON", odd=odd)
    server = Analyzer(analyzer_socket)
    _, log = run_bridge("JSON", odd=odd, native=native, sock=analyzer_socket)
    assert server.received == [expected], "the same bytes, quoted in C"
    assert "setvar tx.mlwaf_verdict=allow" in log
    assert parse_request(server.received[0]).headers["x-odd"] == odd


def test_the_native_half_reads_the_reply_and_gives_up_at_its_deadline(native: Path, analyzer_socket: Path) -> None:
    reply = '{"v":1,"verdict":"block","scores":{"attack":0.99},"summary":"attack=0.990"}'
    Analyzer(analyzer_socket, reply=reply)
    _, log = run_bridge("URLENCODED", "q=1", native=native, sock=analyzer_socket)
    assert "setvar tx.mlwaf_verdict=block" in log
    assert "setvar tx.mlwaf_permille_attack=990" in log
    analyzer_socket.unlink()
    Analyzer(analyzer_socket, delay=0.5)
    started = time.monotonic()
    _, late = run_bridge("URLENCODED", "q=1", native=native, sock=analyzer_socket, timeout_ms=100)
    assert "setvar tx.mlwaf_fallback=receive: timeout" in late
    assert time.monotonic() - started < 0.45, "one deadline for the whole exchange"
    analyzer_socket.unlink()
    Analyzer(analyzer_socket, reply=None)
    _, closed = run_bridge("URLENCODED", "q=1", native=native, sock=analyzer_socket)
    assert "setvar tx.mlwaf_fallback=receive: closed" in closed
    analyzer_socket.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck:  # listens, never accepts
        stuck.bind(str(analyzer_socket))
        stuck.listen(0)
        queued = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for client in queued:
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(str(analyzer_socket))
        started = time.monotonic()
        _, full = run_bridge("URLENCODED", "q=1", native=native, sock=analyzer_socket, timeout_ms=100)
        assert "setvar tx.mlwaf_fallback=connect: timeout" in full, "a full backlog waits for the deadline only"
        assert time.monotonic() - started < 0.45
        for client in queued:
            client.close()
    analyzer_socket.unlink()
    _, down = run_bridge("URLENCODED", "q=1", native=native, sock=analyzer_socket)
    assert "mlwaf: analyzer unavailable: connect: No such file or directory" in down


@pytest.mark.skipif(LUA is None, reason="lua5.1 is not installed (make host-deps)")
def test_the_bridge_falls_back_to_lua_socket_when_the_native_half_is_missing(tmp_path: Path) -> None:
    message, log = run_bridge("URLENCODED", "q=1", native=tmp_path / "absent.so")
    assert "setvar tx.mlwaf_verdict=allow" in log, "lua-socket (here a stand-in) carried the exchange"
    assert parse_request(message).method == "POST"
