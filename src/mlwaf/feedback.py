"""Turn an operator's judgement of logged decisions into training data.

The decision log keeps, for every log and block verdict, the inputs behind it
(``reasons[].value``, unless ``log_values`` is off). An operator who finds a
false positive, or confirms that a request the analyzer only logged was an
attack, names the request ids; this module pulls those inputs out as JSON
lines ``{"text": ..., "family": ...}``, the format ``mlwaf train --extra``
reads. Rotated and gzipped logs can be given too; unreadable lines are
skipped and counted, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlwaf.files import json_objects
from mlwaf.model import FAMILIES


class FeedbackError(ValueError):
    """A request that cannot be marked (unknown id, no logged values, bad family)."""


@dataclass
class Export:
    records: list[dict[str, str]] = field(default_factory=list)
    skipped_lines: int = 0


def _entries(paths: list[Path], export: Export) -> Iterator[dict]:
    for entry in json_objects(paths, FeedbackError, "decision log"):
        if entry is None:
            export.skipped_lines += 1
        else:
            yield entry


def export(paths: list[Path], marks: dict[str, str]) -> Export:
    """The logged inputs of the marked requests, labelled: ``marks`` maps a request id to
    ``benign`` (a false positive) or an attack family (a confirmed attack)."""
    for request_id, family in marks.items():
        if family not in FAMILIES:
            raise FeedbackError(f"request {request_id}: family must be one of {', '.join(FAMILIES)}, not {family!r}")
    out = Export()
    found: set[str] = set()
    for entry in _entries(paths, out):
        request_id = str(entry.get("id", ""))
        if request_id not in marks:
            continue
        found.add(request_id)
        for reason in entry.get("reasons") or []:
            if isinstance(reason, dict) and isinstance(reason.get("value"), str):
                where = f"{reason.get('source', '')}:{reason.get('name', '')}"
                out.records.append(
                    {"text": reason["value"], "family": marks[request_id], "request": request_id, "input": where}
                )
    missing = sorted(set(marks) - found)
    if missing:
        raise FeedbackError(f"no decision logged for request id(s): {', '.join(missing)}")
    marked = {r["request"] for r in out.records}
    empty = sorted(found - marked)
    if empty:
        raise FeedbackError(
            f"request id(s) {', '.join(empty)} have no logged input values (allowed requests, or log_values off); "
            "write their lines by hand from the audit log"
        )
    return out
