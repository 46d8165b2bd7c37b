"""Version 1 of the analyzer's socket protocol.

One request, one reply, one connection: the client (the ModSecurity Lua
bridge, `ml_waf_analyzer.sh`, or anything else) writes one JSON object on one
line, terminated by a newline, and reads one JSON line back.

Request (fields other than ``v`` are optional; unknown fields are ignored)::

    {"v": 1, "id": "<ModSecurity UNIQUE_ID>", "method": "POST",
     "path": "/login.php",            # decoded path, no query string
     "query": "a=b",                  # raw query string
     "args": [["query", "q", "..."], ["body", "user", "..."]],  # as ModSecurity decoded them
     "headers": {"user-agent": "...", "content-type": "..."},  # the request headers
     "body": "...",                   # a body no ModSecurity processor parsed (text/plain, ...)
     "content_length": 48, "header_count": 9, "protocol": "HTTP/1.1",
     "client_ip": "203.0.113.7", "ts": 1700000000.25,
     "cut": false,                    # true: a limit of the bridge kept part of the request out
     "crs": "941100@ARGS:comment 920350@REQUEST_HEADERS:Host",  # learning for site tuning only:
     "crs_score": 10}                 # the CRS rules that fired, on which variable, and CRS's score
                                      # (a chained rule as "920170:chain@VARIABLE")

Reply::

    {"v": 1, "id": "...", "verdict": "allow" | "block" | "log",
     "scores": {"<model>": 0.013, ...},
     "reasons": [{"model": "attack", "family": "sqli", "source": "body", "name": "user", "score": 0.98}],
                                      # the application profile's reasons: model "profile", family the
                                      # deviation kind (param, charset, ...) and a "detail" sentence
     "ms": 0.21,
     "summary": "attack=0.981 sqli in body:user (0.981)",  # quote-free, for the audit log
     "note": "path allowlisted",                           # only when no model was asked
     "status": 429, "retry_after": 60,                     # only for a block with another answer than 403
     "anomalies": ["body_truncated"]}                       # only when a decoding limit was hit
                                                           # ("bridge_cut" when the message said "cut")

After the response, the bridge may report its status for the behavioural
layer (only 4xx and 5xx are worth a round trip)::

    {"v": 1, "type": "status", "id": "<the request's id>", "client_ip": "...",
     "headers": {"user-agent": "..."}, "status": 404}

and gets ``{"v": 1, "id": "...", "verdict": "allow"}`` back.

A message the analyzer cannot read gets ``{"v": 1, "verdict": "allow",
"error": "<why>"}``: traffic is never blocked because of a broken message,
and the error is visible to the caller.
"""

from __future__ import annotations

import json
import math
import socket
from dataclasses import dataclass, field

from mlwaf.request import Arg, Limits, Request, cap_args, decode_body

VERSION = 1
VERDICTS = ("allow", "block", "log")
MAX_MESSAGE_BYTES = 1 << 20
# Requests whose id starts so are the appliance checking itself (health, performance check):
# answered like any other, but neither logged nor counted.
CANARY_PREFIX = "mlwaf-canary-"
MAX_NUMBER = 1e15  # sizes, counts and times in a message are below this
MAX_CRS_HITS = 256  # CRS rule matches read from one message (learning for site tuning)
CHAINED = ":chain"  # marks a chained CRS rule's match: its variables cannot be excluded one by one


class ProtocolError(ValueError):
    """A message that is not a valid version-1 request."""


@dataclass
class Reason:
    model: str
    family: str
    score: float
    source: str = ""
    name: str = ""
    detail: str = ""  # what the application profile found ("characters never seen here: <")
    value: str | None = field(default=None, repr=False)  # the input scored (for the decision log only)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "model": self.model,
            "family": self.family,
            "source": self.source,
            "name": self.name,
            "score": round(self.score, 4),
        }
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Reply:
    verdict: str
    id: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)
    ms: float = 0.0
    error: str = ""
    note: str = ""  # why no model was asked (allowlists)
    anomalies: list[str] = field(default_factory=list)  # decoding limits that were hit
    summary: str = ""  # one quote-free line for the audit log
    status: int = 0  # for a block: the HTTP status to answer (429 for floods); 0: the default, 403
    retry_after: int = 0  # seconds, with status 429

    def as_dict(self) -> dict[str, object]:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}")
        message: dict[str, object] = {
            "v": VERSION,
            "id": self.id,
            "verdict": self.verdict,
            "scores": {name: round(score, 4) for name, score in self.scores.items()},
            "reasons": [reason.as_dict() for reason in self.reasons],
            "ms": round(self.ms, 3),
        }
        for key in ("error", "note", "anomalies", "summary", "status", "retry_after"):
            value = getattr(self, key)
            if value:
                message[key] = value
        return message

    def encode(self) -> bytes:
        return encode_line(self.as_dict())


def exchange(socket_path: str, message: dict[str, object], timeout: float) -> bytes:
    """One request on the analyzer's socket (one connection, as the bridge does); the raw reply.
    Raises OSError when the analyzer cannot be reached or does not answer in time."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(socket_path)
        conn.sendall(encode_line(message))
        conn.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: conn.recv(65536), b""))


def encode_line(message: dict[str, object]) -> bytes:
    """One compact JSON line; lone surrogates from undecodable input are replaced, never raised."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace") + b"\n"


def error_reply(reason: str, request_id: str = "") -> Reply:
    """The safe answer to a message the analyzer cannot use: let the request pass, say why."""
    return Reply(verdict="allow", id=request_id, error=reason)


def _string(message: dict, key: str, default: str = "") -> str:
    value = message.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string")
    return value


def _number(message: dict, key: str) -> float | None:
    value = message.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{key} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer past a float's range
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_NUMBER:
        raise ProtocolError(f"{key} must be a number between -{MAX_NUMBER:.0e} and {MAX_NUMBER:.0e}")
    return number


def _args(raw: object, limits: Limits, anomalies: list[str]) -> list[Arg]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ProtocolError("args must be a list of [source, name, value]")
    raw = raw[: limits.max_args + 1]  # one more than allowed, so that cap_args records the cut
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)):
            raise ProtocolError("each arg must be [source, name, value], all strings")
    return cap_args([Arg(*item) for item in raw], limits, anomalies)


def crs_rule(rule: str) -> tuple[int, bool] | None:
    """A CRS rule as the bridge notes it (``"941100"``, ``"920170:chain"``): its id and whether it
    is a chained rule; None when it is neither."""
    number = rule.removesuffix(CHAINED)
    return (int(number), number != rule) if number.isdigit() else None


def _crs_hits(raw: str) -> tuple[tuple[str, str], ...]:
    """``"941100@ARGS:q 920170:chain@REQUEST_HEADERS:Content-Length"`` as (rule, variable) pairs;
    a chained rule's id carries ``:chain`` (the variable is its last condition's); malformed
    items are dropped."""
    hits = []
    for item in raw.split()[:MAX_CRS_HITS]:
        rule, sep, target = item.partition("@")
        if sep and crs_rule(rule) and target:
            hits.append((rule, target[:256]))
    return tuple(hits)


def parse_request(line: bytes, limits: Limits | None = None) -> Request:
    """A request from one protocol line; raises ProtocolError with a readable reason."""
    limits = limits or Limits()
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(line.decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    if message.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('v')!r} (this analyzer speaks {VERSION})")
    headers = message.get("headers") or {}
    if not isinstance(headers, dict):
        raise ProtocolError("headers must be an object")
    anomalies: list[str] = []
    reported = 0
    if message.get("type", "request") == "status":
        status = _number(message, "status")
        if status is None or not 100 <= status <= 999:
            raise ProtocolError("a status report needs a status between 100 and 999")
        reported = int(status)
    elif message.get("type", "request") != "request":
        raise ProtocolError(f"unknown message type {message.get('type')!r}")
    content_length = _number(message, "content_length")
    header_count = _number(message, "header_count")
    headers = {str(k).lower(): str(v) for k, v in headers.items()}
    if message.get("cut") is True:  # a limit of the bridge kept part of the request from the message
        anomalies.append("bridge_cut")
    args = _args(message.get("args"), limits, anomalies)
    body = _string(message, "body").encode("utf-8", "surrogateescape")
    if body:  # a body no ModSecurity processor parsed: decoded here, as `mlwaf score` does
        if len(body) > limits.max_body_bytes:
            body = body[: limits.max_body_bytes]
            anomalies.append("body_truncated")
        content = (headers.get("content-type", ""), headers.get("content-encoding", ""))
        parsed = decode_body(body, content[0], limits, anomalies, content[1])
        args = cap_args([*args, *parsed], limits, anomalies)
    return Request(
        id=_string(message, "id"),
        method=_string(message, "method", "GET").upper(),
        path=_string(message, "path", "/"),
        query=_string(message, "query"),
        args=args,
        headers=headers,
        content_length=int(content_length or 0),
        header_count=int(header_count if header_count is not None else len(headers)),
        protocol=_string(message, "protocol", "HTTP/1.1"),
        client_ip=_string(message, "client_ip"),
        ts=_number(message, "ts"),
        anomalies=anomalies,
        reported_status=reported,
        crs_hits=_crs_hits(_string(message, "crs")),
        crs_score=int(_number(message, "crs_score") or 0),
    )


def request_id(line: bytes) -> str:
    """Best-effort id of a message that failed to parse, for the error reply."""
    try:
        value = json.loads(line.decode("utf-8", "replace")).get("id", "")
    except (ValueError, AttributeError, RecursionError):
        return ""
    return value if isinstance(value, str) else ""
