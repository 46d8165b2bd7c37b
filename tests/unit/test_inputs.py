"""What the attack model reads of a request: every part, unwrapped (mlwaf.inputs)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwaf.inputs import header_inputs, model_inputs, unwrap
from mlwaf.request import Arg, Limits, Request, from_wire


def read(record: dict) -> list[Arg]:
    request = from_wire(record)
    return model_inputs(request, request.args, Limits())


def texts(args: list[Arg]) -> set[str]:
    return {a.value for a in args}


def test_empty_and_plain_values_are_not_scored() -> None:
    args = read({"path": "/search/all/?q=&page=2&sort=price-asc&id=5f0c2a9e-8b1d-4c57-9a7e-2d6f1e0b3c44&f=a.png&s=..."})
    assert args == []
    assert read({"path": "/a/../../etc/passwd"}) == [Arg("path", "", "/a/../../etc/passwd")]
    segment = [Arg("path", "", "/tag/<script>"), Arg("path", "segment0", "<script>")]
    assert read({"path": "/tag/%3Cscript%3E"}) == segment, "the whole path, and the segment with syntax alone"
    assert read({"path": "/%3Cb%3E"}) == [Arg("path", "", "/<b>")], "a path of one segment is read once"


@pytest.mark.parametrize("value", ["\nid", "id\n", "\r\nwhoami", "\n\nuname"])
def test_a_plain_word_behind_a_line_break_is_scored(value: str) -> None:
    # the shell runs a word after a newline as a command: ?q=%0Aid once passed as the plain "id"
    assert list(unwrap("query", "q", value)) == [Arg("query", "q", value)]
    assert list(unwrap("query", "q", f"  {value.strip()} ")) == [], "spaces around a word are still plain"


@pytest.mark.parametrize(
    "value",
    ["application/javascript", "image/svg+xml", "$UID", "uid:$UID", "${UIPID()}", "${GDPR_CONSENT}", "x-${AD_ID}"],
)
def test_media_types_and_ad_placeholders_are_plain(value: str) -> None:
    assert list(unwrap("query", "v", value)) == []


@pytest.mark.parametrize(
    "value",
    ["${jndi:ldap://x.example/a}", "$(id)", ";$UID", "${IFS}cat", "$HOME/.ssh/id_rsa", "1&$UID", "text/html;id"],
)
def test_shell_syntax_around_a_placeholder_is_scored(value: str) -> None:
    assert list(unwrap("query", "v", value)) == [Arg("query", "v", value)]


def test_a_base64_file_is_read_as_its_text_or_not_at_all() -> None:
    image = base64.encodebytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2).decode()
    assert list(unwrap("json", "img", image)) == [], "binary data in base64 lines"
    text = base64.encodebytes(b"<script>alert(1)</script> and some more text to fill lines " * 2).decode()
    assert [a.value[:25] for a in unwrap("json", "f", text)] == ["<script>alert(1)</script>"]
    ragged = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n;id"
    assert list(unwrap("json", "f", ragged)) == [Arg("json", "f", ragged)], "not a block: scored as it is"


def test_names_are_scored_unless_identifiers() -> None:
    args = read({"path": "/?%20%20onload%3d%20=x&user[name]=1&a.b_c-d=2"})
    assert args == [Arg("query-name", "  onload= ", "  onload= ")]
    url_name = read({"path": "/?%2Fsync%3Fhttps%3A%2F%2Fads.example%2Fu%3Fid%3D%24(id)%26x%3D1"})
    assert texts(url_name) == {"/sync", "$(id)"}, "a name that is a URL is read as one (a bare path is scored)"
    cookies = read({"path": "/", "headers": {"Cookie": "sid=1; <script>=1"}})
    assert Arg("cookie-name", "<script>", "<script>") in cookies


def test_json_in_a_value_is_flattened() -> None:
    args = read({"path": "/c?DATA=%5B%7B%22T%22%3A%22CI.BF%22%2C%22X%22%3A0%7D%5D&p=%7B%22q%22%3A%22%3Bid%22%7D"})
    assert Arg("query", "p.q", ";id") in args
    assert "CI.BF" not in texts(args)
    assert not any(a.value.startswith("[") for a in args)


def test_a_url_is_read_as_its_address_and_its_arguments() -> None:
    url = "https%3A%2F%2Fshop.example%2Fa%2Fb%3Futm_source%3Dnews%26q%3D%27%20or%201%3D1--"
    args = read({"path": f"/r?next={url}"})
    assert args == [Arg("query", "next>q", "' or 1=1--")]
    climb = read({"path": "/r?next=https%3A%2F%2Fshop.example%2F..%2F..%2Fetc%2Fpasswd"})
    assert Arg("query", "next", "https://shop.example/../../etc/passwd") in climb
    assert list(unwrap("query", "f", "////etc/shadow")) == [Arg("query", "f", "////etc/shadow")], "no host: no URL"
    assert Arg("query", "f", "/etc/passwd") in list(unwrap("query", "f", "/etc/passwd?x=1")), "a bare path is scored"
    for wrapper in ("file:///etc/passwd", "php://filter/convert.base64-encode/resource=index.php", "gopher://x/_a"):
        assert list(unwrap("query", "page", wrapper)) == [Arg("query", "page", wrapper)], "not a web address"


def test_tokens_are_decoded_and_read_as_they_are() -> None:
    hidden = base64.b64encode(b"' or 1=1--").decode().rstrip("=")
    assert list(unwrap("cookie", "t", hidden)) == [Arg("cookie", "t:base64", "' or 1=1--")]
    binary = base64.b64encode(bytes(range(0, 48))).decode()
    assert list(unwrap("cookie", "t", binary)) == [], "letters and digits only: plain"
    slashed = base64.b64encode(bytes(range(200, 248))).decode()
    assert list(unwrap("cookie", "t", slashed)) == [Arg("cookie", "t", slashed)], "binary: read as it is"
    shell = base64.b64encode(b";cat /etc/passwd").decode()
    assert list(unwrap("cookie", "t", shell)) == [
        Arg("cookie", "t:base64", ";cat /etc/passwd"),
        Arg("cookie", "t", shell),
    ]
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "<svg onload=alert(1)>"}).encode()).decode().rstrip("=")
    jwt = f"eyJhbGciOiJIUzI1NiJ9.{claims}.c2lnbmF0dXJl"
    assert list(unwrap("header", "authorization", jwt)) == [
        Arg("header", "authorization:jwt.sub", "<svg onload=alert(1)>")
    ]


def test_a_query_string_inside_a_value_is_split() -> None:
    assert list(unwrap("query", "state", "a=1&b=$(id)")) == [Arg("query", "state>b", "$(id)")]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("host", "shop.example:8443"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.9,zh-CN;q=0.8"),
        ("sec-ch-ua", '"Chromium";v="119", "Not?A_Brand";v="24"'),
        ("sec-ch-ua-platform", '"Android"'),
        ("if-none-match", 'W/"5e1-1a2b"'),
        ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("referer", "https://www.example.org/news/today"),
        ("content-type", "multipart/form-data; boundary=----WebKitFormBoundaryx7"),
    ],
)
def test_headers_that_fit_their_grammar_are_not_scored(name: str, value: str) -> None:
    assert list(header_inputs({name: value})) == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("host", "shop.example'; drop table x--", "shop.example'; drop table x--"),
        ("accept", "<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("sec-ch-ua", '"1;id";v="1"', '"1;id";v="1"'),
        ("x-anything", "<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("referer", "cat /etc/passwd", "cat /etc/passwd"),
        ("referer", "https://s.example/find?q=%27+or+1%3D1", "' or 1=1"),
        ("origin", "https://s.example/<svg>", "https://s.example/<svg>"),
    ],
)
def test_headers_that_do_not_fit_are_scored(name: str, value: str, expected: str) -> None:
    assert expected in texts(list(header_inputs({name: value})))


def test_only_the_chosen_headers_are_read() -> None:
    headers = {"x-a": "<b>", "x-b": "<i>"}
    assert texts(list(header_inputs(headers, ("x-b",)))) == {"<i>"}
    assert texts(list(header_inputs({"cookie": "a=<b>"}))) == set(), "cookies are read as arguments"


def test_bodies_of_other_types_are_sniffed() -> None:
    body = {"method": "POST", "path": "/b", "headers": {"content-type": "text/plain;charset=UTF-8"}}
    assert Arg("json", "a", ";id") in read({**body, "body": '{"a": ";id", "n": 1}'})
    assert Arg("body", "q", "' or 1=1") in read({**body, "body": "q=%27+or+1%3D1&x=1"})
    assert Arg("body", "", "just some <b>text</b>") in read({**body, "body": "just some <b>text</b>"})


def test_xml_text_and_attributes_are_read_without_a_parser() -> None:
    xml = '<?xml version="1.0"?><a probe="1234 OR 1=1"><b>hello world</b><c x=\'<svg>\'/></a>'
    args = read({"method": "POST", "path": "/x", "headers": {"content-type": "application/xml"}, "body": xml})
    assert Arg("xml", "a@probe", "1234 OR 1=1") in args
    assert Arg("xml", "b", "hello world") in args
    assert Arg("xml", "c@x", "<svg>") in args
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><x>&b;</x>'
    args = read({"method": "POST", "path": "/x", "headers": {"content-type": "text/xml"}, "body": bomb})
    assert any("ENTITY" in a.value for a in args), "declarations are scored whole, never expanded"


def test_binary_bodies_are_not_read_as_text() -> None:
    record = {"method": "POST", "path": "/t", "headers": {"content-type": "application/x-protobuf"}}
    request = from_wire({**record, "body": "\x08\x96\x01\x12\x07testing"})
    assert model_inputs(request, request.args, Limits()) == []
    assert "body_binary" in request.anomalies
    # text sent as a binary type is still read, and the mislabel recorded
    request = from_wire({**record, "body": "q=%27+or+1%3D1"})
    assert Arg("body", "q", "' or 1=1") in request.args
    assert "body_binary_type_as_text" in request.anomalies


def test_inputs_are_capped_and_the_cut_recorded() -> None:
    request = Request(method="GET", path="/", args=[Arg("query", f"n{i}", f"a b {i}") for i in range(50)])
    args = model_inputs(request, request.args, Limits(max_args=10, max_value_chars=3))
    assert len(args) == 10
    assert all(len(a.value) <= 3 for a in args)
    assert "inputs_truncated" in request.anomalies


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.text(max_size=40))
def test_unwrapping_never_fails_and_stays_bounded(value: str, name: str) -> None:
    args = list(unwrap("query", name, value))
    assert all(isinstance(a.value, str) for a in args)
    assert len(args) <= 2 + 2 * max(1, value.count(",") + value.count("&") + value.count(":"))
