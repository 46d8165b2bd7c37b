"""Side-by-side evaluation: counting, rates, balanced accuracy, report, chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlwaf.cli import main
from mlwaf.model import load_model
from mlwaf.training.datasets import HttpRequest, Sample
from mlwaf.training.evaluate import (
    EvaluationError,
    LabelledRequest,
    agent_detector,
    appliance_detector,
    attack_requests,
    evaluate,
    inference_ms,
    libinjection_detector,
    markdown,
    model_detector,
    overall,
    per_value,
)

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
    result = evaluate(SAMPLES, {"quotes": per_value(flags_quotes), "nothing": lambda items: [False] * len(items)})
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
    with pytest.raises(EvaluationError, match="short answered 1 of 6 items"):
        evaluate(SAMPLES, {"short": lambda items: [True]})
    with pytest.raises(EvaluationError, match="answered 1 of 6 values"):
        evaluate(SAMPLES, {"short": per_value(lambda values: [True])})


BENIGN_REQUESTS = [
    HttpRequest("GET", "/shop/item.jsp", (("id", "3"), ("name", "Vino Rioja"))),
    HttpRequest("POST", "/shop/login.jsp", (), (("login", "alice"), ("pwd", "wonderland")), (("SID", "AB12"),)),
    HttpRequest("GET", "/shop/index.jsp"),
]


def test_attacks_are_planted_into_one_argument_of_a_benign_request() -> None:
    attacks = [Sample(f"' or {i}={i}--", "sqli", "s") for i in range(30)]
    planted = attack_requests(BENIGN_REQUESTS, attacks, seed=1)
    assert planted == attack_requests(BENIGN_REQUESTS, attacks, seed=1)
    for item, attack in zip(planted, attacks, strict=True):
        values = item.request.values
        assert values.count(attack.text) == 1
        assert item.request.path in {r.path for r in BENIGN_REQUESTS}
        assert len(values) == max(2, len(next(r for r in BENIGN_REQUESTS if r.path == item.request.path).values))
    assert {item.request.path for item in planted} == {r.path for r in BENIGN_REQUESTS}


def test_a_request_is_blocked_when_any_value_is() -> None:
    items = [LabelledRequest(r, "benign", "csic") for r in BENIGN_REQUESTS]
    items += attack_requests(BENIGN_REQUESTS, [Sample("<script>", "xss", "s")], seed=2)
    result = evaluate(items, {"quotes": per_value(flags_quotes)})
    assert result.by_family["benign"]["quotes"].blocked == 0
    assert result.by_family["xss"]["quotes"].blocked == 1
    assert "| benign | 3 |" in markdown(result, "requests")


def test_inference_time_is_measured() -> None:
    model = load_model(MODELS / "attack.json")
    assert 0 < inference_ms(model, BENIGN_REQUESTS * 20, repeat=1) < 100


def test_appliance_detector_reports_an_unreachable_appliance() -> None:
    with pytest.raises(EvaluationError, match="did not answer"):
        appliance_detector("http://127.0.0.1:9", timeout=2)(SAMPLES[:1])


def test_model_and_libinjection_detectors() -> None:
    pytest.importorskip("libinjection")
    model = model_detector(load_model(MODELS / "attack.json"))(SAMPLES)
    assert model == [False, False, False, True, True, True], "an English phrase that opens with an SQL word passes"
    libinjection = libinjection_detector()(SAMPLES)
    assert libinjection[3]
    assert libinjection[4]
    assert not libinjection[0]


def test_user_agents_are_read_as_the_analyzer_reads_them() -> None:
    agents = [
        Sample("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:70.0) Gecko/20100101 Firefox/70.0", "benign", "real"),
        Sample("python-requests/2.31.0", "benign", "real"),
        Sample("() { :; }; /bin/cat /etc/passwd", "cmdi", "ua"),
        Sample("Mozilla/5.0' or '1'='1", "sqli", "ua"),
    ]
    assert agent_detector(load_model(MODELS / "attack.json"))(agents) == [False, False, True, True]


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
    assert set(summary["per_request"]) == set(summary["per_value"]) == {"mlwaf", "libinjection"}
    assert summary["per_value"]["mlwaf"]["tpr_sqli"] > 0.95
    assert summary["per_request"]["mlwaf"]["fpr"] < 0.01
    assert summary["user_agent"]["mlwaf"]["fpr"] < 0.01
    assert 0 < summary["inference_ms_per_request"] < 5
    met = {row["target"]: row["met"] for row in summary["targets"]}
    assert met["sqli detected"]
    assert met["CSIC benign requests blocked"]
    assert {"xss detected", "tampered detected", "attacks in cookie-name detected"} <= set(met)
    assert "benign values blocked, against libinjection" not in met, "no longer a target, only printed"
    assert "browser-captures:GoogleChrome requests refused" in met, "each held-back real source is a target"
    assert set(summary["parts"]) >= {"value", "name", "header", "json", "xml", "path"}
    assert summary["real_traffic"]["elastic-apache-logs"] < 0.05
    assert (tmp_path / "detection.png").stat().st_size > 0
    assert (tmp_path / "detection-values.png").stat().st_size > 0
    assert "Balanced accuracy" in capsys.readouterr().out
