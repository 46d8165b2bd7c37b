"""The release's acceptance targets checked against an evaluation's counts."""

from __future__ import annotations

from mlwaf.training import acceptance
from mlwaf.training.datasets import Sample
from mlwaf.training.evaluate import evaluate, per_value

SAMPLES = [
    *(Sample(f"benign {i}", "benign", "site") for i in range(999)),
    Sample("it's fine", "benign", "site"),
    *(Sample(f"' or {i}=0", "sqli", "lists") for i in range(99)),
    Sample("1 union select 2", "sqli", "lists"),
    Sample("<b onclick=x()>", "xss", "lists"),
    Sample("; id", "cmdi", "lists"),
]


def quotes(values) -> list[bool]:
    return ["'" in v for v in values]


def angles(values) -> list[bool]:
    return ["<" in v for v in values]


RESULT = evaluate(SAMPLES, {"quotes": per_value(quotes), "angles": per_value(angles)})


def test_detection_is_met_at_the_minimum_and_missed_below_it() -> None:
    rows = {t.name: t for t in acceptance.detection(RESULT, "quotes", {"sqli": 0.99, "xss": 0.5, "traversal": 0.9})}
    assert rows["sqli detected"].met  # 99 of 100: exactly the minimum
    assert rows["sqli detected"].measured == "99.00% (99/100)"
    assert not rows["xss detected"].met
    assert "traversal detected" not in rows  # a family the evaluation has no items of is not judged
    assert not acceptance.detection(RESULT, "quotes", {"sqli": 0.995})[0].met


def test_false_positives_are_judged_against_the_limit() -> None:
    assert acceptance.false_positives(RESULT, "quotes", limit=0.001).met  # 1 of 1,000
    assert not acceptance.false_positives(RESULT, "quotes", limit=0.0009).met
    assert acceptance.false_positives(RESULT, "angles", limit=0.0).met


def test_better_means_more_detected_and_no_more_false_positives() -> None:
    rows = {t.name: t for t in acceptance.better_than(RESULT, "quotes", "angles", ("benign", "sqli", "xss"), "values")}
    assert rows["sqli values detected, against angles"].met
    assert not rows["xss values detected, against angles"].met
    assert not rows["benign values blocked, against angles"].met  # 1 against 0
    reverse = {t.name: t for t in acceptance.better_than(RESULT, "angles", "quotes", ("benign", "cmdi"), "values")}
    assert reverse["benign values blocked, against quotes"].met
    assert not reverse["cmdi values detected, against quotes"].met  # 0 against 0 is a tie, not better


def test_report_counts_what_is_met() -> None:
    rows = [acceptance.inference(0.2), acceptance.inference(0.21), acceptance.false_positives(RESULT, "angles")]
    text = acceptance.markdown(rows)
    assert text.startswith("## Targets: 2 of 3 met")
    assert "| inference per request (batches of 32, one core) | <= 0.2 ms | 0.210 ms | **no** |" in text
    assert [row["met"] for row in acceptance.summary(rows)] == [True, False, True]
