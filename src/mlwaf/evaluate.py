"""Side-by-side evaluation of detectors on the untouched test split.

Every detector answers the same question for each labelled test value
("would you block this input?"), so their rates are directly comparable:

* ``mlwaf``: a trained model at its calibrated block threshold;
* ``libinjection``: libinjection's SQL injection and XSS detectors (the
  engine behind ModSecurity's ``@detectSQLi`` / ``@detectXSS``), either one
  firing counts as a block. It has no notion of command injection or path
  traversal, which the table shows as such rather than hiding.

Rates are per value: TPR per attack family, FPR on benign values, and the
balanced accuracy (TPR + TNR) / 2 of each family against all benign values,
overall and per source. CRS through a live appliance is the models issue's
next step and plugs in as one more detector.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlwaf.datasets import FAMILIES, Sample
from mlwaf.model import AttackModel

# A detector: one block decision per value.
Detector = Callable[[Sequence[str]], list[bool]]


class EvaluationError(RuntimeError):
    """A detector that cannot run here (missing library, unreadable model)."""


def model_detector(model: AttackModel) -> Detector:
    threshold = model.thresholds.get("block", 0.5)

    def detect(values: Sequence[str]) -> list[bool]:
        scores, _ = model.score(list(values))
        return (scores >= threshold).tolist()

    return detect


def libinjection_detector() -> Detector:
    try:
        import libinjection  # type: ignore[import-not-found]  # noqa: PLC0415 - optional
    except ImportError:
        raise EvaluationError(
            "libinjection is not installed: pip install libinjection-python (part of the dev tools)"
        ) from None

    def detect(values: Sequence[str]) -> list[bool]:
        return [bool(libinjection.is_sql_injection(v)["is_sqli"] or libinjection.is_xss(v)["is_xss"]) for v in values]

    return detect


@dataclass
class Cell:
    n: int = 0
    blocked: int = 0

    @property
    def rate(self) -> float:
        return self.blocked / self.n if self.n else float("nan")


@dataclass
class Result:
    """Blocked counts per detector, per (source, family) and per family."""

    detectors: list[str]
    by_source: dict[tuple[str, str], dict[str, Cell]] = field(default_factory=dict)
    by_family: dict[str, dict[str, Cell]] = field(default_factory=dict)

    def balanced_accuracy(self, detector: str, family: str) -> float:
        benign = self.by_family.get("benign", {}).get(detector, Cell())
        attack = self.by_family.get(family, {}).get(detector, Cell())
        return (attack.rate + (1 - benign.rate)) / 2


def evaluate(samples: list[Sample], detectors: dict[str, Detector]) -> Result:
    result = Result(list(detectors))
    texts = [s.text for s in samples]
    for name, detect in detectors.items():
        decisions = detect(texts)
        if len(decisions) != len(samples):
            raise EvaluationError(f"detector {name} answered {len(decisions)} of {len(samples)} values")
        for sample, blocked in zip(samples, decisions, strict=True):
            for table, key in ((result.by_source, (sample.source, sample.family)), (result.by_family, sample.family)):
                cell = table.setdefault(key, {}).setdefault(name, Cell())  # type: ignore[arg-type]
                cell.n += 1
                cell.blocked += int(blocked)
    return result


def _rate(cell: Cell, family: str) -> str:
    label = "FPR" if family == "benign" else "TPR"
    return f"{label} {100 * cell.rate:.2f}% ({cell.blocked}/{cell.n})"


def markdown(result: Result) -> str:
    names = result.detectors
    head = "| family | values | " + " | ".join(names) + " |"
    rule = "|---|---:|" + "---|" * len(names)
    lines = ["Per family (all test sources):", "", head, rule]
    for family in FAMILIES:
        cells = result.by_family.get(family)
        if cells:
            n = next(iter(cells.values())).n
            lines.append(f"| {family} | {n:,} | " + " | ".join(_rate(cells[d], family) for d in names) + " |")
    lines += ["", "Balanced accuracy, each family against all benign values:", "", head.replace("values", "-"), rule]
    for family in FAMILIES[1:]:
        if family in result.by_family:
            scores = " | ".join(f"{100 * result.balanced_accuracy(d, family):.2f}%" for d in names)
            lines.append(f"| {family} | | {scores} |")
    lines += ["", "Per source:", "", head.replace("family", "source / family"), rule]
    for (source, family), cells in sorted(result.by_source.items()):
        n = next(iter(cells.values())).n
        lines.append(f"| {source} / {family} | {n:,} | " + " | ".join(_rate(cells[d], family) for d in names) + " |")
    return "\n".join(lines) + "\n"


def chart(result: Result, path: Path) -> None:
    """Detection rate against false-positive rate, one point per detector and family."""
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for the picture

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise EvaluationError("matplotlib is not installed: pip install matplotlib (part of the dev tools)") from None
    fig, axis = plt.subplots(figsize=(7, 5))
    markers = dict(zip(FAMILIES[1:], "osD^", strict=True))
    for index, name in enumerate(result.detectors):
        fpr = 100 * result.by_family["benign"][name].rate
        for family in FAMILIES[1:]:
            if family in result.by_family:
                tpr = 100 * result.by_family[family][name].rate
                axis.scatter([fpr], [tpr], color=f"C{index}", marker=markers[family], s=60)
        axis.scatter([], [], color=f"C{index}", label=name)
    for family, marker in markers.items():
        axis.scatter([], [], color="grey", marker=marker, label=family)
    worst = max(100 * result.by_family["benign"][name].rate for name in result.detectors)
    axis.set_xlim(-0.02 * max(worst, 0.5), 1.15 * max(worst, 0.5))
    axis.set_xlabel("false-positive rate on benign values (%)")
    axis.set_ylabel("detection rate (%)")
    axis.set_ylim(-2, 102)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title("Detection vs false positives, per value, test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overall(result: Result) -> dict[str, dict[str, float]]:
    """Machine-readable rates: per detector, FPR and each family's TPR and balanced accuracy."""
    out: dict[str, dict[str, float]] = {}
    for name in result.detectors:
        row = {"fpr": result.by_family["benign"][name].rate} if "benign" in result.by_family else {}
        for family in FAMILIES[1:]:
            if family in result.by_family:
                row[f"tpr_{family}"] = result.by_family[family][name].rate
                row[f"balanced_accuracy_{family}"] = result.balanced_accuracy(name, family)
        out[name] = {k: round(v, 6) for k, v in row.items()}
    return out
