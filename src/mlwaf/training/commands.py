"""The commands that make and judge models: ``mlwaf train``, ``mlwaf evaluate``, ``mlwaf simulate``.

Loaded only when one of them runs (``mlwaf.training.cli`` declares their options), so
the analyzer's own commands never import the training side.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from mlwaf.config import ConfigError, ProfileSettings
from mlwaf.model import FAMILIES, load_model
from mlwaf.protocol import encode_line
from mlwaf.training import acceptance
from mlwaf.training.cli import NETWORK_EPOCHS, NETWORK_MEMBERS
from mlwaf.training.datasets import DatasetError, csic_split, extra_samples
from mlwaf.training.evaluate import (
    Cell,
    Detector,
    EvaluationError,
    LabelledRequest,
    Result,
    agent_detector,
    agent_items,
    chart,
    evaluate,
    inference_ms,
    libinjection_detector,
    markdown,
    model_detector,
    overall,
    part_rates,
    placement_items,
    profile_detector,
    profile_items,
    real_items,
    real_site_paths,
    test_items,
)
from mlwaf.training.simulate import DEMO_SITE, SCENARIOS, Generator, SimulationError, drive, site_from_requests

ERRORS: tuple[type[Exception], ...] = (DatasetError, EvaluationError, SimulationError)  # usage errors: exit 2


def _datasets(folder: str) -> Path:
    """The labelled datasets folder (the project's shared/datasets), checked."""
    data = Path(folder)
    if not (data / "httpparams").is_dir():
        raise ConfigError(f"{data} does not look like the datasets folder (no httpparams/ inside)")
    return data


def _with_progress(label: str, work: Callable[[Callable[[int, int], None]], dict]) -> dict:
    """Run ``work(progress)`` under a progress bar; its result."""
    from rich.progress import Progress  # noqa: PLC0415 - only training needs it

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def cmd_train(args: argparse.Namespace) -> int:
    if args.kind == "flood":
        return _train_flood(args)

    data = _datasets(args.data)  # checked before TensorFlow takes seconds to load
    from mlwaf.training.neural import NetworkSettings  # noqa: PLC0415 - TensorFlow: training only
    from mlwaf.training.train import TrainSettings, recalibrate, train_attack  # noqa: PLC0415

    if args.recalibrate:
        meta = recalibrate(data, Path(args.out) / "attack.json")
    else:
        extra = [sample for path in args.extra for sample in extra_samples(Path(path))]
        network = NetworkSettings(epochs=args.epochs or NETWORK_EPOCHS, seed=args.seed)
        settings = TrainSettings(network=network, members=args.members or NETWORK_MEMBERS)
        meta = _with_progress(
            "training attack model", lambda progress: train_attack(data, Path(args.out), settings, progress, extra)
        )
    files = ", ".join(f"{name} ({meta['bytes'][name] / 1000:.0f} kB)" for name in meta["files"].values())
    print(f"wrote {args.out}: attack.json, {files} -- model {meta['version']}")
    for runtime, table in meta["test"].items():
        limits = meta["thresholds"][runtime]
        rates = ", ".join(
            f"{family} {'FPR' if 'fpr' in row else 'TPR'} {100 * row.get('fpr', row.get('tpr', 0)):.2f}%"
            for family, row in table.items()
        )
        print(f"  {runtime:12s} block >= {limits['block']}: {rates}")
    return 0


def _train_flood(args: argparse.Namespace) -> int:
    if args.extra or args.members or args.recalibrate:
        raise ConfigError("--extra, --members and --recalibrate are for the attack model only")
    data = _datasets(args.data)
    from mlwaf.training.flood import FloodSettings, train_flood  # noqa: PLC0415 - TensorFlow: training only

    settings = FloodSettings(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    meta = _with_progress(
        "generating traffic, training the flood/bot model",
        lambda progress: train_flood(data, Path(args.out), settings, progress),
    )
    files = ", ".join(f"{name} ({meta['bytes'][name] / 1000:.0f} kB)" for name in meta["files"].values())
    print(f"wrote {args.out}: flood.json, {files} -- model {meta['version']}, {meta['training']['rows']:,} rows")
    for runtime, limits in meta["thresholds"].items():
        print(f"  {runtime} (block >= {limits['block']}), sessions flagged:")
        tables = {"generated test": meta["test"][runtime], **meta["real"][runtime]}
        for source, table in tables.items():
            shown = ", ".join(f"{name} {row['flagged']}/{row['sessions']}" for name, row in table.items())
            print(f"    {source}: {shown}")
    return 0


PLACED_PER_FAMILY = 500  # test attacks per family placed in every part of a request


def _rate_text(cell: Cell) -> str:
    return f"TPR {100 * cell.rate:.2f}% ({cell.blocked:,}/{cell.n:,})"


def cmd_evaluate(args: argparse.Namespace) -> int:
    data = _datasets(args.data)
    model = load_model(args.model, args.runtime)
    detectors: dict[str, Detector] = {"mlwaf": model_detector(model)}
    if not args.no_libinjection:
        detectors["libinjection"] = libinjection_detector()
    test, requests, _ = test_items(data, args.seed)
    per_value, per_request = evaluate(test, detectors), evaluate(requests, detectors)
    real_requests = real_items(data)
    real = evaluate(real_requests, detectors)
    attacks = [s for s in test if s.family != "benign" and not s.source.startswith("generated")]
    placement = evaluate(placement_items(attacks, PLACED_PER_FAMILY, args.seed), {"mlwaf": detectors["mlwaf"]})
    parts = part_rates(placement, "mlwaf")
    milliseconds = inference_ms(model, real_requests)
    report = (
        f"Model {model.version}, runtime {args.runtime}: {milliseconds:.3f} ms of inference per request "
        f"(batches of 32 held-back real-traffic requests, every part read, one CPU, no cache).\n\n"
        "## Real traffic\n\nRequests of the real-traffic sources held back from training and calibration "
        "(mlwaf.training.traffic), read as the analyzer reads them (every part, unwrapped).\n\n"
        + markdown(real, "requests", ("benign",))
        + "\n## Where the attack sits\n\n"
        f"Up to {PLACED_PER_FAMILY} test attacks per family, each placed in every part of a request "
        "(mlwaf.training.placement); detection by the model.\n\n"
        + "| part | requests | mlwaf |\n|---|---:|---|\n"
        + "".join(f"| {part} | {cell.n:,} | {_rate_text(cell)} |\n" for part, cell in parts.items())
        + "\n## CSIC requests and the test values\n\n"
        + markdown(per_request, "requests")
        + "\n"
        + markdown(per_value, "values")
    )
    agents = evaluate(agent_items(data, test, args.seed), {**detectors, "mlwaf": agent_detector(model)})
    report += (
        "\n## User-Agent header\n\nReal visitors' User-Agents (CSIC 2010, Iliou logs), generated ones training "
        "never drew, and the test attacks sent as a User-Agent; mlwaf reads the header as the analyzer does "
        "(a plain browser or tool string is not scored).\n\n" + markdown(agents, "values")
    )
    profile_report, profile_rates, profile_result = _evaluate_profile(data, args.seed, detectors)
    goals = [
        *acceptance.false_positives_per_source(real, "mlwaf"),
        *acceptance.detection(per_request, "mlwaf"),
        *acceptance.placement(parts),
        acceptance.false_positives(per_request, "mlwaf", name="CSIC benign requests blocked"),
        *acceptance.detection(profile_result, "profile", {"tampered": acceptance.PROFILE_MIN_DETECTION}),
        acceptance.false_positives(
            profile_result, "profile", name="benign requests blocked by the application profile"
        ),
    ]
    if "libinjection" in detectors:
        goals += acceptance.better_than(per_request, "mlwaf", "libinjection", FAMILIES, "requests")
    goals.append(acceptance.inference(milliseconds))
    report += "\n" + profile_report + "\n" + acceptance.markdown(goals)
    print(report, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "detection.md").write_text(report, encoding="utf-8")
        summary = {
            "model": model.version,
            "runtime": args.runtime,
            "inference_ms_per_request": round(milliseconds, 4),
            "requests": len(requests),
            "values": len(test),
            "real_traffic": {source: cells["mlwaf"].rate for (source, _), cells in sorted(real.by_source.items())},
            "parts": {part: cell.rate for part, cell in parts.items()},
            "per_request": overall(per_request),
            "per_value": overall(per_value),
            "user_agent": overall(agents),
            "profile": profile_rates,
            "targets": acceptance.summary(goals),
        }
        (out / "detection.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        chart(per_request, out / "detection.png", "requests")
        chart(per_value, out / "detection-values.png", "values")
        print(f"wrote {out}/detection.md, detection.json, detection.png and detection-values.png", file=sys.stderr)
    return 0


def _evaluate_profile(data: Path, seed: int, detectors: dict[str, Detector]) -> tuple[str, dict[str, object], Result]:
    """The application profile on the example site (CSIC) next to the other detectors, and a
    real site's paths; markdown, machine-readable rates and the example site's counts."""
    threshold = ProfileSettings.block_threshold
    profile, items = profile_items(data, seed)
    result = evaluate(items, {"profile": profile_detector(profile, threshold), **detectors})
    families = ("benign", "tampered")
    lines = [
        f"## Application profile (block >= {threshold})",
        "",
        f"Learned from CSIC's {profile.requests:,} training-side normal requests ({len(profile.endpoints)} endpoints); "
        "tested on the held-back normal requests and a tampered copy of each.",
        "",
        markdown(result, "requests", families),
    ]
    rates: dict[str, object] = {"threshold": threshold, "csic": overall(result, families)}
    site = real_site_paths(data)
    if site is not None:
        site_profile, site_requests = site
        site_items = [LabelledRequest(r, "benign", "iliou-humans-day3") for r in site_requests]
        flagged = profile_detector(site_profile, threshold)(site_items)
        fpr = sum(flagged) / len(flagged)
        lines += [
            f"Real site, paths and methods only (Iliou human visitors: learned from {site_profile.requests:,} "
            f"requests of two logs, tested on {len(flagged):,} of a third): FPR {100 * fpr:.2f}% ({sum(flagged)})",
            "",
        ]
        rates["real_site_paths_fpr"] = round(fpr, 6)
    return "\n".join(lines), rates, result


def cmd_simulate(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.scenario) - set(SCENARIOS))
    if unknown:
        raise SimulationError(f"unknown scenario {', '.join(unknown)}; scenarios are {', '.join(SCENARIOS)}")
    site = DEMO_SITE
    if args.data:
        site = site_from_requests(csic_split(_datasets(args.data))[0])
    generator = Generator(site, seed=args.seed)
    records = [record for name in args.scenario for record in generator.scenario(name, args.count)]
    if args.url:
        outcome = drive(records, args.url, args.max_requests, args.max_seconds)
        statuses = ", ".join(
            f"{code}: {n} (first after {outcome.first[code]} s)" for code, n in sorted(outcome.statuses.items())
        )
        print(f"sent {outcome.sent} requests to {args.url}; {statuses}; {outcome.failed} failed")
        return 0
    sink: TextIO = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    with sink:
        for record in sorted(records, key=lambda r: r["ts"]):  # type: ignore[arg-type, return-value]
            sink.write(encode_line(record).decode("utf-8"))
    print(f"mlwaf: {len(records)} requests of {', '.join(args.scenario)}", file=sys.stderr)
    return 0
