"""The analyzer's view of one HTTP request, and how it is decoded from the wire.

The same decoding serves the daemon and `mlwaf score`, so that offline and live
verdicts agree: query strings and form bodies are URL-decoded the way
ModSecurity does it (``+`` is a space, invalid %-escapes stay as they are),
JSON bodies are flattened into ``a.b`` / ``list.array_0`` names like
ModSecurity 2.9's JSON body processor, multipart fields become arguments, and
cookies become arguments of their own source. Limits cap what a hostile
request can make the analyzer do; hitting one is recorded, never an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

_HEX = re.compile(rb"%([0-9A-Fa-f]{2})")
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}$")


@dataclass(frozen=True)
class Limits:
    """Caps on the work one request may cause."""

    max_body_bytes: int = 131072
    max_args: int = 1000
    max_json_depth: int = 64
    max_value_chars: int = 8192


@dataclass(frozen=True)
class Arg:
    """One decoded input: where it came from, its name and its value."""

    source: str  # "query", "body", "json", "multipart", "cookie", "path", "header"
    name: str
    value: str


@dataclass
class Request:
    method: str
    path: str
    query: str = ""
    args: list[Arg] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    content_length: int = 0
    header_count: int = 0
    protocol: str = "HTTP/1.1"
    client_ip: str = ""
    ts: float | None = None
    # Limits that were hit while decoding ("body_truncated", "args_truncated", ...).
    anomalies: list[str] = field(default_factory=list)
    id: str = ""
    # A status report (protocol "type": "status"): the answer Apache gave to request ``id``
    # of ``client_ip``, for the behavioural layer; nothing to score.
    reported_status: int = 0


class RequestError(ValueError):
    """The input cannot be read as a request at all."""


def url_decode(data: str | bytes, *, plus_is_space: bool = True) -> str:
    """Percent-decode like ModSecurity's urlDecodeUni: bad escapes are kept verbatim."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    if plus_is_space:
        raw = raw.replace(b"+", b" ")
    raw = _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("utf-8", "replace")


def parse_urlencoded(text: str | bytes, source: str) -> list[Arg]:
    """Arguments of a query string or an application/x-www-form-urlencoded body."""
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    args = []
    for pair in raw.split(b"&"):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        args.append(Arg(source, url_decode(name), url_decode(value)))
    return args


def _flatten_json(document: object, limits: Limits, anomalies: list[str]) -> list[Arg]:
    out: list[Arg] = []
    stack: list[tuple[str, object, int]] = [("", document, 0)]
    while stack:
        name, value, depth = stack.pop()
        if depth > limits.max_json_depth:
            if "json_too_deep" not in anomalies:
                anomalies.append("json_too_deep")
            continue
        prefix = f"{name}." if name else ""
        if isinstance(value, dict):
            children = [(f"{prefix}{key}", item) for key, item in value.items()]
        elif isinstance(value, list):
            children = [(f"{prefix}array_{index}", item) for index, item in enumerate(value)]
        else:
            text = "" if value is None else ("true" if value is True else "false" if value is False else str(value))
            out.append(Arg("json", name, text))
            continue
        stack.extend((child, item, depth + 1) for child, item in reversed(children))
    return out


def parse_json_body(body: bytes, limits: Limits, anomalies: list[str]) -> list[Arg]:
    try:
        document = json.loads(body.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        anomalies.append("json_invalid")
        return [Arg("body", "", body.decode("utf-8", "replace"))]
    return _flatten_json(document, limits, anomalies)


def parse_multipart(body: bytes, content_type: str, anomalies: list[str]) -> list[Arg]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        anomalies.append("multipart_invalid")
        return [Arg("body", "", body.decode("utf-8", "replace"))]
    out = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        filename = part.get_filename()
        if filename is not None:
            out.append(Arg("multipart", f"FILES_NAMES:{name}", str(filename)))
            continue
        payload = part.get_payload(decode=True) or b""
        out.append(Arg("multipart", str(name), payload.decode("utf-8", "replace")))
    return out


def parse_cookies(header: str) -> list[Arg]:
    out = []
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if name or sep:
            out.append(Arg("cookie", name, value))
    return out


def cap_args(args: list[Arg], limits: Limits, anomalies: list[str]) -> list[Arg]:
    """Apply the argument-count and value-length limits, recording what was cut."""
    if len(args) > limits.max_args:
        args = args[: limits.max_args]
        anomalies.append("args_truncated")
    if any(len(a.value) > limits.max_value_chars for a in args):
        args = [Arg(a.source, a.name, a.value[: limits.max_value_chars]) for a in args]
        anomalies.append("value_truncated")
    return args


_PRODUCT = r"[A-Za-z0-9][\w.+-]*(?:/[\w.+-]+)?"
_COMMENT = r"\([\w .,;:+/@-]*\)"
_AGENT = re.compile(rf"\s*(?:{_PRODUCT}|{_COMMENT})(?:\s*(?:{_COMMENT})|\s+{_PRODUCT})*\s*", re.ASCII)


def plain_agent(value: str) -> bool:
    """A User-Agent made only of products ("Firefox/128.0") and comments ("(X11; Linux
    x86_64)"), as browsers, crawlers and tools send them (RFC 9110, section 10.1.5, with
    the characters narrowed to what they use), with a version or a comment and no "..".
    Without quotes, angle brackets, ``$``, ``=``, backticks or a ``..`` it cannot break
    out of an SQL string, markup, a shell command or a path; the model is not asked."""
    return ("/" in value or "(" in value) and ".." not in value and _AGENT.fullmatch(value) is not None


def header_args(headers: dict[str, str], names: tuple[str, ...], limits: Limits) -> list[Arg]:
    """What the attack models read in the request headers ``names``: a Referer's query
    arguments (the rest of it names the referring page), a User-Agent unless it is a plain
    one (``plain_agent``), and any other header whole."""
    out: list[Arg] = []
    for name in names:
        value = headers.get(name, "")
        if name == "referer":
            query = value.partition("#")[0].partition("?")[2]
            out += [Arg("header", f"referer:{a.name}", a.value) for a in parse_urlencoded(query, "header")]
        elif value and not (name == "user-agent" and plain_agent(value)):
            out.append(Arg("header", name, value))
    return [Arg(a.source, a.name, a.value[: limits.max_value_chars]) for a in out[: limits.max_args]]


def _header(headers: dict[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


def decode_body(body: bytes, content_type: str, limits: Limits, anomalies: list[str]) -> list[Arg]:
    """Arguments of a request body, chosen by its content type as ModSecurity would."""
    if not body:
        return []
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return parse_urlencoded(body, "body")
    if kind == "application/json" or kind.endswith("+json"):
        return parse_json_body(body, limits, anomalies)
    if kind == "multipart/form-data":
        return parse_multipart(body, content_type, anomalies)
    return [Arg("body", "", body.decode("utf-8", "replace"))]


def from_wire(record: dict, limits: Limits | None = None) -> Request:
    """A request from the `mlwaf score` input contract (path and query still URL-encoded)."""
    limits = limits or Limits()
    if not isinstance(record, dict):
        raise RequestError("a request must be a JSON object")
    method = record.get("method", "GET")
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise RequestError(f"invalid method {method!r}")
    target = record.get("path", "/")
    if not isinstance(target, str) or not target:
        raise RequestError("path must be a non-empty string")
    headers = record.get("headers")
    headers = {} if headers is None else headers
    if not isinstance(headers, dict):
        raise RequestError("headers must be an object")
    headers = {str(k).lower(): str(v) for k, v in headers.items()}  # names are case-insensitive
    body_field = record.get("body")
    body_field = "" if body_field is None else body_field
    if not isinstance(body_field, str):
        raise RequestError("body must be a string")
    ts = record.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        raise RequestError("ts must be a number of seconds since the epoch")

    anomalies: list[str] = []
    body = full_body = body_field.encode("utf-8", "surrogateescape")
    if len(body) > limits.max_body_bytes:
        body = body[: limits.max_body_bytes]
        anomalies.append("body_truncated")
    path, _, query = target.partition("?")
    args = [*parse_urlencoded(query, "query"), *decode_body(body, _header(headers, "content-type"), limits, anomalies)]
    args += parse_cookies(_header(headers, "cookie"))
    args = cap_args(args, limits, anomalies)
    request_id = record.get("id", "")
    return Request(
        id=request_id if isinstance(request_id, str) else json.dumps(request_id),
        method=method.upper(),
        path=url_decode(path, plus_is_space=False),
        query=query,
        args=args,
        headers=headers,
        content_length=len(full_body),
        header_count=len(headers),
        client_ip=str(record.get("client_ip") or ""),
        ts=float(ts) if ts is not None else None,
        anomalies=anomalies,
    )
