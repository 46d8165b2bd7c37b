"""Reading the appliance's logs: Apache's access log (waf_combined, with %D and
the ML verdict), ``ml_performance.log`` and the analyzer's JSON decision log.

A line that cannot be read (malformed, cut off by a crash or a rotation) is
skipped and counted, never an error. Rotated files (``access.log.1``,
``access.log.2.gz``, ...) are read oldest first, and files last written before
the start of the range are not opened at all.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from mlwaf.files import text_lines

# %a %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i" %D [%{MLWAF_VERDICT}e]
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
# the verdict field is empty, not "-", when the bridge fell back (the rule sets the variable to nothing)
ACCESS = re.compile(rf"^(\S+) \S+ \S+ \[([^\]]+)\] {_QUOTED} (\d{{3}}) (\S+) {_QUOTED} {_QUOTED} (\d+)(?: (\S*))?$")
BLOCK_STATUSES = (403, 429, 503)
# ml_fallback.log: [%Y-%m-%d %H:%M:%S] UNIQUE_ID %a "%r" %>s analyzer unavailable: <why>,
# fail-degraded|closed|open[, check: <family the degraded checks caught, or ->]
FALLBACK = re.compile(
    rf"^\[([\d-]+ [\d:]+)\] \S+ (\S+) {_QUOTED} (\d{{3}}) analyzer unavailable: (.*), "
    r"fail-(degraded|closed|open)(?:, check: (\S+))?$"
)


class Timed(Protocol):
    @property
    def ts(self) -> float: ...


E = TypeVar("E", bound=Timed)


class LogError(OSError):
    """A log file that exists but cannot be read."""


@dataclass(frozen=True)
class Access:
    ts: float
    client: str
    method: str
    path: str
    status: int
    ms: float  # %D: time to serve, microseconds in the log
    user_agent: str
    verdict: str  # the ML analyzer's verdict, "-" when it was not asked

    @property
    def blocked_by(self) -> str:
        """ "ml" (the analyzer), "rules" (ModSecurity's rules: CRS, or Apache's own refusals), or ""."""
        if self.verdict in ("block", "ratelimit"):
            return "ml"
        if self.status in BLOCK_STATUSES:
            return "rules"
        return ""


@dataclass(frozen=True)
class Performance:
    ts: float
    ms: float  # the bridge's round trip to the analyzer
    blocked: bool


@dataclass(frozen=True)
class Decision:
    ts: float
    client: str
    verdict: str
    status: int
    path: str
    reasons: tuple[tuple[str, str, float], ...]  # (model, family, score), strongest first
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The model behind the verdict (its strongest reason)."""
        return self.reasons[0][0] if self.reasons else "none"

    @property
    def family(self) -> str:
        return self.reasons[0][1] if self.reasons else "none"


@dataclass(frozen=True)
class Unanswered:
    """A request the bridge could not get an answer for (ml_fallback.log)."""

    ts: float
    client: str
    status: int
    reason: str
    path: str = "open"  # fail-degraded, fail-closed or fail-open
    caught: str = ""  # the family the degraded checks caught, if any

    @property
    def outcome(self) -> str:
        """degraded-caught, degraded-passed, closed or open."""
        if self.path == "degraded":
            return "degraded-caught" if self.caught else "degraded-passed"
        return self.path


def parse_fallback(line: str) -> Unanswered | None:
    match = FALLBACK.match(line.rstrip("\n"))
    if not match:
        return None
    when, client, _request, status, reason, path, caught = match.groups()
    try:
        ts = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()  # Apache writes local time
    except ValueError:
        return None
    return Unanswered(ts, client, int(status), reason, path, "" if caught in (None, "-") else caught)


def parse_access(line: str) -> Access | None:
    match = ACCESS.match(line.rstrip("\n"))
    if not match:
        return None
    client, when, request, status, _size, _referer, agent, micros, verdict = match.groups()
    try:
        ts = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    except ValueError:
        return None
    method, _, rest = request.partition(" ")
    path = rest.rsplit(" ", 1)[0] if " " in rest else rest
    return Access(ts, client, method, path, int(status), int(micros) / 1000, agent, verdict or "-")


def parse_performance(line: str) -> Performance | None:
    parts = line.strip().split(",")
    if len(parts) != 3:
        return None
    try:
        ts, ms = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if not (math.isfinite(ts) and math.isfinite(ms)) or ms < 0:
        return None
    return Performance(ts, ms, parts[2] == "True")


def parse_decision(line: str) -> Decision | None:
    try:
        record = json.loads(line)
        reasons = tuple(
            (str(r["model"]), str(r["family"]), float(r.get("score", 0.0))) for r in record.get("reasons", [])
        )
        scores = {str(k): float(v) for k, v in record.get("scores", {}).items()}
        return Decision(
            ts=float(record["ts"]),
            client=str(record.get("client_ip", "")),
            verdict=str(record["verdict"]),
            status=int(record.get("status", 403 if record["verdict"] == "block" else 0)),
            path=str(record.get("path", "")),
            reasons=reasons,
            scores=scores,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class Tally:
    """Lines read and lines skipped, per log."""

    read: int = 0
    skipped: int = 0


def rotated(path: Path) -> list[Path]:
    """``path`` and its rotated siblings (``.1``, ``.2.gz``, ...), oldest first."""
    siblings = []
    for sibling in path.parent.glob(path.name + ".*"):
        number = sibling.name[len(path.name) + 1 :].removesuffix(".gz")
        if number.isdigit():
            siblings.append((int(number), sibling))
    return [p for _, p in sorted(siblings, reverse=True)] + ([path] if path.exists() else [])


def entries(
    path: Path, parse: Callable[[str], E | None], tally: Tally, since: float = 0.0, until: float = math.inf
) -> Iterator[E]:
    """The entries of a log and its rotated files between ``since`` and ``until`` (Unix times)."""
    for file in rotated(path):
        try:
            if file.stat().st_mtime < since:
                continue  # written to for the last time before the range starts
        except OSError:
            continue
        for line in text_lines(file, LogError, "log"):
            if not line.strip():
                continue
            entry = parse(line)
            if entry is None:
                tally.skipped += 1
                continue
            tally.read += 1
            if since <= entry.ts <= until:
                yield entry


def recent(path: Path, parse: Callable[[str], E | None], tally: Tally, since: float) -> list[E]:
    """The entries of the current file from ``since`` on, read backwards from its end in growing
    chunks (the live monitor must not read a day of log every few seconds). A missing file has
    none; one that cannot be read raises LogError."""
    try:
        size = path.stat().st_size
    except OSError:
        return []
    chunk = 1 << 20
    while True:
        start = max(0, size - chunk)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                data = handle.read(size - start).decode("utf-8", "replace")
        except OSError as exc:
            raise LogError(f"cannot read log {path}: {exc.strerror}") from None
        lines = data.splitlines()
        if start > 0 and lines:
            lines = lines[1:]  # the first one is probably cut
        parsed = [parse(line) for line in lines if line.strip()]
        found = [e for e in parsed if e is not None]
        if start == 0 or (found and found[0].ts < since):
            tally.read += len(found)
            tally.skipped += len(parsed) - len(found)
            return [e for e in found if e.ts >= since]
        chunk *= 4


class Tail:
    """A log's entries from some time on, kept between calls: the first call reads backwards from the
    end (``recent``), later ones parse only what was appended since, and start over after a rotation
    (another file, or a shorter one). What the live monitor reads every few seconds."""

    def __init__(self, path: Path, parse: Callable[[str], E | None], tally: Tally) -> None:
        self.path, self.parse, self.tally = path, parse, tally
        self.entries: deque[E] = deque()
        self.inode, self.offset, self.partial = -1, 0, ""

    def since(self, since: float) -> list[E]:
        try:
            stat = self.path.stat()
        except OSError:
            self.entries.clear()
            self.inode = -1
            return []
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            self.entries = deque(recent(self.path, self.parse, self.tally, since))
            self.inode, self.offset, self.partial = stat.st_ino, stat.st_size, ""
        elif stat.st_size > self.offset:
            self._read_to(stat.st_size)
        while self.entries and self.entries[0].ts < since:
            self.entries.popleft()
        return list(self.entries)

    def _read_to(self, size: int) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read(size - self.offset)
        except OSError as exc:
            raise LogError(f"cannot read log {self.path}: {exc.strerror}") from None
        self.offset += len(data)
        lines = (self.partial + data.decode("utf-8", "replace")).split("\n")
        self.partial = lines.pop()  # a line still being written
        for line in lines:
            if line.strip():
                entry = self.parse(line)
                if entry is None:
                    self.tally.skipped += 1
                else:
                    self.tally.read += 1
                    self.entries.append(entry)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
