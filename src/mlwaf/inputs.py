"""What the attack model reads of a request: every part an attacker controls, unwrapped.

``model_inputs`` turns a decoded request into the list of texts the model
scores, each an ``Arg`` that names where it came from:

* the path (``path``), unless all its segments are plain, and then each of its
  segments that is not plain (``path:segment<n>``);
* every argument's value and, unless it is a plain identifier, its name
  (``query``/``body``/``json``/``multipart``/``xml``/``cookie``, names as
  ``<source>-name``);
* every request header (``header``), except that a header whose value fits
  its grammar is checked structurally instead (``STRUCTURAL``: a Host, an
  Accept list, a plain User-Agent, ...); a value that does not fit is scored
  like any other. The Cookie header is read as cookies, the Referer and the
  Origin as URLs.

A value is unwrapped before it is scored: JSON inside a value is flattened, a
URL is read as its address (without the query) plus its query's arguments, a
query string inside a value as its arguments, a JWT as its claims and a
base64 token as the text it encodes as well as itself (a token that encodes
binary data is read as any other value), and a block of base64 lines (a file sent
in a JSON field) as the text it encodes, or not at all when it encodes binary data.
Empty values, plain identifiers and numbers (``PLAIN``), media types and unreplaced
ad-server placeholders (``$UID``) carry no syntax to attack with and are not scored. Unwrapping is
bounded (``MAX_DEPTH`` levels, ``Limits.max_args`` inputs), and the cut is
recorded as an anomaly.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from itertools import chain

from mlwaf.request import PLAIN, PLAIN_NAME, Arg, Limits, Request, as_text, parse_urlencoded, plain_agent

MAX_DEPTH = 3  # unwrapping levels inside one value (JSON in a URL in a cookie, say)
_URL = re.compile(r"(?:[a-z][a-z0-9+.-]{1,15}:)?//[^/?#\s]+", re.IGNORECASE)  # a host: ``////etc`` is no URL
_QUERYLIKE = re.compile(r"[\w.\[\]-]+=[^&]*(?:&[\w.\[\]-]+=[^&]*)+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
_CHARACTER_KINDS = (re.compile(r"\d"), re.compile("[a-z]"), re.compile("[A-Z]"))  # a token mixes two of them
_ARRAY_INDEX = re.compile(r"\barray_\d+\b")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Headers checked structurally: a value that fully matches its grammar cannot carry markup,
# quotes that break out of a string, shell syntax or a path climb, and the model is not asked.
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_PARAM = rf"\s*;\s*{_TOKEN}=(?:{_TOKEN}|\"[A-Za-z0-9 ._:/=+-]*\")"
_LIST = rf"\s*(?:{_TOKEN}(?:/{_TOKEN})?(?:{_PARAM})*)?(?:\s*,\s*(?:{_TOKEN}(?:/{_TOKEN})?(?:{_PARAM})*)?)*\s*"
_BRAND = r"\"[A-Za-z0-9 .?_/()-]{1,40}\";v=\"[0-9.]{1,24}\""
_DATE = r"[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT"
_ETAGS = r"\s*(?:\*|(?:W/)?\"[A-Za-z0-9._:+/=-]*\"(?:\s*,\s*(?:W/)?\"[A-Za-z0-9._:+/=-]*\")*)\s*"
_ADDRESS = r"[0-9A-Fa-f.:\[\]]{2,45}"
_GRAMMAR = {
    "host": r"[A-Za-z0-9.-]{1,253}(?::\d{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::\d{1,5})?",
    "content-length": r"\d{1,19}",
    "content-type": rf"{_TOKEN}/{_TOKEN}(?:{_PARAM})*\s*",
    "accept": _LIST,
    "accept-encoding": _LIST,
    "accept-language": _LIST,
    "accept-charset": _LIST,
    "access-control-request-method": _TOKEN,
    "access-control-request-headers": _LIST,
    "cache-control": _LIST,
    "connection": _LIST,
    "pragma": _LIST,
    "te": _LIST,
    "upgrade": _LIST,
    "upgrade-insecure-requests": r"[01]",
    "dnt": r"[01]",
    "priority": r"[a-z]=[0-9a-z?]+(?:,\s*[a-z](?:=[0-9a-z?]+)?)*",
    "sec-browsing-topics": r"(?:\((?:\s*\d+)*\s*\)(?:;[a-z]+=[A-Za-z0-9.:]+)*(?:,\s*)?)+",
    "sec-fetch-dest": _TOKEN,
    "sec-fetch-mode": _TOKEN,
    "sec-fetch-site": _TOKEN,
    "sec-fetch-user": r"\?[01]",
    "sec-gpc": r"[01]",
    "sec-purpose": _LIST,
    "sec-ch-ua": rf"{_BRAND}(?:,\s*{_BRAND})*",
    "sec-ch-ua-full-version-list": rf"{_BRAND}(?:,\s*{_BRAND})*",
    "sec-ch-ua-mobile": r"\?[01]",
    "sec-ch-ua-platform": r"\"[A-Za-z0-9 ._-]{0,32}\"",
    "sec-ch-ua-platform-version": r"\"[0-9.]{0,24}\"",
    "sec-ch-ua-model": r"\"[A-Za-z0-9 ._()-]{0,48}\"",
    "sec-ch-ua-arch": r"\"[A-Za-z0-9_]{0,16}\"",
    "sec-ch-ua-bitness": r"\"\d{0,3}\"",
    "sec-ch-ua-full-version": r"\"[0-9.]{0,24}\"",
    "sec-ch-ua-wow64": r"\?[01]",
    "save-data": r"on|off",
    "if-modified-since": _DATE,
    "if-unmodified-since": _DATE,
    "if-none-match": _ETAGS,
    "if-match": _ETAGS,
    "range": r"bytes=\d*-\d*(?:,\s*\d*-\d*)*",
    "keep-alive": _LIST,
    "x-requested-with": _TOKEN,
    "x-forwarded-for": rf"{_ADDRESS}(?:\s*,\s*{_ADDRESS})*",
    "x-real-ip": _ADDRESS,
    "x-forwarded-proto": r"https?",
    "x-forwarded-port": r"\d{1,5}",
    "authorization": r"[A-Za-z]{2,16} [A-Za-z0-9._~+/-]+=*",
    "proxy-authorization": r"[A-Za-z]{2,16} [A-Za-z0-9._~+/-]+=*",
}
STRUCTURAL = {name: re.compile(pattern) for name, pattern in _GRAMMAR.items()}
_URL_HEADERS = frozenset({"referer", "origin"})


# A media type (``application/javascript``): OpenRTB bids, upload forms and APIs list them.
_MEDIA_TYPE = re.compile(
    r"(?:application|audio|font|image|message|model|multipart|text|video)/[A-Za-z0-9][\w.+-]{0,126}"
)
# An unreplaced placeholder of an ad server or a tag manager (``$UID``, ``${GDPR_CONSENT}``,
# ``${UIPID()}``) between plain words: a variable name with nothing to run.
_MACRO = re.compile(r"\$(?:[A-Z][A-Z0-9_]{0,39}|\{[A-Z][A-Z0-9_]{0,39}(?:\(\))?\})")
_MACRO_FILLER = re.compile(r"[A-Za-z0-9_.:-]*")


# a line break is a shell's command separator: "\nid" is not the plain word it strips to
_LINE_BREAK = re.compile(r"[\r\n]")


def plain(text: str) -> bool:
    """A value with no syntax in it: a word, a number, a hex id, a UUID, a file name, a run
    of one character (``...``, ``****``), a media type, or unreplaced ad-server placeholders."""
    if PLAIN.fullmatch(text) or text == text[0] * len(text) or _MEDIA_TYPE.fullmatch(text):
        return True
    if "$" not in text or "IFS" in text:  # ${IFS} is the shell's space: an evasion, never a placeholder
        return False
    filler = _MACRO.sub("", text)
    return filler != text and _MACRO_FILLER.fullmatch(filler) is not None


def plain_path(path: str) -> bool:
    """A path of plain segments only (``/static/js/app.min.js``, ``/tag/2943/``)."""
    return all(not segment or PLAIN.fullmatch(segment) for segment in path.split("/"))


def _token(text: str) -> str | None:
    """The text a base64 token encodes, or None (not a token, or one that encodes binary data)."""
    if not _BASE64.fullmatch(text) or sum(bool(kind.search(text)) for kind in _CHARACTER_KINDS) < 2:
        return None
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return as_text(data)


def _jwt(text: str) -> list[str] | None:
    """A JWT's header and claims as JSON texts (its signature is not read), or None."""
    if not _JWT.fullmatch(text):
        return None
    try:
        return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8") for part in text.split(".")[:2]]
    except (binascii.Error, ValueError):
        return None


def _json(text: str) -> object | None:
    """A JSON object or array written in a value, or None."""
    start = text.lstrip()[:1]
    if start not in ("{", "["):
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict | list) else None


def _leaves(document: object, prefix: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(name, text) of every scalar in a JSON document, names as ModSecurity flattens them."""
    if depth > 64:
        return
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key), depth + 1)
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _leaves(value, f"{prefix}.array_{index}" if prefix else f"array_{index}", depth + 1)
    elif document is not None and not isinstance(document, bool):
        yield prefix, str(document)


def unwrap(source: str, name: str, value: str, depth: int = 0, prefix: str = "") -> Iterator[Arg]:
    """The texts the model scores for one named value (and its name, unless an identifier).
    ``prefix`` names what the value sits in (a JSON key's parent, a URL's argument)."""
    if name and not PLAIN_NAME.fullmatch(name):  # a name is read as a value is: a URL as one, JSON flattened
        yield from _unwrap_value(source if source.endswith("-name") else f"{source}-name", prefix + name, name, depth)
    yield from _unwrap_value(source, prefix + name, value, depth)


def _unwrap_value(source: str, name: str, value: str, depth: int) -> Iterator[Arg]:
    stripped = value.strip()
    if not stripped:
        return
    if depth >= MAX_DEPTH:
        yield Arg(source, name, value)
        return
    for structure in _STRUCTURES:
        inner = structure(source, name, stripped, depth)
        if inner is not None:
            yield from inner
            return
    if not plain(stripped) or _LINE_BREAK.search(value):
        yield Arg(source, name, value)


def _base64_block(text: str) -> bytes | None:
    """What a block of base64 broken into lines of one length (MIME, PEM: an uploaded image
    in a JSON field) encodes, or None."""
    lines = [line.strip() for line in text.splitlines()]
    width = len(lines[0])
    if len(lines) < 2 or width < 40 or any(len(line) != width for line in lines[:-1]) or len(lines[-1]) > width:
        return None
    block = "".join(lines)
    if not _BASE64.fullmatch(block):
        return None
    try:
        return base64.b64decode(block + "=" * (-len(block) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _as_block(source: str, name: str, text: str, depth: int) -> Iterator[Arg] | None:
    # a file sent as base64 lines: its text is read; binary data (an image) is not scored
    if "\n" not in text:
        return None
    data = _base64_block(text)
    if data is None:
        return None
    decoded = as_text(data)
    return iter(()) if decoded is None else _unwrap_value(source, f"{name}:base64", decoded, depth + 1)


def _as_token(source: str, name: str, text: str, depth: int) -> Iterator[Arg] | None:
    # tried before the plain test: a base64 token may be letters and digits only. The token
    # itself is scored too unless plain: what decodes to text may be meant as it is.
    decoded = _token(text)
    if decoded is None:
        return None
    itself = [] if plain(text) else [Arg(source, name, text)]
    return chain(_unwrap_value(source, f"{name}:base64", decoded, depth + 1), itself)


def _as_json(source: str, name: str, text: str, depth: int) -> Iterator[Arg] | None:
    document = _json(text)
    if document is None:
        return None
    leaves = _leaves(document, "")
    parent = f"{name}." if name else ""
    return (arg for key, leaf in leaves for arg in unwrap(source, key, leaf, depth + 1, parent))


def _as_jwt(source: str, name: str, text: str, depth: int) -> Iterator[Arg] | None:
    claims = _jwt(text)
    if claims is None:
        return None
    return (arg for part in claims for arg in _unwrap_value(source, f"{name}:jwt", part, depth + 1))


def _as_url(source: str, name: str, text: str, depth: int) -> Iterator[Arg] | None:
    # an absolute URL, or a path with a query (``/sync?id=1``)
    if _URL.match(text) or (text.startswith("/") and "?" in text and " " not in text):
        return _url(source, name, text, depth)
    return None


def _as_query(source: str, name: str, text: str, depth: int) -> Iterator[Arg] | None:
    if not _QUERYLIKE.fullmatch(text):
        return None
    pairs = parse_urlencoded(text, source)
    return (arg for pair in pairs for arg in unwrap(source, pair.name, pair.value, depth + 1, f"{name}>"))


_STRUCTURES = (_as_block, _as_token, _as_json, _as_jwt, _as_url, _as_query)


def _url(source: str, name: str, url: str, depth: int) -> Iterator[Arg]:
    """A URL: its address without the query (unless a plain web address), then its query's
    arguments. A path without a host (``/etc/passwd?x=1``) is always scored."""
    address, _, query = url.partition("#")[0].partition("?")
    scheme_host = _URL.match(address)
    if not scheme_host or not _plain_path(address[scheme_host.end() :]) or not _plain_host(scheme_host.group()):
        yield Arg(source, name, address)
    for arg in parse_urlencoded(query, source):
        yield from unwrap(source, arg.name, arg.value, depth + 1, f"{name}>" if name else "")


_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*")
# Only web schemes: an address with another (file:, php:, phar:, gopher:, ...) is scored
_PLAIN_HOST = re.compile(r"(?:(?:https?|wss?):)?//[A-Za-z0-9.-]*(?::\d{1,5})?", re.IGNORECASE)


def _plain_path(path: str) -> bool:
    """A path of ordinary segments: no climb, no quotes, markup or spaces."""
    return _PLAIN_PATH.fullmatch(path) is not None and ".." not in path and "%" not in path and "'" not in path


def _plain_host(prefix: str) -> bool:
    return _PLAIN_HOST.fullmatch(prefix) is not None


def header_inputs(headers: dict[str, str], names: Iterable[str] | None = None) -> Iterator[Arg]:
    """The texts the model scores of the request headers (``names``: only these; None: all).
    The Cookie header is left to the cookie arguments."""
    for name, value in headers.items():
        if names is not None and name not in names:
            continue
        if name == "cookie" or not value.strip():
            continue
        grammar = STRUCTURAL.get(name)
        if grammar is not None and grammar.fullmatch(value):
            continue
        if name == "user-agent" and plain_agent(value):
            continue
        if name in _URL_HEADERS and _URL.match(value.strip()):
            yield from _url("header", name, value.strip(), 0)
            continue
        yield from _unwrap_value("header", name, value, 0)


def model_inputs(request: Request, args: list[Arg], limits: Limits, headers: Iterable[str] | None = None) -> list[Arg]:
    """Every text the model scores for ``request`` (``args``: its arguments less any
    allowlisted), at most ``limits.max_args`` of them, each cut to ``max_value_chars``."""
    out: list[Arg] = []
    if not plain_path(request.path):  # the whole path (a climb spans segments), then each segment with syntax
        out.append(Arg("path", "", request.path))
        segments = [segment for segment in request.path.split("/") if segment and not plain(segment)]
        if len(segments) > 1 or (segments and segments[0] != request.path.strip("/")):
            out += [Arg("path", f"segment{i}", segment) for i, segment in enumerate(segments)]
    for arg in args:
        out.extend(unwrap(arg.source, arg.name, arg.value))
    out.extend(header_inputs(request.headers, headers))
    if len(out) > limits.max_args:
        out = out[: limits.max_args]
        if "inputs_truncated" not in request.anomalies:
            request.anomalies.append("inputs_truncated")
    cap = limits.max_value_chars
    return [a if len(a.value) <= cap else Arg(a.source, a.name, a.value[:cap]) for a in out]


def generic_name(name: str) -> str:
    """An input's name with its JSON array positions as ``array_*`` (``items.array_3.text`` ->
    ``items.array_*.text``): the same field of every element, for allowlists and site tuning."""
    return _ARRAY_INDEX.sub("array_*", name)
