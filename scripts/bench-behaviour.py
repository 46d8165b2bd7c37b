#!/usr/bin/env python3
"""The behavioural layer against its targets: how fast attacks are caught, how often people are.

    .venv/bin/python scripts/bench-behaviour.py [--data ../shared/datasets] [--sessions 10000]

Replays `mlwaf simulate` traffic through the behavioural engine the daemon runs
(`mlwaf.behaviour.engine.Behaviour`, profile production; the attack model is
left out: it does not change these verdicts), everything in one timeline:
normal browsing sessions (the site built from CSIC 2010's requests when the
datasets are there, else the demo site), and amid them single-source floods,
a distributed flood, scanners, credential stuffing and a crawler. Then the
real bot and human sessions of the Iliou et al. logs, each as its own client.
Then times the tracker update plus features per request with 100,000
clients tracked, on one CPU. Writes bench/behaviour.md and bench/behaviour.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from mlwaf.behaviour.engine import Behaviour
from mlwaf.behaviour.features import compute
from mlwaf.behaviour.simulate import DEMO_SITE, Generator, site_from_requests
from mlwaf.behaviour.tracker import Event, LocalTracker, bytes_per_client
from mlwaf.config import BehaviourSettings
from mlwaf.datasets import csic_split
from mlwaf.evaluate import one_cpu
from mlwaf.request import from_wire

ROOT = Path(__file__).resolve().parents[1]


def traffic(site: tuple, sessions: int, seed: int) -> list[dict]:
    """One hour of normal browsing with attacks started at known times inside it."""
    records = list(Generator(site, seed=seed).normal(sessions, duration=3600))
    runs = [
        lambda g: g.flood(seconds=20, rate=100),
        lambda g: g.flood(seconds=20, rate=20),
        lambda g: g.distributed(seconds=30, sources=60, rate=3),
        lambda g: g.crawler(120, interval=1.0),
    ]
    runs += [lambda g: g.scanner(60)] * 20 + [lambda g: g.stuffing(60)] * 20
    for number, make in enumerate(runs):
        generator = Generator(site, seed=seed * 1000 + number, start=1_800_000_000.0 + 120 + number * 80)
        for record in make(generator):
            record["session"] = f"{record['session']}-{number}"  # distributed: one session per source
            records.append(record)
    return sorted(records, key=lambda r: r["ts"])


def replay(records: list[dict]) -> dict[str, list[tuple[float, int, int]]]:
    """(ts, status answered, index in session) per session; status 0 = let through."""
    engine = Behaviour(BehaviourSettings(enabled=True, max_clients=200_000))
    seen: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
    for record in records:
        request = from_wire(record)
        judgement = engine.judge(request, request.ts or 0.0)
        session = seen[record["session"]]
        session.append((record["ts"], judgement.status, len(session)))
        if record.get("status"):
            engine.report_status(request.client_ip, request.id, record["status"], request.headers.get("User-Agent", ""))
    return seen


_ILIOU_LINE = re.compile(r'\[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" (\S+) "([^"]*)"')


def iliou(data: Path) -> dict[str, tuple[int, int]] | None:
    """The Iliou et al. web bot sessions (humans, moderate and advanced bots), each replayed
    as its own client: {label: (sessions flagged, sessions)}. Flagged: a finding at the
    confidence threshold or a ban at any point. Labels come from the log files (the copy
    lacks most of the annotated test sessions; the heuristics learned from none of them).
    None when the dataset is not there."""
    root = data / "webbot-iliou" / "phase1" / "data" / "web_logs"
    if not root.is_dir():
        return None
    label_of = {"access_moderate_bots.log": "moderate_bot", "access_advanced_bots.log": "advanced_bot"}
    sessions: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(root.glob("*/*.log")):
        label = label_of.get(path.name, "human")
        for line in path.read_text(errors="replace").splitlines():
            match = _ILIOU_LINE.search(line)
            if match and match.group(5) != "-":
                when = datetime.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
                sessions[label, match.group(5)].append(
                    {"method": match.group(2), "path": match.group(3), "status": int(match.group(4)),
                     "headers": {"User-Agent": match.group(6)}, "ts": when, "client_ip": match.group(5)}
                )  # fmt: skip
    engine = Behaviour(BehaviourSettings(enabled=True))
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (label, session), requests in sessions.items():
        flagged = False
        for number, record in enumerate(sorted(requests, key=lambda r: r["ts"])):
            request = from_wire({**record, "id": f"{session}-{number}"})
            judgement = engine.judge(request, record["ts"])
            findings = judgement.findings
            flagged |= bool(judgement.status) or bool(findings and findings[0].score >= engine.policy.confidence)
            engine.report_status(session, request.id, record["status"])
        tally[label][0] += int(flagged)
        tally[label][1] += 1
    return {label: (flagged, total) for label, (flagged, total) in tally.items()}


def distributed(seen: dict[str, list[tuple[float, int, int]]]) -> tuple[tuple[str, str, str], float | None, int]:
    """The distributed flood: one attack from many sessions (one per source)."""
    sources = [s for name, s in seen.items() if name.startswith("distributed")]
    start = min(s[0][0] for s in sources)
    blocked = [ts for s in sources for ts, status, _ in s if status]
    caught = sum(1 for s in sources if any(status for _, status, _ in s))
    shown = (
        f"first source blocked {min(blocked) - start:.2f} s after the start; {caught} of {len(sources)} sources "
        f"blocked, {len(blocked)} of {sum(len(s) for s in sources)} requests answered 429"
        if blocked
        else "not detected"
    )
    row = (f"distributed flood ({len(sources)} sources)", shown, "<= 10 s")
    return row, (min(blocked) - start if blocked else None), caught


def iliou_rows(bots: dict[str, tuple[int, int]]) -> list[tuple[str, str, str]]:
    targets = {"moderate_bot": ">= 90% of bots", "advanced_bot": ">= 90% of bots", "human": "<= 1%"}
    return [
        (f"Iliou sessions: {label.replace('_', ' ')}s flagged", f"{bots[label][0]} of {bots[label][1]}", target)
        for label, target in targets.items()
        if label in bots
    ]


def cost(clients: int = 100_000, requests: int = 50_000) -> dict[str, float]:
    """Microseconds per request of tracker update plus features, with ``clients`` tracked, one CPU."""
    with one_cpu():
        tracker = LocalTracker(max_clients=clients * 5 // 4)
        t0 = 1_800_000_000.0
        names = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(clients)]
        for i, name in enumerate(names):  # every client has a few requests already
            for k in range(5):
                tracker.record(name, Event(t0 + i * 1e-4 + k, "GET", f"/p{k}", ("q",), "ua", 0, False, "/p?q=a"))
        now = t0 + 30
        results = {}
        for label, pick in (
            ("typical client", lambda i: names[(i * 7919) % clients]),
            ("one busy client", lambda i: names[0]),
        ):
            started = time.perf_counter()
            for i in range(requests):
                event = Event(
                    now + i * 1e-4, "GET", f"/p{i % 9}", ("q", "page"), "Mozilla/5.0", 1, False, "/p?q=a&page=9"
                )
                history = tracker.record(pick(i), event)
                compute(history, event.ts)
            results[label] = (time.perf_counter() - started) / requests * 1e6
        results["tracked clients"] = tracker.clients(now + i * 1e-4)
        results["bytes per client"] = bytes_per_client(tracker.depth)
        results["memory MB"] = tracker.memory_bytes / 1e6
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    data = Path(args.data)
    site = site_from_requests(csic_split(data)[0]) if (data / "csic2010").is_dir() else DEMO_SITE
    records = traffic(site, args.sessions, args.seed)
    started = time.perf_counter()
    seen = replay(records)
    took = time.perf_counter() - started

    def first_block(session: list[tuple[float, int, int]]) -> tuple[float, int] | None:
        hits = [(ts - session[0][0], index) for ts, status, index in session if status]
        return hits[0] if hits else None

    normal = [s for name, s in seen.items() if name.startswith("normal")]
    falsely = sum(1 for s in normal if first_block(s) is not None)
    rows = [("normal sessions blocked", f"{falsely} of {len(normal):,}", "0")]
    results: dict[str, object] = {"sessions": len(normal), "normal_sessions_blocked": falsely}
    if any(name.startswith("distributed") for name in seen):
        row, first, caught = distributed(seen)
        rows.append(row)
        results["distributed_first_block_s"], results["distributed_sources_blocked"] = first, caught
    for name, session in sorted(seen.items()):
        kind = name.split("-")[0]
        if kind in ("normal", "scanner", "stuffing", "distributed"):
            continue
        hit = first_block(session)
        shown = f"after {hit[0]:.2f} s ({hit[1] + 1} requests)" if hit else f"not blocked ({len(session)} requests)"
        rows.append((name, shown, {"flood": "<= 2 s"}.get(kind, "-")))
        results[name] = hit[0] if hit else None
    for kind, target in (("scanner", "<= 20 requests"), ("stuffing", "<= 20 requests")):
        counts = [first_block(s) for n, s in seen.items() if n.startswith(kind)]
        caught = [c[1] + 1 for c in counts if c]
        worst = max(caught) if caught else None
        rows.append((f"{kind} (20 runs)", f"{len(caught)} caught, after {min(caught)}-{worst} requests", target))
        results[f"{kind}_requests_to_block_max"] = worst
        results[f"{kind}_caught"] = len(caught)
    bots = iliou(data)
    if bots is not None:
        rows += iliou_rows(bots)
        results["iliou"] = bots
    speed = cost()
    results["cost"] = speed
    lines = [
        f"Behavioural layer, profile production: {len(records):,} requests replayed in {took:.1f} s "
        f"({len(records) / took:,.0f}/s, one process), site: {'CSIC 2010' if site is not DEMO_SITE else 'demo'}.",
        "",
        "| traffic | result | target |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
        "Tracker update plus features, one CPU, 100,000 clients tracked:",
        "",
        "| measure | value |",
        "|---|---|",
        f"| per request, typical client (5-15 requests in its history) | {speed['typical client']:.1f} us |",
        f"| per request, one busy client (full 50-request history) | {speed['one busy client']:.1f} us |",
        f"| memory per client (history 50) | {speed['bytes per client']:,} bytes |",
        f"| shared memory for the cap ({speed['tracked clients']:,} clients tracked) | {speed['memory MB']:.0f} MB |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench"
    out.mkdir(exist_ok=True)
    (out / "behaviour.md").write_text(text, encoding="utf-8")
    (out / "behaviour.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
