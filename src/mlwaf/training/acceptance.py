"""The model's acceptance targets, checked against an evaluation's counts.

Each check is one row: what is required, what was measured, met or not. The
evaluation prints them under its tables, so a reader sees at once which
targets the shipped model meets and by how much it misses the others, from
the same counts as the tables (no second run, no rounding before the check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlwaf.training.evaluate import Cell, Result

# minimum detection per family, maximum false positives, inference time
MIN_DETECTION = {"sqli": 0.99, "xss": 0.99, "cmdi": 0.97, "traversal": 0.97}
MAX_FALSE_POSITIVES = 0.001  # of real benign requests
PROFILE_MIN_DETECTION = 0.90  # of tampered requests
MAX_INFERENCE_MS = 0.2  # per request, batches of 32, one core
MAX_PLACEMENT_GAP = 0.02  # detection in any part of a request, at most this far under an argument value's


@dataclass(frozen=True)
class Target:
    name: str
    required: str
    measured: str
    met: bool


def _percent(cell: Cell) -> str:
    return f"{100 * cell.rate:.2f}% ({cell.blocked:,}/{cell.n:,})"


def detection(result: Result, detector: str, minimum: dict[str, float] = MIN_DETECTION) -> list[Target]:
    """Each attack family the result holds detected at least at its minimum rate."""
    return [
        Target(f"{family} detected", f">= {100 * floor:g}%", _percent(cell), cell.rate >= floor)
        for family, floor in minimum.items()
        if (cell := result.by_family.get(family, {}).get(detector)) is not None
    ]


def false_positives(
    result: Result, detector: str, limit: float = MAX_FALSE_POSITIVES, name: str = "benign items blocked"
) -> Target:
    cell = result.by_family["benign"][detector]
    return Target(name, f"<= {100 * limit:g}%", _percent(cell), cell.rate <= limit)


def false_positives_per_source(result: Result, detector: str, limit: float = MAX_FALSE_POSITIVES) -> list[Target]:
    """Each benign source's requests refused at most at ``limit``."""
    return [
        Target(
            f"{source} requests refused",
            f"<= {100 * limit:g}%",
            _percent(cells[detector]),
            cells[detector].rate <= limit,
        )
        for (source, family), cells in sorted(result.by_source.items())
        if family == "benign"
    ]


def placement(parts: dict[str, Cell], reference: str = "value", slack: float = MAX_PLACEMENT_GAP) -> list[Target]:
    """Attacks placed in each other part detected within ``slack`` of the same attacks in ``reference``."""
    floor = parts[reference].rate - slack
    return [
        Target(
            f"attacks in {part} detected",
            f">= {100 * floor:.2f}% ({reference} - {100 * slack:g})",
            _percent(cell),
            cell.rate >= floor,
        )
        for part, cell in parts.items()
        if part != reference
    ]


def better_than(result: Result, ours: str, reference: str, families: Sequence[str], what: str) -> list[Target]:
    """``ours`` detects more of each attack family than ``reference`` and blocks no more benign items.

    A tie on detection is not better; on false positives it is (both may block none)."""
    rows = []
    for family in families:
        cells = result.by_family.get(family, {})
        if ours not in cells or reference not in cells:
            continue
        mine, theirs = cells[ours], cells[reference]
        if family == "benign":
            rows.append(
                Target(
                    f"benign {what} blocked, against {reference}",
                    f"<= {_percent(theirs)}",
                    _percent(mine),
                    mine.blocked * theirs.n <= theirs.blocked * mine.n,
                )
            )
        else:
            rows.append(
                Target(
                    f"{family} {what} detected, against {reference}",
                    f"> {_percent(theirs)}",
                    _percent(mine),
                    mine.blocked * theirs.n > theirs.blocked * mine.n,
                )
            )
    return rows


def inference(milliseconds: float, limit: float = MAX_INFERENCE_MS) -> Target:
    return Target(
        "inference per request (batches of 32, one core)",
        f"<= {limit:g} ms",
        f"{milliseconds:.3f} ms",
        milliseconds <= limit,
    )


def markdown(targets: Sequence[Target]) -> str:
    met = sum(t.met for t in targets)
    lines = [
        f"## Targets: {met} of {len(targets)} met",
        "",
        "| target | required | measured | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t.name} | {t.required} | {t.measured} | {'yes' if t.met else '**no**'} |" for t in targets]
    return "\n".join(lines) + "\n"


def summary(targets: Sequence[Target]) -> list[dict[str, object]]:
    """Machine-readable rows for the evaluation's JSON."""
    return [{"target": t.name, "required": t.required, "measured": t.measured, "met": t.met} for t in targets]
