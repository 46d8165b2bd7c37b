"""One payload, placed in each part of a request an attacker controls.

``placed(payload)`` gives, for every part in ``PARTS``, a request in the
``mlwaf score`` input contract that carries the payload there: an argument's
value (the reference), the same value behind ordinary text, an argument's
name, a cookie's value and name, a header, a browser's User-Agent with the
payload after it, the Referer's query, a JSON field, an XML element's text
and attribute, a path segment and a text/plain body. Each part is encoded the
way a client has to send it there (percent-encoded in a URL or a cookie, escaped
in JSON and XML, on one line in a header), so that detection per part shows
what the analyzer's reading of that part costs.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
_BROWSER = {"user-agent": _AGENT}
_ORDINARY = "blue cotton shirt size M "  # what a real search box already holds


def _url(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _line(text: str) -> str:
    return " ".join(text.splitlines())


def _post(content_type: str, body: str) -> dict:
    headers = {**_BROWSER, "content-type": content_type}
    return {"method": "POST", "path": "/api/comment", "headers": headers, "body": body}


PARTS: dict[str, Callable[[str], dict]] = {
    "value": lambda p: {"path": f"/search?q={_url(p)}&page=1", "headers": _BROWSER},
    "appended": lambda p: {"path": f"/search?q={_url(_ORDINARY + p)}&page=1", "headers": _BROWSER},
    "name": lambda p: {"path": f"/search?{_url(p)}=1&page=1", "headers": _BROWSER},
    "cookie": lambda p: {"path": "/account", "headers": {**_BROWSER, "cookie": f"sid=4f2a9c; pref={_url(p)}"}},
    "cookie-name": lambda p: {"path": "/account", "headers": {**_BROWSER, "cookie": f"sid=4f2a9c; {_url(p)}=1"}},
    "user-agent": lambda p: {"path": "/account", "headers": {"user-agent": f"{_AGENT} {_line(p)}"}},
    "header": lambda p: {"path": "/account", "headers": {**_BROWSER, "x-client-note": _line(p)}},
    "referer": lambda p: {
        "path": "/account",
        "headers": {**_BROWSER, "referer": f"https://shop.example/find?q={_url(p)}"},
    },
    "json": lambda p: _post("application/json", json.dumps({"post": 12, "comment": p})),
    "xml": lambda p: _post("application/xml", f"<comment post='12'><text>{escape(p)}</text></comment>"),
    "xml-attribute": lambda p: _post("application/xml", f"<comment post={quoteattr(p)}><text>hi</text></comment>"),
    "path": lambda p: {"path": f"/item/{_url(p)}/view", "headers": _BROWSER},
    "text-body": lambda p: _post("text/plain", p),
}


def placed(payload: str) -> dict[str, dict]:
    """The payload in each part: part name -> request record."""
    return {part: build(payload) for part, build in PARTS.items()}
