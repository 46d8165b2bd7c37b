"""The operations commands of ``mlwaf``: status, monitor, performance-check, report."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

from mlwaf.ops import monitor
from mlwaf.ops.health import check
from mlwaf.ops.perfcheck import run_check
from mlwaf.ops.report import parse_when, write_report
from mlwaf.ops.settings import DEFAULT_MONITORING_CONFIG, load_monitoring


def _settings(args: argparse.Namespace):
    return load_monitoring(Path(args.monitoring) if args.monitoring else None)


def cmd_status(args: argparse.Namespace) -> int:
    health = check(_settings(args))
    print(json.dumps(health.as_dict()) if args.json else health.line)
    return 0 if health.healthy else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    since = parse_when(args.since, time.time()) if args.since else None
    return monitor.run(
        _settings(args), window=args.window, interval=args.interval, once=args.once, as_json=args.json, since=since
    )


def cmd_performance_check(args: argparse.Namespace) -> int:
    line, alerts = run_check(_settings(args))
    print(line)
    for alert in alerts:
        print(f"{alert.severity.upper()}: {alert.message}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    now = time.time()
    since, until = parse_when(args.since, now), parse_when(args.until, now) if args.until else now
    text = write_report(_settings(args), since, until, Path(args.out), socket.gethostname())
    print(text)
    print(f"report: {Path(args.out) / 'index.html'}", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    def with_monitoring(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--monitoring",
            metavar="PATH",
            help=f"operations settings (TOML; default {DEFAULT_MONITORING_CONFIG} when it exists)",
        )
        return p

    p = with_monitoring(sub.add_parser("status", help="one line: is the appliance healthy, and if not why (exit 1)"))
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p.set_defaults(func=cmd_status)

    p = with_monitoring(
        sub.add_parser(
            "monitor",
            help="live view: requests/s, blocks by CRS and by model, ML time, health, top families and clients",
            description="What the appliance did over the last --window seconds, redrawn every --interval seconds "
            "(waf_monitor.sh runs this). Requests of the performance probe are left out.",
        )
    )
    p.add_argument("--once", action="store_true", help="one snapshot, then exit (status 1 when unhealthy)")
    p.add_argument("--json", action="store_true", help="the snapshot as JSON")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between redraws (default 2)")
    p.add_argument("--window", type=float, default=60.0, help="seconds of logs to summarise (default 60)")
    p.add_argument("--since", help="summarise from this time instead (2026-11-21T20:00, a Unix time, or 10m)")
    p.set_defaults(func=cmd_monitor)

    p = with_monitoring(
        sub.add_parser(
            "performance-check",
            help="one metric line and the alerts its thresholds raise (the performance_monitor timer runs this)",
        )
    )
    p.set_defaults(func=cmd_performance_check)

    p = with_monitoring(
        sub.add_parser(
            "report",
            help="HTML and text report of latency, throughput, blocks and scores over a time range",
            description="Reads the access log, ml_performance.log and the decision log (rotated and gzipped "
            "files too) and writes index.html, summary.txt and PNG charts (analyze_waf_performance.py runs this).",
        )
    )
    p.add_argument("--since", default="24h", help="start: 2026-11-21T20:00, a Unix time, or a span ago (default 24h)")
    p.add_argument("--until", help="end (default now)")
    p.add_argument("--out", default="mlwaf-report", help="folder to write the report into (default ./mlwaf-report)")
    p.set_defaults(func=cmd_report)
