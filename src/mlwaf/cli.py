"""``mlwaf``: the analyzer's command line (serve, score, query, check; learn, feedback, tune; the
operations commands of mlwaf.ops.commands: status, monitor, performance-check, report; and the
training commands declared by mlwaf.training.cli, loaded only when one of them runs)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from mlwaf import __version__
from mlwaf.behaviour.geo import GeoError
from mlwaf.config import BEHAVIOUR_PROFILES, DEFAULT_CONFIG, ConfigError, ModelSettings, Settings, load
from mlwaf.decision import Analyzer
from mlwaf.feedback import FeedbackError, export
from mlwaf.learn import learn
from mlwaf.model import ModelError
from mlwaf.ops.commands import add_commands
from mlwaf.ops.logs import LogError
from mlwaf.ops.report import ReportError
from mlwaf.profile import ProfileError
from mlwaf.protocol import VERSION, Reply, encode_line, exchange
from mlwaf.request import Limits, Request, RequestError, from_wire
from mlwaf.server import safe_analyze, serve
from mlwaf.training import cli as training_cli
from mlwaf.tuning.proposal import dump as dump_tuning
from mlwaf.tuning.proposal import load as load_tuning
from mlwaf.tuning.propose import Options as TuneOptions
from mlwaf.tuning.propose import propose
from mlwaf.tuning.record import RecordError

EXIT_USAGE, EXIT_UNAVAILABLE = 2, 3
# the attack model a source checkout ships (src/mlwaf/cli.py -> files/models/attack.json)
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "files" / "models" / "attack.json"


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
    if not settings.models and not args.config and SHIPPED_MODEL.is_file():
        print(f"mlwaf: no --model or --config given; using the checkout's shipped {SHIPPED_MODEL}", file=sys.stderr)
        settings = replace(settings, models={"attack": ModelSettings(path=str(SHIPPED_MODEL))})
    if not settings.models:
        raise ConfigError(f"no model configured: pass --model PATH/attack.json or --config (default {DEFAULT_CONFIG})")
    return settings


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
    try:
        source: TextIO = (
            sys.stdin if args.input == "-" else open(args.input, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        )
        sink: TextIO = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot open {exc.filename}: {exc.strerror}") from None
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

    _add_site_commands(sub)
    training_cli.add_commands(sub)
    add_commands(sub)
    return top


def _add_site_commands(sub: argparse._SubParsersAction) -> None:
    """learn, feedback and tune: the commands that fit the analyzer to its site."""
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


USAGE_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    ModelError,
    RequestError,
    FeedbackError,
    ProfileError,
    GeoError,
    ReportError,
    LogError,
    RecordError,
)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func, errors = args.func, USAGE_ERRORS
    if isinstance(func, str):  # a training command: its module is loaded only now
        commands = importlib.import_module(training_cli.COMMANDS)
        func, errors = getattr(commands, func), errors + commands.ERRORS
    try:
        return func(args)
    except errors as exc:
        print(f"mlwaf: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
