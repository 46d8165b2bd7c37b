#!/usr/bin/env python3
"""Detection through the live appliance: CRS PL1, CRS PL2, ML, CRS PL1 + ML (as shipped, and CRS first), side by side.

    .venv/bin/python scripts/evaluate-appliance.py [--data ../shared/datasets] [--scenario default]

The Molecule scenario's host must be up (`molecule converge -s default`). For
each stack the playbook is converged again with the stack's variables, then
every labelled test value (as `GET /search.php?q=...`) and every test request
(CSIC 2010's held-back normal requests, copies of them carrying each test
attack, and tampered copies, replayed with their method, path, arguments and
cookies), and a sample of the real-traffic requests of the held-back sources
(replayed with their own method, headers and body) goes through
Apache on loopback; a 403 counts as blocked. The offline detectors (the model
as `mlwaf evaluate` runs it, and libinjection) join the same table. The host is
converged back to the default stack at the end.

Writes bench/detection-appliance.md, .json and .png.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

from mlwaf.config import ProfileSettings
from mlwaf.model import load_model
from mlwaf.training import acceptance
from mlwaf.training.datasets import FAMILIES
from mlwaf.training.evaluate import (
    Detector,
    EvaluationError,
    Item,
    ScoredRequest,
    appliance_detector,
    chart,
    evaluate,
    libinjection_detector,
    markdown,
    model_detector,
    overall,
    profile_detector,
    profile_items,
    real_items,
    test_items,
)

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_appliance", ROOT / "scripts" / "bench-appliance.py")
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bench_appliance"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)  # type: ignore[union-attr]

STACKS: dict[str, dict[str, object]] = {
    "crs-pl1": {"ml_analyzer_enabled": False, "modsecurity_crs_paranoia_level": 1},
    "crs-pl2": {"ml_analyzer_enabled": False, "modsecurity_crs_paranoia_level": 2},
    "ml": {"modsecurity_crs_enabled": False},
    # as shipped: CRS's verdict on the families the model judges needs the model's agreement
    "crs-pl1+ml": {"modsecurity_crs_paranoia_level": 1},
    # CRS blocks on its own first, the model judges what CRS passed
    "crs-then-ml": {"modsecurity_crs_paranoia_level": 1, "ml_analyzer_crs_arbitration": False},
}


def real_sample(data: Path, per_source: int, seed: int) -> list[ScoredRequest]:
    """Up to ``per_source`` held-back real requests of each source, drawn with ``seed``."""
    by_source: dict[str, list[ScoredRequest]] = {}
    for item in real_items(data):
        by_source.setdefault(item.source, []).append(item)
    rng = random.Random(seed)
    out: list[ScoredRequest] = []
    for source in sorted(by_source):
        items = by_source[source]
        out += rng.sample(items, per_source) if len(items) > per_source else items
    return out


def run_stacks(
    args: argparse.Namespace, items: dict[str, list[Item]]
) -> tuple[dict[str, dict[str, list[bool]]], dict[str, int]]:
    """Converge each stack, send every item set through it; its verdicts per set and how many
    requests the analyzer left unscored. The host ends on the default stack."""
    decided: dict[str, dict[str, list[bool]]] = {}
    fallbacks: dict[str, int] = {}
    target = bench.Host(*bench.host(args.scenario))

    def fallback_lines() -> int:
        return int(target.run(f"cat {bench.FALLBACK_LOG} 2>/dev/null | wc -l").strip() or 0)

    log = ROOT / "bench" / "converge.log"
    log.parent.mkdir(exist_ok=True)
    try:
        for name, extra in STACKS.items():
            took = bench.converge(args.scenario, extra, log)
            started, before = time.monotonic(), fallback_lines()
            send = appliance_detector(args.url, args.host_header)
            decided[name] = {unit: send(batch) for unit, batch in items.items()}
            fallbacks[name] = fallback_lines() - before
            count = sum(len(batch) for batch in items.values())
            print(
                f"{name}: converged in {took:.0f} s, {count} requests in {time.monotonic() - started:.0f} s, "
                f"{fallbacks[name]} not scored by the model (analyzer fallbacks)"
            )
    finally:
        bench.converge(args.scenario, {}, log)
    return decided, fallbacks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--url", default="http://127.0.0.1", help="the appliance as this machine reaches it")
    parser.add_argument("--host-header", default="mlwaf.test")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--real-per-source", type=int, default=2000, help="real requests replayed per source")
    args = parser.parse_args()

    values, requests, _ = test_items(Path(args.data), args.seed)
    real = real_sample(Path(args.data), args.real_per_source, args.seed)
    # CSIC's held-back normal requests and a tampered copy of each: what signatures make of
    # the application profile's cases (the profile itself runs offline, learned from CSIC)
    profile, profile_requests = profile_items(Path(args.data), args.seed)
    tampered = [item for item in profile_requests if item.family == "tampered"]
    model = load_model(ROOT / "files" / "models" / "attack.json")
    offline = {"mlwaf (offline)": model_detector(model), "libinjection": libinjection_detector()}
    decided, fallbacks = run_stacks(
        args, {"values": values, "requests": requests, "tampered": tampered, "real": list(real)}
    )

    def replay(name: str, unit: str) -> Detector:
        return lambda items: decided[name][unit]

    out = ROOT / "bench"
    summary: dict[str, object] = {"model": model.version, "stacks": STACKS, "fallbacks": fallbacks}
    report = [
        f"Model {model.version}; appliance stacks: {', '.join(STACKS)} (a 403 is a block). "
        f"Requests the analyzer did not answer in time (fallbacks): {fallbacks}.\n"
    ]
    goals: list[acceptance.Target] = []
    for unit, items, picture in (
        ("requests", requests, "detection-appliance.png"),
        ("values", values, "detection-appliance-values.png"),
    ):
        detectors = {**offline, **{name: replay(name, unit) for name in decided}}
        result = evaluate(items, detectors)
        report.append(markdown(result, unit))
        # the "better than CRS PL1 on detection and false positives", through the appliance
        compared = FAMILIES if unit == "requests" else ("benign",)
        goals += acceptance.better_than(result, "ml", "crs-pl1", compared, unit)
        summary[f"per_{unit.rstrip('s')}"] = overall(result)
        chart(result, out / picture, unit)
    # real traffic of the held-back sources, replayed as recorded
    result = evaluate(real, {"mlwaf (offline)": offline["mlwaf (offline)"], **{n: replay(n, "real") for n in decided}})
    report.append(
        f"Real traffic: up to {args.real_per_source:,} requests of each held-back source (mlwaf.training.traffic), "
        "replayed with their own method, headers and body:\n\n" + markdown(result, "requests", ("benign",))
    )
    goals += acceptance.false_positives_per_source(result, "crs-pl1+ml")
    summary["real_traffic"] = {
        name: {source: cells[name].rate for (source, _), cells in sorted(result.by_source.items())}
        for name in result.detectors
    }
    # test_items puts the held-back normal requests first
    benign = [item for item in requests if item.family == "benign"]

    def with_tampered(name: str) -> Detector:
        return lambda items: decided[name]["requests"][: len(benign)] + decided[name]["tampered"]

    detectors = {
        "profile (offline)": profile_detector(profile, ProfileSettings.block_threshold),
        **offline,
        **{name: with_tampered(name) for name in decided},
    }
    families = ("benign", "tampered")
    result = evaluate(benign + tampered, detectors)
    report.append("Tampered requests (the application profile's test):\n\n" + markdown(result, "requests", families))
    summary["tampered"] = overall(result, families)
    report.append(acceptance.markdown(goals))
    summary["targets"] = acceptance.summary(goals)
    text = "\n".join(report)
    print(text)
    (out / "detection-appliance.md").write_text(text, encoding="utf-8")
    (out / "detection-appliance.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}/detection-appliance.md, .json and two PNG charts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (EvaluationError, bench.BenchError) as exc:
        print(f"evaluate-appliance: {exc}", file=sys.stderr)
        sys.exit(1)
