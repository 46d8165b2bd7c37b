#!/usr/bin/env python3
"""Benchmark the analyzer alone: offline scoring rate, socket round trips, memory.

    .venv/bin/python scripts/bench-analyzer.py [--requests 20000] [--clients 200] [--seconds 10] [--rate R]

1. `mlwaf score` code path on one CPU (pinned): requests/s over a mix of
   benign requests and attacks (query, form, JSON bodies).
2. A real daemon (`mlwaf serve`, default workers) on a temporary socket, and
   --clients concurrent connection-per-request clients (threads spread over
   client processes): round-trip percentiles and the rate reached. Closed
   loop (each client sends again as soon as it has its answer) measures the
   most the daemon serves; --rate R paces the clients to R requests/s in
   total, as Apache workers at a given load would.
3. The daemon's memory with the models loaded: RSS of parent and workers, and
   their proportional set size (PSS, shared model pages counted once).
Prints a markdown table; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "files" / "models" / "attack.json"
BRIDGE_TIMEOUT_MS = 50  # the Lua bridge's default receive timeout (ml_analyzer_timeout_ms)
sys.path.insert(0, str(ROOT / "src"))

from mlwaf.cli import score_lines  # noqa: E402
from mlwaf.config import ModelSettings, Settings  # noqa: E402
from mlwaf.decision import Analyzer  # noqa: E402
from mlwaf.ops.logs import percentile  # noqa: E402

BENIGN = [
    {"method": "GET", "path": "/search.php?q=coffee+grinder&page=2&sort=price", "headers": {}, "body": ""},
    {
        "method": "POST",
        "path": "/login.php",
        "headers": {"Content-Type": "application/x-www-form-urlencoded", "Cookie": "PHPSESSID=9f8e7d6c5b4a"},
        "body": "username=alice&password=wonderland&remember=on",
    },
    {
        "method": "POST",
        "path": "/api/orders",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"customer": {"name": "Jean O'Neil", "email": "jean@example.org"}, "items": [1, 2, 3]}),
    },
]
ATTACKS = [
    {"method": "GET", "path": "/search.php?q=%27%20union%20select%20password%20from%20users--", "headers": {}},
    {"method": "GET", "path": "/search.php?q=%3Cscript%3Ealert(1)%3C/script%3E", "headers": {}},
    {"method": "GET", "path": "/view.php?file=../../../../etc/passwd", "headers": {}},
]


def mix(count: int) -> list[str]:
    """95% benign, 5% attacks, as JSON lines. Every request carries a session
    cookie never seen before, so none is answered from the score cache alone."""
    out = []
    for i in range(count):
        source = ATTACKS[i % len(ATTACKS)] if i % 20 == 0 else BENIGN[i % len(BENIGN)]
        headers = {**source["headers"], "Cookie": f"sid={hashlib.sha1(str(i).encode()).hexdigest()[:26]}"}
        out.append(json.dumps({"id": i, **source, "headers": headers}))
    return out


def bench_score(count: int) -> float:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    analyzer = Analyzer.from_settings(Settings(models={"attack": ModelSettings(str(MODEL))}))
    lines = mix(count)
    list(score_lines(analyzer, lines[:200]))  # warm up
    started = time.perf_counter()
    for _ in score_lines(analyzer, lines):
        pass
    return count / (time.perf_counter() - started)


def protocol_lines() -> list[bytes]:
    from mlwaf.cli import query_message  # noqa: PLC0415

    out = []
    for source in mix(20000):  # more distinct cookies than the score cache holds
        record = json.loads(source)
        args = argparse.Namespace(
            method=record["method"],
            path=record["path"],
            header=[f"{k}: {v}" for k, v in record["headers"].items()],
            data=record.get("body") or None,
            client_ip="192.0.2.1",
        )
        out.append(json.dumps(query_message(args)).encode() + b"\n")
    return out


def client_process(sock: str, threads: int, seconds: float, interval: float, queue: multiprocessing.Queue) -> None:
    lines = protocol_lines()
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def loop(offset: int) -> None:
        i = offset
        next_send = time.monotonic() + interval * offset / max(threads, 1)
        while time.monotonic() < stop:
            if interval:  # open loop: each client sends at a fixed pace, whatever the latency
                time.sleep(max(0.0, next_send - time.monotonic()))
                next_send += interval
            started = time.perf_counter()
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(5)
                    conn.connect(sock)
                    conn.sendall(lines[i % len(lines)])
                    reply = conn.recv(65536)
                if not reply.endswith(b"\n"):
                    errors[0] += 1
            except OSError:
                errors[0] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((latencies, errors[0]))


def memory(pid: int) -> tuple[float, float]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    pids = [pid, *map(int, children.split())]
    rss = pss = 0
    for p in pids:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def bench_socket(clients: int, seconds: float, rate: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        sock = f"{folder}/a.sock"
        config = Path(folder) / "a.toml"
        config.write_text(f'[server]\nsocket = "{sock}"\n[models.attack]\npath = "{MODEL}"\n')
        daemon = subprocess.Popen([sys.executable, "-m", "mlwaf.cli", "serve", "-c", str(config)], cwd=ROOT)
        try:
            while not Path(sock).exists():
                time.sleep(0.05)
            time.sleep(0.5)
            rss, pss = memory(daemon.pid)
            procs = max(1, min(4, clients // 50))
            queue: multiprocessing.Queue = multiprocessing.Queue()
            runners = [
                multiprocessing.Process(
                    target=client_process, args=(sock, clients // procs, seconds, clients / rate if rate else 0, queue)
                )
                for _ in range(procs)
            ]
            for r in runners:
                r.start()
            latencies: list[float] = []
            errors = 0
            for _ in runners:
                got, failed = queue.get()
                latencies += got
                errors += failed
            for r in runners:
                r.join()
        finally:
            daemon.terminate()
            daemon.wait()
    return {
        "rate": len(latencies) / seconds,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "slowest": max(latencies, default=0.0),
        "over_timeout": sum(latency > BRIDGE_TIMEOUT_MS for latency in latencies),
        "errors": errors,
        "rss": rss,
        "pss": pss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0, help="total requests/s, open loop (default: closed loop)")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        score_rate = pool.apply(bench_score, (args.requests,))
    result = bench_socket(args.clients, args.seconds, args.rate)
    loop = f"open loop at {args.rate:,.0f}/s" if args.rate else "closed loop"
    print(f"CPUs: {len(os.sched_getaffinity(0))}; mix: 95% benign (query, form, JSON), 5% attacks, a new cookie each\n")
    print("| measure | value |\n|---|---|")
    print(f"| `mlwaf score` on one CPU | {score_rate:,.0f} requests/s |")
    print(f"| socket, {args.clients} concurrent clients ({loop}) | {result['rate']:,.0f} requests/s |")
    for p in ("p50", "p95", "p99"):
        print(f"| socket round trip {p} | {result[p]:.2f} ms |")
    print(f"| slowest round trip | {result['slowest']:.2f} ms |")
    print(f"| round trips over the bridge's {BRIDGE_TIMEOUT_MS} ms timeout | {result['over_timeout']} |")
    print(f"| failed round trips | {result['errors']} |")
    print(f"| daemon RSS, parent + workers (models loaded) | {result['rss']:.0f} MB |")
    print(f"| daemon PSS, parent + workers (shared pages once) | {result['pss']:.0f} MB |")


if __name__ == "__main__":
    main()
