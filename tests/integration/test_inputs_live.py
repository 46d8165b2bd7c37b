"""Live equals offline: the same requests through Apache, ModSecurity and the bridge, and
through `mlwaf score` on the host, get the same verdict, whatever part carries the attack
(JSON, XML and text bodies, argument and cookie names, headers)."""

from __future__ import annotations

import json
import shlex
import uuid

import pytest
from conftest import Client

# A command injection CRS 3.3 at paranoia level 1 lets through: the verdict is the model's.
ATTACK = "`id`"
ENCODED = "%60id%60"
BOUNDARY = "mlwafBoundary7"
CASES = {
    "query": ("GET", f"/search.php?q={ENCODED}", {}, None),
    "query-benign": ("GET", "/search.php?q=coffee+grinder", {}, None),
    "name": ("GET", f"/search.php?{ENCODED}=1", {}, None),
    "json": ("POST", "/api.php", {"Content-Type": "application/json"}, json.dumps({"q": ATTACK, "limit": 5})),
    "json-benign": ("POST", "/api.php", {"Content-Type": "application/json"}, json.dumps({"q": "tea", "limit": 5})),
    "xml": ("POST", "/api.php", {"Content-Type": "application/xml"}, f"<search><q>{ATTACK}</q></search>"),
    "xml-attribute": ("POST", "/api.php", {"Content-Type": "application/xml"}, f"<search q='{ATTACK}'/>"),
    # over 16 KB the bridge gets all the text as one piece (rules 1015-1016)
    "xml-large": (
        "POST",
        "/api.php",
        {"Content-Type": "application/xml"},
        "<search>" + "<item n='1'>tea</item>" * 1000 + f"<q>{ATTACK}</q></search>",
    ),
    "text-json": ("POST", "/api.php", {"Content-Type": "text/plain"}, json.dumps({"beacon": ATTACK})),
    "text-benign": ("POST", "/api.php", {"Content-Type": "text/plain"}, json.dumps({"beacon": "page view"})),
    "multipart": (
        "POST",
        "/login.php",
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="username"\r\n\r\n{ATTACK}\r\n--{BOUNDARY}--\r\n',
    ),
    "header": ("GET", "/search.php?q=tea", {"X-Client-Note": ATTACK}, None),
    "cookie": ("GET", "/search.php?q=tea", {"Cookie": f"sid=4f2a9c; pref={ENCODED}"}, None),
    "cookie-name": ("GET", "/search.php?q=tea", {"Cookie": f"sid=4f2a9c; {ENCODED}=1"}, None),
    "browser": (
        "GET",
        "/search.php?q=tea",
        {
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language": "en-US,en;q=0.9",
            "Sec-CH-UA": '"Chromium";v="124", "Not-A.Brand";v="99"',
            "Referer": "https://www.example.org/search?q=green+tea&utm_source=news",
        },
        None,
    ),
}


def offline_verdicts(host) -> dict[str, str]:
    records = [
        {"id": name, "method": method, "path": path, "headers": headers, "body": body or ""}
        for name, (method, path, headers, body) in CASES.items()
    ]
    payload = "\n".join(json.dumps(r) for r in records)
    cmd = host.run(
        f"printf '%s\\n' {shlex.quote(payload)} | /opt/mlwaf/venv/bin/mlwaf score --config /etc/mlwaf/analyzer.toml"
    )
    assert cmd.rc == 0, cmd.stderr
    return {r["id"]: r["verdict"] for r in map(json.loads, cmd.stdout.splitlines())}


@pytest.fixture(scope="module")
def offline(host) -> dict[str, str]:
    return offline_verdicts(host)


def test_the_attacks_are_blocked_offline(offline: dict[str, str]) -> None:
    assert {name for name, verdict in offline.items() if verdict != "block"} == {
        "query-benign",
        "json-benign",
        "text-benign",
        "browser",
    }


@pytest.mark.parametrize("name", list(CASES))
def test_live_agrees_with_offline(client: Client, offline: dict[str, str], name: str) -> None:
    method, path, headers, body = CASES[name]
    marker = f"{'&' if '?' in path else '?'}t={uuid.uuid4().hex}"
    answer = client.request(path + marker, method=method, headers=headers, body=body)
    live = "block" if answer.status == 403 else "allow"
    assert live == offline[name], f"{name}: live {answer.status}, offline {offline[name]}"
