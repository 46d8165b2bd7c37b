"""``mlwaf``: the analyzer's command line (serve, score, query, check, train, evaluate, learn, feedback;
and the operations commands of mlwaf.ops.commands: status, monitor, performance-check, report)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from mlwaf import __version__, targets
from mlwaf.behaviour.geo import GeoError
from mlwaf.behaviour.simulate import DEMO_SITE, Generator, SimulationError, drive, site_from_requests
from mlwaf.behaviour.simulate import SCENARIOS as SIMULATION_SCENARIOS
from mlwaf.config import (
    BEHAVIOUR_PROFILES,
    DEFAULT_CONFIG,
    ConfigError,
    ModelSettings,
    ProfileSettings,
    Settings,
    load,
)
from mlwaf.datasets import FAMILIES, DatasetError, csic_split, extra_samples
from mlwaf.decision import Analyzer
from mlwaf.evaluate import (
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
from mlwaf.feedback import FeedbackError, export
from mlwaf.learn import learn
from mlwaf.model import DEFAULT_RUNTIME, RUNTIMES, ModelError, load_model
from mlwaf.ops.commands import add_commands
from mlwaf.ops.logs import LogError
from mlwaf.ops.report import ReportError
from mlwaf.profile import ProfileError
from mlwaf.protocol import VERSION, Reply, encode_line, exchange
from mlwaf.request import Limits, Request, RequestError, from_wire
from mlwaf.server import safe_analyze, serve
from mlwaf.tuning.proposal import dump as dump_tuning
from mlwaf.tuning.proposal import load as load_tuning
from mlwaf.tuning.propose import Options as TuneOptions
from mlwaf.tuning.propose import propose
from mlwaf.tuning.record import RecordError

EXIT_USAGE, EXIT_UNAVAILABLE = 2, 3
NETWORK_EPOCHS = 12  # mlwaf.neural.NetworkSettings.epochs (not imported: TensorFlow loads slowly)
NETWORK_MEMBERS = 2  # mlwaf.train.TrainSettings.members


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from --config (or the default file), with --model and --mode on top."""
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    settings = load(path) if args.config or (DEFAULT_CONFIG.exists() and not args.model) else Settings()
    if args.model:
        models = {}
        for item in args.model:
            name, sep, model_path = item.partition("=")
            if not sep:
                name, model_path = Path(item).stem, item
            models[name] = ModelSettings(path=model_path)
        settings = Settings(**{**settings.__dict__, "models": models})
    if getattr(args, "models_dir", None):
        folder = Path(args.models_dir)
        moved = {name: replace(m, path=str(folder / Path(m.path).name)) for name, m in settings.models.items()}
        behaviour = settings.behaviour
        if behaviour.model:
            behaviour = replace(behaviour, model=str(folder / Path(behaviour.model).name))
        settings = Settings(**{**settings.__dict__, "models": moved, "behaviour": behaviour})
    if getattr(args, "mode", None):
        settings = Settings(**{**settings.__dict__, "mode": args.mode})
    if not settings.models:
        raise ConfigError(f"no model configured: pass --model PATH/attack.json or --config (default {DEFAULT_CONFIG})")
    return settings


def _datasets(folder: str) -> Path:
    """The labelled datasets folder (the project's shared/datasets), checked."""
    data = Path(folder)
    if not (data / "httpparams").is_dir():
        raise ConfigError(f"{data} does not look like the datasets folder (no httpparams/ inside)")
    return data


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    started = time.perf_counter()
    analyzer = Analyzer.from_settings(settings)
    for model in analyzer.models.values():
        model.warm_up()
    loaded = ", ".join(f"{n} {m.version}" for n, m in analyzer.models.items())
    if analyzer.behaviour is not None and analyzer.behaviour.model is not None:
        analyzer.behaviour.model.warm_up()
        loaded += f", flood/bot {analyzer.behaviour.model.version}"
    print(f"mlwaf: loaded {loaded} in {(time.perf_counter() - started) * 1000:.0f} ms", file=sys.stderr, flush=True)
    return serve(settings, analyzer)


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    analyzer = Analyzer.from_settings(settings)
    for name, model in analyzer.models.items():
        limits = analyzer.thresholds[name]
        print(
            f"model {name}: version {model.version}, runtime {settings.models[name].runtime}, "
            f"spec {model.metadata.get('spec')}, "
            f"families {','.join(model.families)}, block >= {limits.block:.4f}, log >= {limits.log:.4f}"
        )
    if analyzer.behaviour is not None and settings.behaviour.geoip_database:
        print(f"behaviour: client countries from {settings.behaviour.geoip_database}")
    flood = analyzer.behaviour.model if analyzer.behaviour is not None else None
    if flood is not None:
        print(
            f"behaviour model {settings.behaviour.model}: version {flood.version}, runtime "
            f"{settings.behaviour.model_runtime}, classes {','.join(flood.classes)}, block >= {flood.block:.4f}"
        )
    if analyzer.profile is not None:
        profile = settings.profile
        print(
            f"profile {profile.path}: {analyzer.profile.requests:,} requests learned, "
            f"{len(analyzer.profile.endpoints):,} endpoints; mode {profile.mode}, "
            f"block >= {profile.block_threshold:.2f}, log >= {profile.log_threshold:.2f}"
        )
    if settings.profile.observations:
        print(f"profile learning: observations of allowed requests go to {settings.profile.observations}")
    print(f"mode {settings.mode}, socket {settings.socket}, workers {settings.worker_count}: configuration OK")
    return 0


def _read(number: int, line: str, limits: Limits) -> tuple[dict, Request | None, str]:
    """One input line: its record, its request, or why it cannot be read."""
    record: object = None
    try:
        record = json.loads(line)
        request = from_wire(record, limits)
    except (ValueError, RecursionError, RequestError) as exc:
        return (record if isinstance(record, dict) else {}), None, f"line {number}: {exc}"
    assert isinstance(record, dict)  # from_wire accepted it
    return record, request, ""


def _output(record: dict, reply: Reply) -> dict[str, object]:
    out: dict[str, object] = {
        "id": record.get("id"),
        "verdict": reply.verdict,
        "scores": {name: round(value, 4) for name, value in reply.scores.items()},
        "reasons": [reason.as_dict() for reason in reply.reasons],
    }
    for key in ("status", "retry_after", "error"):
        if getattr(reply, key):
            out[key] = getattr(reply, key)
    return out


def score_lines(analyzer: Analyzer, lines: Iterable[str]) -> Iterator[tuple[dict[str, object], bool]]:
    """`mlwaf score` output records for input lines, and whether each line was readable.

    With the behavioural layer on, the requests are replayed in ``ts`` order (the
    file is read whole first) with their recorded ``client_ip``, and a record's
    ``status`` is reported back after it, as ModSecurity's logging phase does live;
    the output stays in input order."""
    limits = analyzer.settings.limits
    read = (_read(number, line, limits) for number, line in enumerate(lines, 1) if line.strip())
    if analyzer.behaviour is None:
        for record, request, problem in read:
            if request is None:
                yield {"id": record.get("id"), "verdict": "allow", "error": problem}, False
            else:
                reply = safe_analyze(analyzer, request)
                yield _output(record, reply), not reply.error
        return
    items = list(read)
    replies: dict[int, Reply] = {}
    clock = time.time()
    timed = [(r.ts if r.ts is not None else clock, i) for i, (_, r, _) in enumerate(items) if r is not None]
    for ts, index in sorted(timed):
        record, request, _ = items[index]
        assert request is not None
        replies[index] = safe_analyze(analyzer, request, now=ts)
        status = record.get("status")
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 999:
            analyzer.report_status(replace(request, reported_status=status))
    for index, (record, _, problem) in enumerate(items):
        if index in replies:
            yield _output(record, replies[index]), not replies[index].error
        else:
            yield {"id": record.get("id"), "verdict": "allow", "error": problem}, False


def cmd_score(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.behaviour:
        settings = replace(settings, behaviour=replace(settings.behaviour, enabled=True, profile=args.behaviour))
    analyzer = Analyzer.from_settings(settings)
    source: TextIO = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    sink: TextIO = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    counts = {"allow": 0, "block": 0, "log": 0, "errors": 0}
    started = time.perf_counter()
    with source, sink:
        for record, ok in score_lines(analyzer, source):
            sink.write(encode_line(record).decode("utf-8"))
            counts[str(record["verdict"]) if ok else "errors"] += 1
    elapsed = time.perf_counter() - started
    total = counts["allow"] + counts["block"] + counts["log"]
    print(
        f"scored {total} requests in {elapsed:.2f} s ({total / elapsed if elapsed else 0:.0f}/s): "
        f"{counts['block']} block, {counts['log']} log, {counts['allow']} allow, {counts['errors']} unreadable",
        file=sys.stderr,
    )
    return 0


def query_message(args: argparse.Namespace) -> dict[str, object]:
    """A protocol request built from command-line options, decoded as ModSecurity would."""
    headers = {}
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep:
            raise RequestError(f"header {item!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    if args.data and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = from_wire({"method": args.method, "path": args.path, "headers": headers, "body": args.data or ""})
    return {
        "v": VERSION,
        "id": "cli-" + str(time.time_ns()),
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "args": [[a.source if a.source in ("query", "cookie") else "body", a.name, a.value] for a in request.args],
        "headers": {k.lower(): v for k, v in headers.items()},
        "content_length": request.content_length,
        "header_count": len(headers),
        "client_ip": args.client_ip,
        "ts": time.time(),
    }


def cmd_query(args: argparse.Namespace) -> int:
    message = query_message(args)
    started = time.perf_counter()
    try:
        reply = exchange(args.socket, message, args.timeout)
    except OSError as exc:
        print(f"mlwaf: analyzer at {args.socket} unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    round_trip = (time.perf_counter() - started) * 1000
    if args.json:
        print(reply.decode("utf-8", "replace").strip())
    else:
        answer = json.loads(reply)
        scores = " ".join(f"{k}={v:.3f}" for k, v in answer.get("scores", {}).items())
        print(
            f"{answer['verdict']} {scores} ({answer.get('ms', 0):.2f} ms in analyzer, {round_trip:.2f} ms round trip)"
        )
        for reason in answer.get("reasons", []):
            where = f"{reason['source']}:{reason['name']}" if reason["name"] else reason["source"]
            print(f"  {reason['model']}: {reason['family']} in {where} ({reason['score']:.3f})")
        for key in ("note", "error"):
            if answer.get(key):
                print(f"  {key}: {answer[key]}")
    return 0


def _with_progress(label: str, work: Callable[[Callable[[int, int], None]], dict]) -> dict:
    """Run ``work(progress)`` under a progress bar; its result."""
    from rich.progress import Progress  # noqa: PLC0415 - only training needs it

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))


def cmd_train(args: argparse.Namespace) -> int:
    if args.kind == "flood":
        return _train_flood(args)

    from mlwaf.neural import NetworkSettings  # noqa: PLC0415 - TensorFlow: training only
    from mlwaf.train import TrainSettings, recalibrate, train_attack  # noqa: PLC0415

    data = _datasets(args.data)
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
    from mlwaf.behaviour.training import FloodSettings, train_flood  # noqa: PLC0415 - TensorFlow: training only

    data = _datasets(args.data)
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
        "(mlwaf.traffic), read as the analyzer reads them (every part, unwrapped).\n\n"
        + markdown(real, "requests", ("benign",))
        + "\n## Where the attack sits\n\n"
        f"Up to {PLACED_PER_FAMILY} test attacks per family, each placed in every part of a request "
        "(mlwaf.placement); detection by the model.\n\n"
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
        *targets.false_positives_per_source(real, "mlwaf"),
        *targets.detection(per_request, "mlwaf"),
        *targets.placement(parts),
        targets.false_positives(per_request, "mlwaf", name="CSIC benign requests blocked"),
        *targets.detection(profile_result, "profile", {"tampered": targets.PROFILE_MIN_DETECTION}),
        targets.false_positives(profile_result, "profile", name="benign requests blocked by the application profile"),
    ]
    if "libinjection" in detectors:
        goals += targets.better_than(per_request, "mlwaf", "libinjection", FAMILIES, "requests")
    goals.append(targets.inference(milliseconds))
    report += "\n" + profile_report + "\n" + targets.markdown(goals)
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
            "targets": targets.summary(goals),
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


def cmd_learn(args: argparse.Namespace) -> int:
    sources = [(Path(p), "observations") for p in args.observations]
    sources += [(Path(p), "requests") for p in args.requests]
    sources += [(Path(p), "access-log") for p in args.access_log]
    if not sources:
        raise ProfileError("give at least one input: --observations, --requests or --access-log")
    profile, tally = learn(sources)
    out = Path(args.output)
    profile.save(out)
    params = sum(len(e.params) for e in profile.endpoints.values())
    print(
        f"wrote {out}: {profile.requests:,} requests learned, {len(profile.endpoints):,} endpoints, "
        f"{params:,} parameters, {len(profile.cookies):,} cookies"
        f"{f'; {tally.skipped:,} unreadable line(s) skipped' if tally.skipped else ''}"
        f"{f'; {tally.ignored:,} error response(s) ignored' if tally.ignored else ''}"
    )
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    marks: dict[str, str] = dict.fromkeys(args.false_positive, "benign")
    for item in args.attack:
        request_id, sep, family = item.rpartition("=")
        if not sep or not request_id:
            raise FeedbackError(f"--attack takes ID=FAMILY, got {item!r}")
        marks[request_id] = family
    if not marks:
        raise FeedbackError("mark at least one request: --false-positive ID or --attack ID=FAMILY")
    result = export([Path(p) for p in args.log], marks)
    lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in result.records)
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        with Path(args.output).open("a", encoding="utf-8") as handle:
            handle.write(lines)
    print(
        f"mlwaf: {len(result.records)} labelled input(s) from {len(marks)} request(s)"
        f"{f'; {result.skipped_lines} unreadable log line(s) skipped' if result.skipped_lines else ''}",
        file=sys.stderr,
    )
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    if args.check:
        tuning = load_tuning(Path(args.check))
        print(
            f"{args.check}: {len(tuning['crs_exclusions'])} CRS exclusion(s), "
            f"{len(tuning['model_suppressions'])} model suppression(s), all deployable"
        )
        return 0
    if not args.recording:
        raise RecordError("give the learning period's recording files (or --check FILE)")
    options = TuneOptions(min_clients=args.min_clients, min_days=args.min_days, crs_score=args.crs_score)
    proposal = propose([Path(p) for p in args.recording], options)
    text = dump_tuning(proposal)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    tuning = proposal["mlwaf_tuning"]
    learning = tuning["learning"]
    skipped = learning["unreadable_lines"]
    print(
        f"mlwaf: {len(tuning['crs_exclusions'])} CRS exclusion(s) and {len(tuning['model_suppressions'])} model "
        f"suppression(s) proposed from {learning['recorded_requests']:,} recorded requests of "
        f"{learning['client_networks']:,} client networks ({learning['flagged_client_networks']:,} flagged, not "
        f"counted){f'; {skipped:,} unreadable line(s) skipped' if skipped else ''}",
        file=sys.stderr,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mlwaf",
        description="mlwaf analyzer: scores HTTP requests with trained models for the ModSecurity bridge.",
    )
    top.add_argument("--version", action="version", version=f"mlwaf {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_settings(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", help=f"analyzer settings (TOML; default {DEFAULT_CONFIG} when it exists)")
        p.add_argument(
            "-m",
            "--model",
            action="append",
            default=[],
            metavar="[NAME=]PATH",
            help="model metadata JSON (repeatable); replaces the configured models",
        )
        return p

    p = with_settings(sub.add_parser("serve", help="run the analyzer daemon on its Unix socket"))
    p.set_defaults(func=cmd_serve)
    p = with_settings(sub.add_parser("check", help="validate settings and load the models, then exit"))
    p.add_argument(
        "--models-dir",
        metavar="DIR",
        help="load the configured model files from DIR instead (to vet a new model release before switching)",
    )
    p.set_defaults(func=cmd_check)
    p = with_settings(
        sub.add_parser(
            "score",
            help="score JSON-lines requests offline, exactly as the daemon would",
            description="Input: one JSON object a line with id, method, path (with the raw query string), "
            "headers, body, optional client_ip and ts. Output: one line each with id, verdict, scores, reasons.",
        )
    )
    p.add_argument("input", nargs="?", default="-", help="input file (default: stdin)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.add_argument("--mode", choices=("block", "detection-only"), help="override the decision mode")
    p.add_argument(
        "--behaviour",
        choices=BEHAVIOUR_PROFILES,
        help="replay through the behavioural layer with this profile (in ts order, by client_ip)",
    )
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("query", help="ask the running daemon about one request")
    p.add_argument("path", help="path and query string as sent on the wire, e.g. '/search.php?q=%%3Cscript%%3E'")
    p.add_argument("-X", "--method", default="GET")
    p.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("-d", "--data", help="request body (form-encoded unless a Content-Type header says otherwise)")
    p.add_argument("--client-ip", default="127.0.0.1")
    p.add_argument("-s", "--socket", default=Settings.socket)
    p.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--json", action="store_true", help="print the raw protocol reply")
    p.set_defaults(func=cmd_query)

    _add_model_commands(sub)

    p = sub.add_parser(
        "simulate",
        help="generate labelled traffic (normal browsing, floods, scanners, bots, credential stuffing)",
        description="Writes JSON lines in the mlwaf score input format, with client_ip, ts, the status the "
        "site answered, and the scenario as label; or sends them live to a loopback URL (bounded).",
    )
    p.add_argument("scenario", nargs="+", choices=SIMULATION_SCENARIOS)
    p.add_argument(
        "-n", "--count", type=int, default=100, help="sessions (normal), seconds (floods) or requests (others)"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data", help="datasets folder: build the site from CSIC 2010's requests (default: the demo site)")
    p.add_argument("-o", "--output", default="-", help="JSON-lines file (default: stdout)")
    p.add_argument("--url", help="send live to this loopback URL instead (e.g. http://127.0.0.1)")
    p.add_argument("--max-requests", type=int, default=5000, help="live: stop after this many (default 5000)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="live: stop after this long (default 60)")
    p.set_defaults(func=cmd_simulate)
    return top


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    """train, learn, feedback and evaluate: the commands that make and judge models."""
    p = sub.add_parser("train", help="train a model from the labelled datasets")
    p.add_argument("kind", choices=("attack", "flood"), help="attack: the injection model; flood: the flood/bot model")
    p.add_argument("--data", required=True, help="datasets folder (the project's shared/datasets)")
    p.add_argument("--out", default="files/models", help="output folder (default files/models)")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: attack {NETWORK_EPOCHS}, flood 12)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--members",
        type=int,
        choices=range(1, 4),
        metavar="N",
        help=f"attack: networks averaged, seeds SEED to SEED+N-1 (default {NETWORK_MEMBERS}; 1 to 3)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="JSONL",
        help='operator-labelled values, one {"text": ..., "family": ...} a line (repeatable; training side only)',
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="attack: set the thresholds and rates of the model in --out again from the data, no training",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "learn",
        help="learn the site's application profile from observations, request files or access logs",
        description="Builds the application profile (each endpoint's methods and parameters, each "
        "parameter's characters, length and small value sets) the analyzer scores deviations from. "
        "Inputs may be gzipped; unreadable lines are skipped and counted.",
    )
    p.add_argument(
        "--observations", action="append", default=[], metavar="FILE", help="the analyzer's learning-period file"
    )
    p.add_argument("--requests", action="append", default=[], metavar="FILE", help="JSON lines as mlwaf score reads")
    p.add_argument(
        "--access-log",
        action="append",
        default=[],
        metavar="FILE",
        help="Apache common/combined log (query strings only; responses >= 400 ignored)",
    )
    p.add_argument("-o", "--output", required=True, help="profile file to write (JSON)")
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser(
        "feedback",
        help="export inputs of requests an operator marked (false positives, confirmed attacks) for training",
        description="Reads the decision log (rotated and .gz files too) and writes the logged inputs of the "
        'marked requests as JSON lines {"text", "family"}: the format of mlwaf train --extra.',
    )
    p.add_argument("--log", action="append", required=True, help="decision log file (repeatable)")
    p.add_argument("--false-positive", action="append", default=[], metavar="ID", help="a wrongly blocked request")
    p.add_argument(
        "--attack", action="append", default=[], metavar="ID=FAMILY", help="a logged request that was an attack"
    )
    p.add_argument("-o", "--output", default="-", help="JSONL file to append to (default: stdout)")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser(
        "evaluate",
        help="rates of the model and libinjection side by side on the untouched test split",
        description="Per test request and per test value: TPR per attack family, FPR on benign ones, "
        "balanced accuracy; overall and per source; and the model's inference time per request. "
        "Markdown on stdout; with --out also detection.md/.json and two PNG charts.",
    )
    p.add_argument("--data", required=True, help="datasets folder (the project's shared/datasets)")
    p.add_argument("--model", default="files/models/attack.json", help="model metadata (default: the shipped one)")
    p.add_argument("--out", help="folder for detection.md, detection.json and detection.png")
    p.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME, help="which export to run")
    p.add_argument("--no-libinjection", action="store_true", help="evaluate the model alone")
    p.add_argument("--seed", type=int, default=7, help="the training seed (the test split depends on it)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser(
        "tune",
        help="propose CRS exclusions and model suppressions from a learning period's recording",
        description="Reads the analyzer's tuning recording ([logs] tuning_record; rotated and .gz files "
        "too) and writes a proposal (YAML) to review and deploy with playbooks/tune.yml. An entry needs "
        "many distinct client networks on several days; clients the behavioural layer flagged, or that "
        "the model would have refused on another parameter, are not counted.",
    )
    p.add_argument("recording", nargs="*", help="recording files")
    p.add_argument("-o", "--output", default="-", help="proposal file to write (default: stdout)")
    p.add_argument(
        "--min-clients",
        type=int,
        default=TuneOptions.min_clients,
        help=f"distinct client networks an entry needs (default {TuneOptions.min_clients})",
    )
    p.add_argument(
        "--min-days",
        type=int,
        default=TuneOptions.min_days,
        help=f"distinct days an entry needs (default {TuneOptions.min_days})",
    )
    p.add_argument(
        "--crs-score",
        type=int,
        default=TuneOptions.crs_score,
        help=f"CRS anomaly score from which a request counts as refused (default {TuneOptions.crs_score})",
    )
    p.add_argument("--check", metavar="FILE", help="check a (reviewed) proposal can be deployed, and exit")
    p.set_defaults(func=cmd_tune)
    add_commands(sub)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        ConfigError,
        ModelError,
        RequestError,
        EvaluationError,
        DatasetError,
        FeedbackError,
        ProfileError,
        SimulationError,
        GeoError,
        ReportError,
        LogError,
        RecordError,
    ) as exc:
        print(f"mlwaf: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
