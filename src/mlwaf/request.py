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
    # Learning for site tuning: the CRS rules that fired (rule id, variable) and the
    # request's CRS anomaly score, as the bridge read them (``mlwaf.tuning``).
    crs_hits: tuple[tuple[str, str], ...] = ()
    crs_score: int = 0


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


# words, numbers, hex ids, UUIDs, file names: values without syntax (mlwaf.inputs does not score them)
PLAIN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_$@:\[\]-]+(?:\.[A-Za-z0-9_$@:\[\]-]+)*")  # identifiers, a.b[0], item@id


def _plain_arg(arg: Arg) -> bool:
    """An argument whose value and name carry no syntax."""
    value_plain = not arg.value.strip() or PLAIN.fullmatch(arg.value) is not None
    return value_plain and (not arg.name or PLAIN_NAME.fullmatch(arg.name) is not None)


def cap_args(args: list[Arg], limits: Limits, anomalies: list[str]) -> list[Arg]:
    """Apply the argument-count and value-length limits, recording what was cut. Past the
    count, arguments whose name or value has syntax are kept before plain ones (in their
    order), so that an attack cannot hide behind a thousand plain fillers."""
    if len(args) > limits.max_args:
        plain = [_plain_arg(a) for a in args]
        ranked = sorted(range(len(args)), key=lambda i: plain[i])[: limits.max_args]
        args = [args[i] for i in sorted(ranked)]
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


def _header(headers: dict[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


# Bodies that are binary by their type: scored only when they turn out to be text after all.
_BINARY_TYPES = re.compile(
    r"(?:image|audio|video|font)/.*|application/(?:octet-stream|x-protobuf|protobuf|vnd\.google\.protobuf"
    r"|grpc(?:-web)?(?:\+proto)?|zip|gzip|x-gzip|x-tar|pdf|wasm|msgpack|x-msgpack|cbor|x-thrift|vnd\.apache\.thrift.*)"
)
_XML_ATTRIBUTE = re.compile(r"""([^\s=<>/"']+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# a start tag: its name, then its inside, where quoted values may hold a ">"
_XML_TAG = re.compile(r"""<([^\s/<>!?"']*)((?:[^>"']|"[^"]*"|'[^']*')*)>""")
_XML_NAME = re.compile(r"[\w:.-]+")


def _xml_end(text: str, start: int, closer: str) -> int:
    """Where the markup opened at ``start`` ends (just past ``closer``; the text's end if never)."""
    end = text.find(closer, start)
    return len(text) if end < 0 else end + len(closer)


def parse_xml(text: str) -> list[Arg]:
    """XML as the model reads it: every attribute value (named element@attribute) and every
    text node (named by the element it sits in). A linear scan, not an XML parser, so that
    malformed or hostile documents (entity bombs, external entities) cost one pass and are
    never expanded; declarations (DOCTYPE, ENTITY) and processing instructions are kept whole."""
    out: list[Arg] = []
    element, position = "", 0
    while position < len(text):
        start = text.find("<", position)
        start = len(text) if start < 0 else start
        between = text[position:start].strip()
        if between:
            out.append(Arg("xml", element, between))
        if start == len(text):
            break
        if text.startswith("<!--", start):
            position = _xml_end(text, start, "-->")
        elif text.startswith("<![CDATA[", start):
            position = _xml_end(text, start, "]]>")
            out.append(Arg("xml", element, text[start + 9 : position].removesuffix("]]>")))
        elif text.startswith(("<!", "<?"), start):
            bracket, close = text.find("[", start), text.find(">", start)
            position = _xml_end(text, start, "]>" if 0 <= bracket < close else ">")
            if not text.startswith("<?xml ", start):
                out.append(Arg("xml", "", text[start:position]))
        elif text.startswith("</", start):
            position = _xml_end(text, start, ">")
        else:
            tag = _XML_TAG.match(text, start)
            if tag is None:  # an unclosed quote or tag: the rest is read as text
                out.append(Arg("xml", element, text[start:]))
                break
            element, position = tag.group(1) or element, tag.end()
            inside = _XML_ATTRIBUTE.sub("", tag.group(2)).strip(" \t\r\n/")
            if inside or not _XML_NAME.fullmatch(element):  # what is neither a name nor an attribute
                out.append(Arg("xml", element, text[start:position]))
            for name, double, single in _XML_ATTRIBUTE.findall(tag.group(2)):
                out.append(Arg("xml", f"{element}@{name}", double or single))
    return out


def as_text(data: bytes) -> str | None:
    """Bytes as text, or None when they are binary (not UTF-8, or control bytes in them)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if any(c < " " and c not in "\t\r\n" for c in text) else text


def sniff_body(text: str, limits: Limits, anomalies: list[str]) -> list[Arg]:
    """A text body of no declared structure, read as what it looks like: JSON, XML,
    a form, or else one value."""
    start = text.lstrip()[:1]
    if start in ("{", "["):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict | list):
            return _flatten_json(document, limits, anomalies)
    if start == "<":
        return parse_xml(text)
    if _FORM.fullmatch(text.strip()):
        return parse_urlencoded(text.strip(), "body")
    return [Arg("body", "", text)]


_FORM = re.compile(r"[\w.\[\]%-]+=[^&\s]*(?:&[\w.\[\]%-]+=[^&\s]*)*")


def decode_body(  # noqa: PLR0911 - one return per kind of body reads best
    body: bytes, content_type: str, limits: Limits, anomalies: list[str], content_encoding: str = ""
) -> list[Arg]:
    """Arguments of a request body, chosen by its content type as ModSecurity would; text
    of other types is sniffed (``sniff_body``), binary content is not read as text."""
    if not body:
        return []
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return parse_urlencoded(body, "body")
    if kind == "multipart/form-data":
        return parse_multipart(body, content_type, anomalies)
    if kind == "application/json" or kind.endswith("+json"):
        return parse_json_body(body, limits, anomalies)
    if kind in ("application/xml", "text/xml") or kind.endswith("+xml"):
        return parse_xml(body.decode("utf-8", "replace"))
    text = as_text(body)
    if text is None:
        anomalies.append("body_binary")
        return []
    if content_encoding.strip().lower() not in ("", "identity") or _BINARY_TYPES.fullmatch(kind):
        anomalies.append("body_binary_type_as_text")
    return sniff_body(text, limits, anomalies)


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
    args = [
        *parse_urlencoded(query, "query"),
        *decode_body(body, _header(headers, "content-type"), limits, anomalies, _header(headers, "content-encoding")),
    ]
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
