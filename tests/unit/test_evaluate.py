"""Side-by-side evaluation: counting, rates, balanced accuracy, report, chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlwaf.cli import main
from mlwaf.datasets import Sample
from mlwaf.evaluate import EvaluationError, evaluate, libinjection_detector, markdown, model_detector, overall
from mlwaf.model import load_model

MODELS = Path(__file__).resolve().parents[2] / "files" / "models"
SAMPLES = [
    Sample("alice", "benign", "a"),
    Sample("select a box", "benign", "a"),
    Sample("hello", "benign", "b"),
    Sample("1' or '1'='1", "sqli", "a"),
    Sample("<script>alert(1)</script>", "xss", "b"),
    Sample("; cat /etc/passwd", "cmdi", "b"),
]


def flags_quotes(values) -> list[bool]:
    return ["'" in v or "<" in v for v in values]


def test_rates_and_balanced_accuracy() -> None:
    result = evaluate(SAMPLES, {"quotes": flags_quotes, "nothing": lambda values: [False] * len(values)})
    assert result.by_family["sqli"]["quotes"].rate == 1.0
    assert result.by_family["cmdi"]["quotes"].rate == 0.0
    assert result.by_family["benign"]["quotes"].blocked == 0
    assert result.by_source[("a", "benign")]["quotes"].n == 2
    assert result.balanced_accuracy("quotes", "xss") == 1.0
    assert result.balanced_accuracy("nothing", "sqli") == 0.5
    rates = overall(result)
    assert rates["quotes"]["tpr_cmdi"] == 0.0
    assert rates["nothing"]["fpr"] == 0.0
    report = markdown(result)
    assert "| cmdi | 1 | TPR 0.00% (0/1) | TPR 0.00% (0/1) |" in report
    assert "| a / benign | 2 |" in report


def test_detector_lengths_must_match() -> None:
    with pytest.raises(EvaluationError, match="short answered 1 of 6 values"):
        evaluate(SAMPLES, {"short": lambda values: [True]})


def test_model_and_libinjection_detectors() -> None:
    pytest.importorskip("libinjection")
    texts = [s.text for s in SAMPLES]
    model = model_detector(load_model(MODELS / "attack.json"))(texts)
    assert model == [False, False, False, True, True, True]
    libinjection = libinjection_detector()(texts)
    assert libinjection[3]
    assert libinjection[4]
    assert not libinjection[0]


def test_evaluate_command_needs_the_datasets(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", "--data", str(tmp_path)]) == 2
    assert "does not look like the datasets folder" in capsys.readouterr().err


def test_evaluate_command_writes_its_report(tmp_path: Path, capsys) -> None:
    data = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    if not (data / "httpparams").is_dir():
        pytest.skip("the shared datasets are not next to the checkout")
    pytest.importorskip("libinjection")
    assert main(["evaluate", "--data", str(data), "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "detection.json").read_text())
    assert set(summary["detectors"]) == {"mlwaf", "libinjection"}
    assert summary["detectors"]["mlwaf"]["tpr_sqli"] > 0.95
    assert (tmp_path / "detection.png").stat().st_size > 0
    assert "Balanced accuracy" in capsys.readouterr().out
