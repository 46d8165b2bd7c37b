"""The analyzer's version-1 socket protocol."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwaf.protocol import MAX_MESSAGE_BYTES, ProtocolError, Reason, Reply, error_reply, parse_request, request_id
from mlwaf.request import Arg, Limits


def line(message: object) -> bytes:
    return json.dumps(message).encode() + b"\n"


def test_full_request() -> None:
    req = parse_request(
        line(
            {
                "v": 1,
                "id": "aBc123",
                "method": "post",
                "path": "/login.php",
                "query": "next=%2F",
                "args": [["query", "next", "/"], ["body", "username", "admin' --"]],
                "headers": {"User-Agent": "curl/8", "Content-Type": "application/x-www-form-urlencoded"},
                "content_length": 30,
                "header_count": 7,
                "protocol": "HTTP/2.0",
                "client_ip": "203.0.113.7",
                "ts": 1700000000.25,
            }
        )
    )
    assert req.method == "POST"
    assert req.args[1] == Arg("body", "username", "admin' --")
    assert req.headers["user-agent"] == "curl/8"
    assert (req.content_length, req.header_count, req.protocol) == (30, 7, "HTTP/2.0")
    assert req.client_ip == "203.0.113.7"
    assert req.ts == 1700000000.25


def test_minimal_request_and_unknown_fields() -> None:
    req = parse_request(line({"v": 1, "future_field": [1, 2]}))
    assert (req.method, req.path, req.args, req.header_count) == ("GET", "/", [], 0)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (line({"v": 2}), "unsupported protocol version 2"),
        (line({"method": "GET"}), "unsupported protocol version None"),
        (line({"v": 1, "args": "a=b"}), "args must be a list"),
        (line({"v": 1, "args": [["query", "a"]]}), "[source, name, value]"),
        (line({"v": 1, "args": [["query", "a", 5]]}), "[source, name, value]"),
        (line({"v": 1, "headers": ["a"]}), "headers must be an object"),
        (line({"v": 1, "ts": "now"}), "ts must be a number"),
        (b'{"v": 1, "content_length": Infinity}', "content_length must be a number between"),
        (b'{"v": 1, "ts": 1' + b"0" * 400 + b"}", "ts must be a number between"),
        (line({"v": 1, "crs_score": [5]}), "crs_score must be a number"),
        (line({"v": 1, "path": 7}), "path must be a string"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[" * 100000, "not JSON"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_request(raw)


def test_crs_hits_for_site_tuning() -> None:
    raw = " 941100@ARGS:q junk 12@ @x 942100@ARGS:id 920170:chain@TX:0 9:chainx@ARGS:a :chain@ARGS:b"
    request = parse_request(line({"v": 1, "crs": raw, "crs_score": 10}))
    assert request.crs_hits == (("941100", "ARGS:q"), ("942100", "ARGS:id"), ("920170:chain", "TX:0"))
    assert request.crs_score == 10
    assert parse_request(line({"v": 1})).crs_hits == ()


def test_oversize_message() -> None:
    with pytest.raises(ProtocolError, match="larger than"):
        parse_request(b" " * (MAX_MESSAGE_BYTES + 1))


def test_limits_apply_to_bridge_args() -> None:
    args = [["query", f"p{i}", "v" * 50] for i in range(20)]
    req = parse_request(line({"v": 1, "args": args}), Limits(max_args=5, max_value_chars=10))
    assert len(req.args) == 5
    assert req.args[0].value == "v" * 10
    assert req.anomalies == ["args_truncated", "value_truncated"]


def test_a_cut_the_bridge_made_is_an_anomaly() -> None:
    assert parse_request(line({"v": 1, "cut": True})).anomalies == ["bridge_cut"]
    assert parse_request(line({"v": 1, "cut": False})).anomalies == []
    assert parse_request(line({"v": 1, "cut": "yes"})).anomalies == [], "only a JSON true"


def test_a_body_the_bridge_forwards_is_read_as_offline() -> None:
    headers = {"content-type": "text/plain;charset=UTF-8"}
    args = [["query", "v", "1"]]
    req = parse_request(line({"v": 1, "args": args, "headers": headers, "body": '{"a": {"b": ";id"}}'}))
    assert req.args == [Arg("query", "v", "1"), Arg("json", "a.b", ";id")]
    xml = {"content-type": "application/xml"}
    req = parse_request(line({"v": 1, "headers": xml, "body": "<a x='1 OR 1=1'/>"}))
    assert req.args == [Arg("xml", "a@x", "1 OR 1=1")]
    req = parse_request(line({"v": 1, "headers": headers, "body": "x" * 40}), Limits(max_body_bytes=16))
    assert req.args == [Arg("body", "", "x" * 16)]
    assert "body_truncated" in req.anomalies


def test_reply_encoding_is_one_compact_line() -> None:
    reply = Reply(
        verdict="block",
        id="aBc123",
        scores={"attack": 0.98765, "flood": 0.0},
        reasons=[Reason("attack", "sqli", 0.98765, "body", "username")],
        ms=0.1234,
    )
    raw = reply.encode()
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 1
    decoded = json.loads(raw)
    assert decoded == {
        "v": 1,
        "id": "aBc123",
        "verdict": "block",
        "scores": {"attack": 0.9877, "flood": 0.0},
        "reasons": [{"model": "attack", "family": "sqli", "source": "body", "name": "username", "score": 0.9877}],
        "ms": 0.123,
    }


def test_error_reply_lets_traffic_pass() -> None:
    decoded = json.loads(error_reply("not JSON", "x1").encode())
    assert decoded["verdict"] == "allow"
    assert decoded["error"] == "not JSON"
    assert decoded["id"] == "x1"


def test_unknown_verdict_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown verdict"):
        Reply(verdict="deny").encode()


def test_request_id_of_broken_messages() -> None:
    assert request_id(line({"v": 9, "id": "abc"})) == "abc"
    assert request_id(b"garbage") == ""
    assert request_id(line({"id": 5})) == ""


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=2000)
    | st.builds(
        line,
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
            ),
            max_leaves=30,
        ),
    )
)
def test_parser_never_crashes(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_request(raw)
    request_id(raw)
