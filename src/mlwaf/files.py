"""Reading the files the analyzer's tools are given: logs as they lie (plain or
gzipped after rotation) and JSON documents, each failure as the caller's own error."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path


def text_lines(path: Path, error: type[Exception], what: str, errors: str = "replace") -> Iterator[str]:
    """The lines of a text file, gunzipped when its name ends in .gz; an unreadable or
    truncated file raises ``error`` naming ``what`` it is."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors=errors) as handle:
            yield from handle
    except (OSError, EOFError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None


def json_objects(paths: list[Path], error: type[Exception], what: str) -> Iterator[dict | None]:
    """The JSON objects of JSON-lines files (plain or gzipped), in order; None for each
    non-blank line that is not one, so that the caller can count what it skipped."""
    for path in paths:
        for line in text_lines(path, error, what):
            if not line.strip():
                continue
            try:
                found = json.loads(line)
            except (ValueError, RecursionError):
                yield None
                continue
            yield found if isinstance(found, dict) else None


def read_json(path: Path, error: type[Exception], what: str) -> object:
    """A JSON document; unreadable or not JSON raises ``error`` naming ``what`` it is."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise error(f"{what} {path} is not JSON: {exc}") from None
