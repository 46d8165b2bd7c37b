"""``mlwaf learn``: build the application profile from what the site really served.

Three kinds of input, each plain or gzipped (rotated logs as they lie):

* ``observations``: the JSON lines the analyzer appends during a learning
  period (``[profile] observations``): shapes of the requests it allowed;
* ``requests``: JSON lines in the ``mlwaf score`` input format;
* ``access-log``: Apache's common or combined log; only requests answered
  below 400 are learned (a 404 is not part of the site), and only the query
  string's arguments are seen, never bodies or cookies.

Lines that cannot be read are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlwaf.files import text_lines
from mlwaf.profile import Observation, Profile, ProfileError, observe
from mlwaf.request import RequestError, from_wire

FORMATS = ("observations", "requests", "access-log")
_ACCESS = re.compile(r'"([A-Za-z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')


@dataclass
class Tally:
    learned: int = 0
    skipped: int = 0  # unreadable lines
    ignored: int = 0  # readable, but not part of the site (error statuses)


def observations(path: Path, kind: str, tally: Tally) -> Iterator[Observation]:
    """The observations in one file of the given kind (one of FORMATS)."""
    for line in text_lines(path, ProfileError, kind, errors="surrogateescape"):
        if not line.strip():
            continue
        try:
            if kind == "access-log":
                match = _ACCESS.search(line)
                if match is None:
                    raise RequestError("not an access log line")
                if int(match.group(3)) >= 400:
                    tally.ignored += 1
                    continue
                found = observe(from_wire({"method": match.group(1), "path": match.group(2)}))
            elif kind == "requests":
                found = observe(from_wire(json.loads(line)))
            else:
                found = Observation.from_dict(json.loads(line))
        except (ValueError, RecursionError, RequestError, ProfileError):
            tally.skipped += 1
            continue
        tally.learned += 1
        yield found


def learn(sources: list[tuple[Path, str]]) -> tuple[Profile, Tally]:
    """A profile from (file, kind) sources, and what was learned and skipped."""
    tally = Tally()
    profile = Profile()
    for path, kind in sources:
        if kind not in FORMATS:
            raise ProfileError(f"unknown input kind {kind!r}; kinds are {', '.join(FORMATS)}")
        for observation in observations(path, kind, tally):
            profile.add(observation)
    if not profile.requests:
        raise ProfileError("nothing to learn from: no readable request in the input")
    return profile, tally
