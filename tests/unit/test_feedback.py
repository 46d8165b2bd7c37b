"""mlwaf feedback: marked decisions become training lines; bad logs and marks are clear errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mlwaf.cli import main
from mlwaf.feedback import FeedbackError, export
from mlwaf.training.datasets import extra_samples


def entry(request_id: str, verdict: str, *values: str) -> str:
    reasons = [
        {"model": "attack", "family": "sqli", "source": "query", "name": f"p{i}", "score": 0.95, "value": v}
        for i, v in enumerate(values)
    ]
    return json.dumps({"id": request_id, "verdict": verdict, "reasons": reasons}) + "\n"


@pytest.fixture
def logs(tmp_path: Path) -> list[Path]:
    current = tmp_path / "decisions.jsonl"
    current.write_text(entry("a", "block", "O'Reilly & sons") + "{broken\n" + entry("b", "log", "1 or sleep(3)#"))
    rotated = tmp_path / "decisions.jsonl.1.gz"
    rotated.write_bytes(gzip.compress((entry("c", "block", "select a, b from c", "x") + "[1]\n").encode()))
    (tmp_path / "plain.jsonl").write_text(json.dumps({"id": "d", "verdict": "allow", "reasons": []}) + "\n")
    return [current, rotated, tmp_path / "plain.jsonl"]


def test_marked_inputs_are_exported_with_their_label(logs: list[Path]) -> None:
    result = export(logs, {"a": "benign", "c": "benign", "b": "sqli"})
    assert [(r["text"], r["family"], r["request"]) for r in result.records] == [
        ("O'Reilly & sons", "benign", "a"),
        ("1 or sleep(3)#", "sqli", "b"),
        ("select a, b from c", "benign", "c"),
        ("x", "benign", "c"),
    ]
    assert result.skipped_lines == 2  # a broken line and a JSON value that is not an object


@pytest.mark.parametrize(
    ("marks", "message"),
    [
        ({"zz": "benign"}, "no decision logged for request id"),
        ({"d": "benign"}, "have no logged input values"),
        ({"a": "ssti"}, "family must be one of"),
    ],
)
def test_bad_marks_are_refused(logs: list[Path], marks: dict[str, str], message: str) -> None:
    with pytest.raises(FeedbackError, match=message):
        export(logs, marks)


def test_command_appends_training_lines(logs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "extra.jsonl"
    args = ["feedback", "--false-positive", "a", "--attack", "b=sqli", "-o", str(out)]
    for log in logs:
        args += ["--log", str(log)]
    assert main(args) == 0
    assert main(args) == 0  # appends
    samples = extra_samples(out)  # the format mlwaf train --extra reads
    assert [(s.text, s.family) for s in samples] == [("O'Reilly & sons", "benign"), ("1 or sleep(3)#", "sqli")] * 2
    assert "2 labelled input(s) from 2 request(s); 2 unreadable log line(s) skipped" in capsys.readouterr().err
    assert main(["feedback", "--log", str(logs[0]), "--attack", "b"]) == 2
    assert main(["feedback", "--log", str(tmp_path / "missing.jsonl"), "--false-positive", "a"]) == 2
    assert "cannot read decision log" in capsys.readouterr().err
