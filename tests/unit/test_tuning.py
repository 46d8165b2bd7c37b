"""Site tuning: the learning period's recording, the proposal, and poisoning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlwaf.profile import char_classes
from mlwaf.protocol import Reason, Reply
from mlwaf.request import Arg, Request
from mlwaf.tuning.proposal import TuningError, dump, load, unsafe
from mlwaf.tuning.propose import DAY, Options, propose
from mlwaf.tuning.record import RecordError, load_key, network_of, record

KEY = b"k" * 16
BLOCKS = {"attack": 0.9}
RICH = '<p><span style="font-weight:bold">Bold</span> text</p>'
START = 1_764_000_000


def flagged_line(
    client: str,
    when: float,
    *,
    path: str = "/comment.php",
    param: str = "comment",
    value: str = RICH,
    family: str = "xss",
    score: float = 0.99,
    crs: tuple[tuple[str, str], ...] = (("941160", "ARGS:comment"),),
    crs_score: int = 5,
    behaviour: str = "",
) -> dict:
    request = Request(
        method="POST",
        path=path,
        args=[Arg("body", param, value), Arg("body", "name", "Ann")],
        client_ip=client,
        ts=when,
        crs_hits=crs,
        crs_score=crs_score,
    )
    reasons = [Reason("attack", family, score, "body", param, value=value)] if score else []
    if behaviour:
        reasons.append(Reason("behaviour", behaviour, 0.9, "client", client))
    line = record(request, Reply(verdict="log", reasons=reasons), KEY, BLOCKS)
    assert line is not None
    return line


def write(tmp_path: Path, lines: list[dict], name: str = "record.jsonl") -> Path:
    out = tmp_path / name
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def users(count: int, days: int = 3, **kwargs) -> list[dict]:
    """``count`` users in distinct networks, each posting once a day for ``days`` days."""
    return [
        flagged_line(f"198.{i // 250}.{i % 250}.7", START + day * DAY + i, **kwargs)
        for i in range(count)
        for day in range(days)
    ]


def test_a_record_keeps_shapes_and_hashes_never_values() -> None:
    secret_value = "<b>my very own words</b>"
    line = flagged_line("203.0.113.9", START, value=secret_value)
    text = json.dumps(line)
    assert secret_value not in text
    assert "203.0.113" not in text
    assert line["e"] == "/comment.php"
    assert line["cs"] == 5
    assert line["crs"] == [["941160", "ARGS:comment"]]
    assert line["ml"] == [["attack", "xss", "body", "comment", 0.99, 1]]
    assert line["s"]["body:comment"] == line["s"]["ARGS:comment"] == [len(secret_value), char_classes(secret_value)]
    # the same client and its network hash alike; another network does not
    again = flagged_line("203.0.113.200", START)
    other = flagged_line("192.0.2.1", START)
    assert again["n"] == line["n"] != other["n"]
    assert again["c"] != line["c"]


def test_nothing_flagged_is_not_recorded() -> None:
    request = Request(method="GET", path="/", args=[Arg("query", "q", "shoes")], client_ip="192.0.2.1")
    assert record(request, Reply(verdict="allow"), KEY, BLOCKS) is None


def test_networks_group_clients() -> None:
    assert network_of("198.51.100.77") == "198.51.100.0/24"
    assert network_of("2001:db8:1:2::9") == "2001:db8:1::/48"
    assert network_of("not an address") == "not an address"


def test_the_key_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl.key"
    key = load_key(path)
    assert len(key) == 16
    assert load_key(path) == key
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b"short")
    with pytest.raises(RecordError, match="16 bytes"):
        load_key(path)


def test_many_users_on_several_days_make_narrow_entries(tmp_path: Path) -> None:
    tuning = propose([write(tmp_path, users(25))])["mlwaf_tuning"]
    assert tuning["crs_exclusions"] == [
        {
            "rule": 941160,
            "endpoint": "/comment.php",
            "target": "ARGS:comment",
            "evidence": tuning["crs_exclusions"][0]["evidence"],
            "would_let_through": {"requests_from_suspect_clients": 0, "suspect_clients": 0},
        }
    ]
    evidence = tuning["crs_exclusions"][0]["evidence"]
    assert (evidence["requests"], evidence["clients"], evidence["days"]) == (75, 25, 3)
    assert evidence["shapes"] == [f"75 x length 32-63, characters {char_classes(RICH)}"]
    (suppression,) = tuning["model_suppressions"]
    assert {k: suppression[k] for k in ("endpoint", "param", "family", "model")} == {
        "endpoint": "/comment.php",
        "param": "comment",
        "family": "xss",
        "model": "attack",
    }


def test_too_few_clients_or_days_propose_nothing(tmp_path: Path) -> None:
    few = propose([write(tmp_path, users(19))])["mlwaf_tuning"]
    assert few["crs_exclusions"] == few["model_suppressions"] == []
    assert "19 client(s) that count, 20 needed" in few["not_proposed"][0]["not_proposed"]
    one_day = propose([write(tmp_path, users(30, days=1))])["mlwaf_tuning"]
    assert one_day["crs_exclusions"] == one_day["model_suppressions"] == []
    assert propose([write(tmp_path, users(30, days=1))], Options(min_days=1))["mlwaf_tuning"]["crs_exclusions"]


def test_a_chained_rule_is_proposed_whole_on_its_endpoint(tmp_path: Path) -> None:
    # 920170 (a GET with a body) is a chain: its match names its last condition's variable,
    # which ModSecurity cannot exclude from the rule, so the entry removes the rule there.
    chained = (("920170:chain", "REQUEST_HEADERS:Content-Length"), ("920420:chain", "TX:0"), ("941100", "TX:x"))
    line = flagged_line("198.51.100.4", START, score=0.0, crs=chained)
    assert line["crs"] == [["920170:chain", "REQUEST_HEADERS:Content-Length"], ["920420:chain", "TX:0"]]
    lines = [
        flagged_line(f"198.{i}.1.7", START + day * DAY + i, score=0.0, crs=chained) for i in range(25) for day in (0, 1)
    ]
    tuning = propose([write(tmp_path, lines)])["mlwaf_tuning"]
    assert [(e["rule"], e["target"], e.get("whole_rule")) for e in tuning["crs_exclusions"]] == [
        (920170, "REQUEST_HEADERS:Content-Length", True),
        (920420, "TX:0", True),
    ]
    assert all(unsafe(entry) == "" for entry in tuning["crs_exclusions"])
    assert "whole_rule 'yes'" in unsafe({**tuning["crs_exclusions"][0], "whole_rule": "yes"})
    assert "target 'TX:0' is not one variable" in unsafe({**tuning["crs_exclusions"][1], "whole_rule": False})
    assert "is not a variable" in unsafe({**tuning["crs_exclusions"][1], "target": "TX:0\nSecRule"})


def test_a_crs_hit_below_the_refusal_score_is_no_false_positive(tmp_path: Path) -> None:
    tuning = propose([write(tmp_path, users(25, crs_score=3))])["mlwaf_tuning"]
    assert tuning["crs_exclusions"] == []


def test_one_attacker_with_ten_thousand_requests_teaches_nothing(tmp_path: Path) -> None:
    attacker = [
        flagged_line(
            "203.0.113.66", START + i * 60, value=f"<svg onload=alert({i})>", crs=(("941100", "ARGS:comment"),)
        )
        for i in range(10_000)
    ]
    tuning = propose([write(tmp_path, attacker)])["mlwaf_tuning"]
    assert tuning["crs_exclusions"] == tuning["model_suppressions"] == []
    # nor from many addresses of one network, nor alongside real users' own entries
    rotating = [flagged_line(f"203.0.113.{i % 250}", START + i * 60) for i in range(10_000)]
    mixed = propose([write(tmp_path, rotating + users(5))])["mlwaf_tuning"]
    assert mixed["crs_exclusions"] == mixed["model_suppressions"] == []


def test_flagged_clients_and_clients_refused_elsewhere_do_not_count(tmp_path: Path) -> None:
    bots = users(30, behaviour="scanner")
    tuning = propose([write(tmp_path, bots)])["mlwaf_tuning"]
    assert tuning["crs_exclusions"] == tuning["model_suppressions"] == []
    assert tuning["learning"]["flagged_client_networks"] == 30
    # the same 30 networks, unflagged, but each also refused by the model on another parameter
    probes = users(30) + [
        flagged_line(f"198.0.{i}.7", START + i, param="id", value="1' or 1=1--", family="sqli", crs=())
        for i in range(30)
    ]
    tuning = propose([write(tmp_path, probes)])["mlwaf_tuning"]
    assert tuning["crs_exclusions"] == tuning["model_suppressions"] == []
    entry = next(e for e in tuning["not_proposed"] if e.get("rule") == 941160)
    assert entry["would_let_through"] == {"requests_from_suspect_clients": 90, "suspect_clients": 30}


def test_unreadable_lines_are_counted_and_an_empty_recording_refused(tmp_path: Path) -> None:
    path = write(tmp_path, users(20))
    with path.open("a") as handle:
        handle.write("not json\n{}\n")
    assert propose([path], Options(min_days=1))["mlwaf_tuning"]["learning"]["unreadable_lines"] == 2
    with pytest.raises(RecordError, match="nothing to tune"):
        propose([write(tmp_path, [], "empty.jsonl")])
    with pytest.raises(RecordError, match="at least 2"):
        propose([path], Options(min_clients=1))


def test_a_recorded_path_cannot_break_out_of_a_rule(tmp_path: Path) -> None:
    hostile = '/x" "id:1,phase:1,allow'
    tuning = propose([write(tmp_path, users(25, path=hostile))])["mlwaf_tuning"]
    assert tuning["crs_exclusions"] == tuning["model_suppressions"] == []
    assert all("not a plain path" in e["not_proposed"] for e in tuning["not_proposed"])
    assert "not a plain path" in unsafe({"rule": 941100, "endpoint": hostile, "target": "ARGS:q"})
    assert "is not one variable" in unsafe({"rule": 941100, "endpoint": "/a", "target": 'ARGS:q" "x'})
    assert "CRS rule id" in unsafe({"rule": 1, "endpoint": "/a", "target": "ARGS:q"})
    assert unsafe({"endpoint": "/user/{id}", "param": "bio", "family": "xss"}) == ""


def test_a_proposal_round_trips_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    proposal = propose([write(tmp_path, users(25))])
    path = tmp_path / "tuning.yml"
    path.write_text(dump(proposal))
    assert path.read_text().startswith("# mlwaf site tuning proposal")
    tuning = load(path)
    assert len(tuning["crs_exclusions"]) == 1
    assert len(tuning["model_suppressions"]) == 1
    tuning["crs_exclusions"][0]["target"] = "ARGS"
    path.write_text(dump({"mlwaf_tuning": tuning}))
    with pytest.raises(TuningError, match="crs_exclusions entry 1: target 'ARGS'"):
        load(path)
    path.write_text("just: words\n")
    with pytest.raises(TuningError, match="not a tuning file"):
        load(path)
    path.write_text("a: [\n")
    with pytest.raises(TuningError, match="not YAML"):
        load(path)


def test_json_array_elements_are_one_parameter(tmp_path: Path) -> None:
    lines = [
        flagged_line(f"198.{i}.0.7", START + (i % 3) * DAY, param=f"messages.array_{i % 4}.content", family="cmdi")
        for i in range(30)
    ]
    (suppression,) = propose([write(tmp_path, lines)])["mlwaf_tuning"]["model_suppressions"]
    assert suppression["param"] == "messages.array_*.content"
    assert suppression["evidence"]["clients"] == 30
    assert "?" not in suppression["evidence"]["shapes"][0]
