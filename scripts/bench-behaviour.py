#!/usr/bin/env python3
"""The behavioural layer against its targets: how fast attacks are caught, how often people are.

    .venv/bin/python scripts/bench-behaviour.py [--data ../shared/datasets] [--sessions 10000]

Replays `mlwaf simulate` traffic through the behavioural engine the daemon runs
(`mlwaf.behaviour.engine.Behaviour`, profile production; the attack model is
left out: it does not change these verdicts), everything in one timeline:
normal browsing sessions (the site built from CSIC 2010's requests when the
datasets are there, else the demo site), and amid them single-source floods,
a distributed flood, scanners, credential stuffing, crawlers and a scripted
browser. Then real logs, each session its own client: the bot and human
sessions of the Iliou et al. logs and three vulnerability scanners. All of
it twice: with the heuristics alone (what blocks by default: the model's
findings are only logged), and with the flood/bot model blocking as well
(``--model``, default files/models/flood.json, ``model_action`` block). Then times the tracker
update plus features per request with 100,000 clients tracked, and the
model, on one CPU. Writes bench/behaviour.md and bench/behaviour.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from mlwaf.behaviour.engine import ASSET, Behaviour
from mlwaf.behaviour.features import compute
from mlwaf.behaviour.model import WindowModel, load_window_model
from mlwaf.behaviour.tracker import Event, LocalTracker, bytes_per_client
from mlwaf.config import BehaviourSettings
from mlwaf.request import RequestError, from_wire
from mlwaf.training.datasets import csic_split
from mlwaf.training.evaluate import one_cpu
from mlwaf.training.reallogs import annotated_training, iliou, scanners
from mlwaf.training.simulate import DEMO_SITE, Generator, site_from_requests

ROOT = Path(__file__).resolve().parents[1]


def traffic(site: tuple, sessions: int, seed: int) -> list[dict]:
    """One hour of normal browsing with attacks started at known times inside it."""
    records = list(Generator(site, seed=seed).normal(sessions, duration=3600))
    runs = [
        lambda g: g.flood(seconds=20, rate=100),
        lambda g: g.flood(seconds=20, rate=20),
        lambda g: g.distributed(seconds=30, sources=60, rate=3),
        lambda g: g.crawler(120, interval=1.0),
        lambda g: g.crawler(120, interval=3.0, jitter=0.2),
        lambda g: g.headless(40, wait=(2.0, 6.0)),
    ]
    runs += [lambda g: g.scanner(60)] * 20 + [lambda g: g.stuffing(60)] * 20
    for number, make in enumerate(runs):
        generator = Generator(site, seed=seed * 1000 + number, start=1_800_000_000.0 + 120 + number * 80)
        for record in make(generator):
            record["session"] = f"{record['session']}-{number}"  # distributed: one session per source
            records.append(record)
    return sorted(records, key=lambda r: r["ts"])


def replay(records: list[dict], settings: BehaviourSettings) -> dict[str, list[tuple[float, int, int]]]:
    """(ts, status answered, index in session) per session; status 0 = let through."""
    engine = Behaviour(settings)
    seen: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
    for record in records:
        request = from_wire(record)
        judgement = engine.judge(request, request.ts or 0.0)
        session = seen[record["session"]]
        session.append((record["ts"], judgement.status, len(session)))
        if record.get("status"):
            engine.report_status(request.client_ip, request.id, record["status"], request.headers.get("user-agent", ""))
    return seen


def real_sessions(data: Path, settings: BehaviourSettings) -> dict[str, tuple[int, int, list[int]]]:
    """Real logs, each session its own client (``mlwaf.training.reallogs``): the Iliou et al.
    web bot sessions (humans, moderate and advanced bots; labels from the log files) and the
    three scanners' logs. {label: (sessions flagged, sessions, requests until flagged)}.
    Flagged: a finding at the confidence threshold or a ban at any point."""
    sessions = {**iliou(data), **scanners(data)}
    engine = Behaviour(settings)
    tally: dict[str, tuple[int, int, list[int]]] = {}
    for (label, session), records in sessions.items():
        flagged = 0
        for number, record in enumerate(records):
            try:
                request = from_wire({**record, "client_ip": session})
            except RequestError:
                continue
            judgement = engine.judge(request, record["ts"])
            findings = judgement.findings
            if not flagged and (judgement.status or (findings and findings[0].score >= engine.policy.confidence)):
                flagged = number + 1
            engine.report_status(session, request.id, record["status"])
        caught, total, when = tally.get(label, (0, 0, []))
        tally[label] = (caught + bool(flagged), total + 1, when + ([flagged] if flagged else []))
    return tally


def session_features(records: list[dict]) -> list[float]:
    """What a whole Iliou session's log lines say, beyond the tracker's window: requests,
    page views and their pace, gaps between page views (median, spread, share under 2 s),
    mouse-tracking posts per page, revisits, path depth, asset and error shares."""
    pages = [r for r in records if r["method"] == "GET" and not ASSET.search(r["path"])]
    gaps = np.diff([r["ts"] for r in pages]) if len(pages) > 1 else np.zeros(1)
    minutes = (records[-1]["ts"] - records[0]["ts"] + 1) / 60
    paths = [r["path"] for r in pages]
    share = max(len(pages), 1)
    return [
        len(records),
        len(pages),
        len(pages) / minutes,
        sum(r["method"] == "POST" for r in records) / share,
        float(np.median(gaps)),
        float(gaps.std() / gaps.mean()) if gaps.mean() > 0 else 0.0,
        float((gaps < 2).mean()),
        1 - len(set(paths)) / share,
        float(np.mean([p.count("/") for p in paths])) if paths else 0.0,
        (len(records) - len(pages)) / len(records),
        sum(r["status"] >= 400 for r in records) / len(records),
    ]


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    return float(wins / (len(positive) * len(negative)))


def session_probe(data: Path) -> dict[str, dict[str, float]]:
    """How far the Iliou logs separate bots from people at all: a class-balanced logistic
    regression on whole-session features (``session_features``), fitted on the sessions
    the dataset's annotations put on the training side and scored on all the others.
    Per bot kind: AUC, and the share of its sessions scored above every held-back person."""
    sessions, trained_on = iliou(data), annotated_training(data)
    if not sessions:
        return {}
    keys = sorted(sessions)
    x = np.log1p(np.array([session_features(sessions[k]) for k in keys]))
    bot = np.array([label != "human" for label, _ in keys], dtype=float)
    train = np.array([session in trained_on for _, session in keys])
    mean, spread = x[train].mean(0), x[train].std(0) + 1e-9
    x = (x - mean) / spread
    weight = np.where(bot[train] == 1, 0.5 / bot[train].mean(), 0.5 / (1 - bot[train].mean()))
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(5000):
        error = weight * (1 / (1 + np.exp(-(x[train] @ w + b))) - bot[train])
        w -= 0.05 * (x[train].T @ error / train.sum() + 0.01 * w)
        b -= 0.05 * error.mean()
    score = x @ w + b
    people = score[~train & (bot == 0)]
    out = {}
    for kind in ("moderate_bot", "advanced_bot"):
        of_kind = np.array([label == kind for label, _ in keys])
        held = score[~train & of_kind]
        out[kind] = {
            "auc_fitted": auc(score[train & of_kind], score[train & (bot == 0)]),
            "auc": auc(held, people),
            "recall_at_no_person": float((held > people.max()).mean()),
            "sessions": len(held),
            "people": len(people),
            "trained_on": int((train & of_kind).sum()),
        }
    return out


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


def real_rows(real: dict[str, tuple[int, int, list[int]]]) -> list[tuple[str, str, str]]:
    targets = {
        "moderate_bot": ("Iliou moderate bot sessions flagged", ">= 90%"),
        "advanced_bot": ("Iliou advanced bot sessions flagged", ">= 90%"),
        "human": ("Iliou human sessions flagged", "<= 1%"),
        "scanner": ("real scanner logs (Acunetix, Netsparker, w3af) flagged", "-"),
    }
    rows = []
    for label, (name, target) in targets.items():
        if label in real:
            caught, total, when = real[label]
            after = f", after {min(when)}-{max(when)} requests" if when and label == "scanner" else ""
            rows.append((name, f"{caught} of {total}{after}", target))
    return rows


def cost(model: WindowModel, clients: int = 100_000, requests: int = 50_000) -> dict[str, float]:
    """Microseconds per request of tracker update plus features, with ``clients`` tracked, and
    of the flood/bot model, one CPU."""
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
        features = compute(history, event.ts)
        started = time.perf_counter()
        for _ in range(requests // 5):
            model.finding(features)
        results["model"] = (time.perf_counter() - started) / (requests // 5) * 1e6
        results["tracked clients"] = tracker.clients(now + i * 1e-4)
        results["bytes per client"] = bytes_per_client(tracker.depth)
        results["memory MB"] = tracker.memory_bytes / 1e6
        return results


def first_block(session: list[tuple[float, int, int]]) -> tuple[float, int] | None:
    hits = [(ts - session[0][0], index) for ts, status, index in session if status]
    return hits[0] if hits else None


def measure(records: list[dict], data: Path, settings: BehaviourSettings) -> tuple[list[tuple], dict, float]:
    """Rows (traffic, result, target), the same as numbers, and the replay's seconds."""
    started = time.perf_counter()
    seen = replay(records, settings)
    took = time.perf_counter() - started
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
        shown = f"{len(caught)} caught, after {min(caught)}-{worst} requests" if caught else "none caught"
        rows.append((f"{kind} (20 runs)", shown, target))
        results[f"{kind}_requests_to_block_max"] = worst
        results[f"{kind}_caught"] = len(caught)
    real = real_sessions(data, settings)
    rows += real_rows(real)
    results["real"] = {label: {"flagged": c, "sessions": t} for label, (c, t, _) in real.items()}
    return rows, results, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--model", default=str(ROOT / "files" / "models" / "flood.json"), help="the flood/bot model")
    args = parser.parse_args()

    data = Path(args.data)
    site = site_from_requests(csic_split(data)[0]) if (data / "csic2010").is_dir() else DEMO_SITE
    records = traffic(site, args.sessions, args.seed)
    plain = BehaviourSettings(enabled=True, max_clients=200_000)
    with_model = replace(plain, model=args.model, model_action="block")
    rows, results, took = measure(records, data, plain)
    model_rows, model_results, model_took = measure(records, data, with_model)
    speed = cost(load_window_model(args.model))
    probe = session_probe(data)
    results = {"heuristics": results, "heuristics+model": model_results, "cost": speed, "iliou_probe": probe}
    lines = [
        f"Behavioural layer, profile production: {len(records):,} requests replayed in {took:.1f} s "
        f"({len(records) / took:,.0f}/s, one process; {model_took:.1f} s with the flood/bot model), "
        f"site: {'CSIC 2010' if site is not DEMO_SITE else 'demo'}.",
        "",
        "| traffic | heuristics (the default) | heuristics + flood/bot model blocking | target |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {m[1]} | {c} |" for (a, b, c), m in zip(rows, model_rows, strict=True)),
        "",
        "Tracker update plus features, one CPU, 100,000 clients tracked:",
        "",
        "| measure | value |",
        "|---|---|",
        f"| per request, typical client (5-15 requests in its history) | {speed['typical client']:.1f} us |",
        f"| per request, one busy client (full 50-request history) | {speed['one busy client']:.1f} us |",
        f"| flood/bot model, per request (LiteRT int8, one client) | {speed['model']:.1f} us |",
        f"| memory per client (history 50) | {speed['bytes per client']:,} bytes |",
        f"| shared memory for the cap ({speed['tracked clients']:,} clients tracked) | {speed['memory MB']:.0f} MB |",
    ]
    if probe:
        humans = next(iter(probe.values()))["people"]
        lines += [
            "",
            "How far the Iliou web logs tell bots from people at all: a logistic regression on whole-session",
            "features (more than the tracker's window holds), fitted on the sessions the dataset's annotations",
            f"put on the training side, scored on the rest ({humans} people):",
            "",
            "| bot sessions held back | AUC, training side | AUC, held back | above every held-back person |",
            "|---|---|---|---|",
            *(
                f"| {kind.replace('_', ' ')} ({p['sessions']}; {p['trained_on']} trained on) | {p['auc_fitted']:.2f} "
                f"| {p['auc']:.2f} "
                f"| {p['recall_at_no_person']:.0%} |"
                for kind, p in probe.items()
            ),
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
