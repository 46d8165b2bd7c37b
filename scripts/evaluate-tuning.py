#!/usr/bin/env python3
"""Site tuning on replayed real sites, the model's side: learn on a site's first half, tune, score its second half.

    .venv/bin/python scripts/evaluate-tuning.py [--data ../shared/datasets] [--min-clients 3] [--split alternate]

Sites: the real-traffic sources held back from training and calibration's threshold
search alike (``mlwaf.training.traffic`` roles calibration and test) on which the shipped model
refuses benign requests. For each, in the order the source recorded them:

* the learning period: the first half through the analyzer in detection-only mode,
  every flagged request written as a recording line (``mlwaf.tuning.record``). The
  recordings hold no client addresses, so each request is given a client of its own,
  in its own network, and a day of three at random (``day``);
* ``mlwaf tune`` on those lines (``--min-clients``; the appliance's default of 20 is
  more than most of these recordings have requests at one place, and is reported too);
* the second half, refused before and after the proposal's model suppressions;
* planted attacks: held-out payloads (HttpParams' test file, payloads-extra's held-back
  repositories) as the value of each tuned parameter, and of a parameter of their own on
  the same endpoint, refused before and after.

``--split alternate`` learns on every other request and scores the rest instead: a site
whose mix of requests stays the same over time. The API cassettes and fixtures are in
the order of their test files, not of time, so their halves hold different endpoints.

CRS's side (exclusions) needs the live appliance: the Molecule scenarios check it end
to end (tests/integration/test_tuning.py). Writes bench/tuning.md and bench/tuning.json
(bench/tuning-alternate.* with ``--split alternate``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from mlwaf.config import ModelSettings, ParamAllow, Settings
from mlwaf.decision import Analyzer
from mlwaf.request import Arg, Request
from mlwaf.training.datasets import FAMILIES, extra_payloads, httpparams
from mlwaf.training.traffic import RealRequest, real_requests, role
from mlwaf.tuning.propose import DAY, Options, propose
from mlwaf.tuning.record import record

PROJECT = Path(__file__).resolve().parents[1]
MODEL = PROJECT / "files" / "models" / "attack.json"
START = 1_764_547_200  # 2025-12-01, midnight UTC
KEY = b"evaluate-tuning!"
PLANTED_PER_FAMILY = 300


def analyzer(mode: str = "block", allow: tuple[ParamAllow, ...] = ()) -> Analyzer:
    settings = Settings(models={"attack": ModelSettings(path=str(MODEL))}, mode=mode, allow_params=allow)
    return Analyzer.from_settings(settings)


def refused(subject: Analyzer, requests: list[Request]) -> int:
    return sum(subject.analyze(r).verdict == "block" for r in requests)


def day(number: int) -> int:
    """The day (0-2) of a learning period that the ``number``-th replayed request falls on.

    The sources are not in time order (an API's cassettes follow its test files, a page
    load fetches its resources at once), so a request's place in them says nothing of its
    day: each gets one at random, the same on every run, as a site's users come back on
    any day of a week."""
    return random.Random(number).randrange(3)


def learn(site: list[Request], tmp: Path) -> Path:
    """The recording of a learning period on ``site``: one client per request, three days."""
    watcher = analyzer("detection-only")
    blocks = {"attack": watcher.thresholds["attack"].block}
    lines = []
    for number, request in enumerate(site):
        client = f"10.{number // 250 % 250}.{number % 250}.1"
        when = START + day(number) * DAY + number
        replayed = dataclasses.replace(request, client_ip=client, ts=float(when))
        line = record(replayed, watcher.analyze(replayed), KEY, blocks)
        if line is not None:
            lines.append(json.dumps(line))
    path = tmp / "record.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def planted(entry: dict, payloads: dict[str, list[str]], own_name: bool) -> dict[str, list[Request]]:
    """Requests to the tuned endpoint carrying each held-out payload, per family: as the tuned
    parameter's value, or (``own_name``) as a parameter of its own."""
    path = entry["endpoint"].replace("{id}", "7")
    name = "planted" if own_name else entry["param"]
    source = "query" if own_name else entry["source"]
    return {
        family: [Request(method="POST", path=path, args=[Arg(source, name, text)]) for text in texts]
        for family, texts in payloads.items()
    }


def held_out_payloads(data: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for sample in httpparams(data, "test") + extra_payloads(data)[1]:
        if sample.family != "benign" and len(found[sample.family]) < PLANTED_PER_FAMILY:
            found[sample.family].append(sample.text)
    return dict(found)


SPLITS = ("halves", "alternate")


def split(requests: list, how: str) -> tuple[list, list]:
    """A site's learning part and scored part: its halves in the source's order, or alternate requests."""
    if how == "alternate":
        return requests[0::2], requests[1::2]
    half = len(requests) // 2
    return requests[:half], requests[half:]


def evaluate_site(
    source: str, site: list[RealRequest], options: Options, payloads: dict, tmp: Path, *, how: str
) -> dict | None:
    requests = [real.request for real in site]
    first, second = split(requests, how)
    plain = analyzer()
    before = refused(plain, second)
    if not refused(plain, first):
        return None
    recording = learn(first, tmp)
    tuning = propose([recording], options)["mlwaf_tuning"]
    default = propose([recording])["mlwaf_tuning"]
    entries = tuning["model_suppressions"]
    allow = tuple(ParamAllow(e["param"], endpoint=e["endpoint"], families=(e["family"],)) for e in entries)
    tuned = analyzer(allow=allow) if allow else plain
    after = refused(tuned, second)
    attacks = []
    for entry in entries:
        for own_name in (False, True):
            for family, batch in planted(entry, payloads, own_name).items():
                attacks.append(
                    {
                        "endpoint": entry["endpoint"],
                        "param": "(a parameter of its own)" if own_name else entry["param"],
                        "suppressed": entry["family"] if not own_name else "",
                        "family": family,
                        "count": len(batch),
                        "before": refused(plain, batch),
                        "after": refused(tuned, batch),
                    }
                )
    return {
        "source": source,
        "requests": len(requests),
        "learned_refused": refused(plain, first),
        "second_half": len(second),
        "refused_before": before,
        "refused_after": after,
        "suppressions": [{k: e[k] for k in ("endpoint", "param", "family")} | e["evidence"] for e in entries],
        "suppressions_at_default_thresholds": len(default["model_suppressions"]),
        "planted": attacks,
    }


def markdown(results: list[dict], options: Options, started: str, how: str) -> str:
    before = sum(r["refused_before"] for r in results)
    after = sum(r["refused_after"] for r in results)
    lines = [
        "# Site tuning on replayed real sites (model side)",
        "",
        f"{started}, `.venv/bin/python scripts/evaluate-tuning.py --min-clients {options.min_clients}"
        f" --split {how}` (min-days {options.min_days}), model `{MODEL.name}`.",
        (
            "Learning on each site's first half (one client per request, three days), tuned with"
            " `mlwaf tune`, scored on its second half."
            if how == "halves"
            else "Learning on every other request of each site (one client per request, three days), tuned"
            ' with `mlwaf tune`, scored on the rest (the "second half" below).'
        ),
        "",
        "| site | requests | refused in the first half | second half | refused before | refused after |"
        " suppressions (default thresholds) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['source']} | {r['requests']:,} | {r['learned_refused']} | {r['second_half']:,} |"
            f" {r['refused_before']} | {r['refused_after']} | {len(r['suppressions'])}"
            f" ({r['suppressions_at_default_thresholds']}) |"
        )
    fall = f"{(before - after) / before:.0%}" if before else "n/a"
    lines += ["", f"**False positives on the second halves: {before} before, {after} after ({fall} fewer).**", ""]
    lines += [
        "## Planted attacks at the tuned endpoints",
        "",
        "| endpoint | parameter | suppressed | family | payloads | refused before | refused after | kept |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for a in r["planted"]:
            kept = f"{a['after'] / a['before']:.1%}" if a["before"] else "n/a"
            lines.append(
                f"| {a['endpoint']} | {a['param']} | {a['suppressed'] or '-'} | {a['family']} | {a['count']} |"
                f" {a['before']} | {a['after']} | {kept} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(PROJECT.parent / "shared" / "datasets"))
    parser.add_argument("--min-clients", type=int, default=3)
    parser.add_argument("--min-days", type=int, default=2)
    parser.add_argument("--out", default=str(PROJECT / "bench"))
    parser.add_argument("--split", choices=SPLITS, default="halves", help="how a site is cut into learning and scoring")
    args = parser.parse_args()
    data = Path(args.data)
    options = Options(min_clients=args.min_clients, min_days=args.min_days)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sites: dict[str, list[RealRequest]] = defaultdict(list)
    for real in real_requests(data):
        if role(real.source) != "train":
            sites[real.source].append(real)
    if not sites:
        print(f"no real traffic under {data}", file=sys.stderr)
        return 2
    payloads = held_out_payloads(data)
    print(f"{len(sites)} held-back sites; planted payloads: {Counter({f: len(p) for f, p in payloads.items()})}")
    results = []
    with tempfile.TemporaryDirectory(prefix="mlwaf-tuning-") as tmp:
        for source, site in sorted(sites.items()):
            result = evaluate_site(source, site, options, payloads, Path(tmp), how=args.split)
            if result is None:
                continue
            results.append(result)
            print(
                f"{source}: refused {result['refused_before']} -> {result['refused_after']} of {result['second_half']}"
            )
    out = Path(args.out)
    name = "tuning" if args.split == "halves" else f"tuning-{args.split}"
    summary = {"date": started, "split": args.split, "families": FAMILIES, "sites": results}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1))
    text = markdown(results, options, started, args.split)
    (out / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
