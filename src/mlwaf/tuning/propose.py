"""``mlwaf tune``: the learning period's recording turned into a proposal an operator reviews.

Two kinds of entry, each as narrow as its evidence:

* a CRS exclusion: one rule id, one endpoint, one variable (deployed as
  ``ctl:ruleRemoveTargetById`` scoped by ``REQUEST_FILENAME``); for a chained rule,
  whose variables ModSecurity cannot exclude one by one, the rule on that endpoint
  (``whole_rule``, deployed as ``ctl:ruleRemoveById``);
* a model suppression: one endpoint, one parameter, one attack family (the
  model keeps scoring that input for every other family).

An entry is proposed only when what it covers was seen from many distinct clients
(networks, not addresses) on several days, and those clients look like users: a
client the behavioural layer flagged, or one that the model would have refused on
any other parameter, is not counted, for any entry. What those clients sent is
shown as what the entry would have let through. Nothing covers a whole site, a
whole family or a rule everywhere: every entry names an endpoint, and all but
the chained rules' an input.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlwaf.files import json_objects
from mlwaf.inputs import generic_name
from mlwaf.protocol import crs_rule
from mlwaf.tuning.proposal import VERSION, unsafe
from mlwaf.tuning.record import SPEC, RecordError, crs_target_name

DAY = 86400
MAX_SHAPES = 5  # example shapes per entry
MAX_REFUSED = 50  # candidates shown as not proposed


@dataclass(frozen=True)
class Options:
    min_clients: int = 20  # distinct client networks an entry needs
    min_days: int = 2  # distinct days an entry needs
    crs_score: int = 5  # a CRS hit counts when its request reached this anomaly score (would be refused)

    def check(self) -> None:
        if self.min_clients < 2:
            raise RecordError("--min-clients must be at least 2: one client can never teach an exclusion")
        if self.min_days < 1:
            raise RecordError("--min-days must be at least 1")
        if self.crs_score < 1:
            raise RecordError("--crs-score must be at least 1")


@dataclass
class Evidence:
    requests: int = 0
    clients: set[str] = field(default_factory=set)
    days: set[int] = field(default_factory=set)
    shapes: Counter[str] = field(default_factory=Counter)
    suspect_requests: int = 0
    suspect_clients: set[str] = field(default_factory=set)


@dataclass
class Tally:
    lines: int = 0
    skipped: int = 0
    clients: set[str] = field(default_factory=set)
    first: int = 0
    last: int = 0


def _lines(paths: list[Path], tally: Tally) -> Iterator[dict]:
    for line in json_objects(paths, RecordError, "tuning recording"):
        if not (
            line is not None
            and line.get("v") == SPEC
            and isinstance(line.get("e"), str)
            and isinstance(line.get("n"), str)
            and isinstance(line.get("t"), int)
            and isinstance(line.get("crs", []), list)
            and isinstance(line.get("ml", []), list)
        ):
            tally.skipped += 1
            continue
        tally.lines += 1
        tally.clients.add(line["n"])
        tally.first = min(tally.first or line["t"], line["t"])
        tally.last = max(tally.last, line["t"])
        yield line


def _root(name: str) -> str:
    """The parameter an input comes from (``data.text`` and ``data:base64`` -> ``data``)."""
    for mark in ".:>[":
        name = name.partition(mark)[0]
    return name.lower()


def _crs_keys(line: dict, options: Options) -> Iterator[tuple]:
    score = line.get("cs", 0)
    if not isinstance(score, int) or score < options.crs_score:
        return
    for hit in line.get("crs", []):
        if not (isinstance(hit, list) and len(hit) == 2 and isinstance(hit[0], str) and isinstance(hit[1], str)):
            continue
        rule, target = crs_rule(hit[0]), hit[1]
        if rule is None:
            continue
        number, chained = rule
        # a chained rule is removed whole, whatever it read; any other names a variable (a collection is too wide)
        if chained or target.partition(":")[2]:
            yield ("crs", line["e"], number, target, chained)


def _model_keys(line: dict) -> Iterator[tuple]:
    for reason in line.get("ml", []):
        if isinstance(reason, list) and len(reason) == 6 and reason[5] == 1 and reason[3]:
            model, family, source, name = (str(x) for x in reason[:4])
            yield ("model", line["e"], model, family, source, generic_name(name))


def _place(key: tuple) -> tuple[str, str]:
    """The endpoint and parameter an entry covers, for telling its evidence from other places."""
    if key[0] == "crs":
        return key[1], _root(crs_target_name(key[3]) or key[3])
    return key[1], _root(key[5])


def _shape(line: dict, key: tuple) -> str:
    shapes = line.get("s") or {}
    found = shapes.get(key[3] if key[0] == "crs" else f"{key[4]}:{key[5]}")
    if not (isinstance(found, list) and len(found) == 2 and isinstance(found[0], int)):
        return "?"
    length = found[0]
    bucket = 1 << max(length, 1).bit_length() - 1
    return f"length {bucket}-{bucket * 2 - 1}, characters {found[1]!s}"


def propose(paths: list[Path], options: Options | None = None) -> dict[str, object]:
    """The proposal (a mapping ready to be written as YAML) from recording files."""
    options = options or Options()
    options.check()
    tally = Tally()
    lines = list(_lines(paths, tally))
    if not lines:
        raise RecordError("nothing to tune from: no readable recording line in the input")
    # Who looks like a user: never flagged by the behavioural layer, and refused by the
    # model on at most one place (the one an entry would cover).
    flagged: set[str] = set()
    refused_at: dict[str, set[tuple[str, str]]] = {}
    for line in lines:
        if line.get("b"):
            flagged.add(line["n"])
        for key in _model_keys(line):
            refused_at.setdefault(line["n"], set()).add(_place(key))
    evidence: dict[tuple, Evidence] = {}
    for line in lines:
        client = line["n"]
        for key in (*_crs_keys(line, options), *_model_keys(line)):
            item = evidence.setdefault(key, Evidence())
            elsewhere = refused_at.get(client, set()) - {_place(key)}
            if client in flagged or elsewhere:
                item.suspect_requests += 1
                item.suspect_clients.add(client)
                continue
            item.requests += 1
            item.clients.add(client)
            item.days.add(line["t"] // DAY)
            item.shapes[_shape(line, key)] += 1
    crs, models, refused = [], [], []
    for key, item in sorted(evidence.items(), key=lambda kv: (-len(kv[1].clients), kv[0])):
        entry = _entry(key, item)
        why = [unsafe(entry)] if unsafe(entry) else []
        if len(item.clients) < options.min_clients:
            why.append(f"{len(item.clients)} client(s) that count, {options.min_clients} needed")
        if len(item.days) < options.min_days:
            why.append(f"{len(item.days)} day(s), {options.min_days} needed")
        if why:
            if len(refused) < MAX_REFUSED:
                refused.append({**entry, "not_proposed": "; ".join(why)})
            continue
        (crs if key[0] == "crs" else models).append(entry)
    return {
        "mlwaf_tuning": {
            "version": VERSION,
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "learning": {
                "recorded_requests": tally.lines,
                "unreadable_lines": tally.skipped,
                "client_networks": len(tally.clients),
                "flagged_client_networks": len(flagged),
                "from": time.strftime("%Y-%m-%d", time.gmtime(tally.first)),
                "to": time.strftime("%Y-%m-%d", time.gmtime(tally.last)),
            },
            "options": {
                "min_clients": options.min_clients,
                "min_days": options.min_days,
                "crs_score": options.crs_score,
            },
            "crs_exclusions": crs,
            "model_suppressions": models,
            "not_proposed": refused,
        }
    }


def _entry(key: tuple, item: Evidence) -> dict[str, object]:
    if key[0] == "crs":
        entry: dict[str, object] = {"rule": key[2], "endpoint": key[1], "target": key[3]}
        if key[4]:
            entry["whole_rule"] = True  # a chained rule: removed on the endpoint, its target is evidence
    else:
        entry = {"endpoint": key[1], "param": key[5], "source": key[4], "family": key[3], "model": key[2]}
    entry["evidence"] = {
        "requests": item.requests,
        "clients": len(item.clients),
        "days": len(item.days),
        "shapes": [f"{count} x {shape}" for shape, count in item.shapes.most_common(MAX_SHAPES)],
    }
    entry["would_let_through"] = {
        "requests_from_suspect_clients": item.suspect_requests,
        "suspect_clients": len(item.suspect_clients),
    }
    return entry
