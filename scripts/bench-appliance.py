#!/usr/bin/env python3
"""Benchmark the appliance end to end, one stack after the other, in one run.

    .venv/bin/python scripts/bench-appliance.py [--scenario default] [--seconds 10] [--connections 200]

The Molecule scenario's host must be up (`molecule converge -s default`). For
each stack the playbook is converged again with the stack's variables, so
what is measured is what the roles deploy:

    apache      Apache alone (ModSecurity module disabled)
    modsec      + ModSecurity engine, no rules
    crs         + OWASP CRS at paranoia level 1
    ml          ModSecurity + the ML analyzer, CRS off
    crs_ml      + CRS PL1 + the ML analyzer (the appliance's default, last)

wrk (on this machine, over loopback) sends the request mix of
bench/wrk-mix.lua: a static page, a login form POST and a JSON API call in
equal shares, first benign only, then with 5% attacks. The stacks with the
analyzer run two more mixes: saturation (four times the connections, 5%
attacks that only the model or the degraded checks stop, 1% of all requests
padded with 120 KB of filler) and restart (the same attacks plus 5% that CRS
knows, while the analyzer is restarted and then killed with SIGKILL mid-run).
Per ML run: ml_fallbacks (requests the analyzer did not answer in time),
ml_degraded (of those, checked in-process), ml_blind (passed unchecked: the
fail-open path) and ml_only_attacks_passed (model-only attacks not answered
403), from the test host's ml_fallback.log and access log. Per run: requests/s,
latency p50/p95/p99 (wrk), CPU milliseconds per request (all of this
machine's busy CPU time during the run minus wrk's own, per request), where
the analyzer runs, the bridge's round trip to it as Apache saw it (from
ml_performance.log), and the share of the CPUs' time that a hypervisor took
away from this machine (steal: on a virtual machine, time every process
stood still). The test host shares this machine's CPUs with wrk.

Writes bench/results.json, bench/results.md and bench/results.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlwaf.ops.logs import parse_access, parse_fallback, percentile  # the project's venv runs this script

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PERF_LOG = "/var/log/apache2/ml_performance.log"
FALLBACK_LOG = "/var/log/apache2/ml_fallback.log"
ACCESS_LOG = "/var/log/apache2/waf_access.log"

STACKS: dict[str, tuple[str, dict[str, object]]] = {
    "apache": ("Apache alone", {"modsecurity_module_enabled": False}),
    "modsec": ("+ ModSecurity, no rules", {"modsecurity_crs_enabled": False, "ml_analyzer_enabled": False}),
    "crs": ("+ CRS PL1", {"ml_analyzer_enabled": False}),
    "ml": ("ML without CRS", {"modsecurity_crs_enabled": False}),
    "crs_ml": ("+ CRS PL1 + ML", {}),
}
ML_STACKS = ("ml", "crs_ml")


@dataclass(frozen=True)
class Mix:
    attack_pct: int = 0  # attacks CRS knows
    ml_only_pct: int = 0  # attacks only the model (or the degraded checks) stops
    padded_pct: int = 0  # of all requests, ML-only attacks behind 120 KB of filler
    connections: int = 1  # times --connections
    restart: bool = False  # restart the analyzer a third of the way in, kill -9 it at two thirds
    ml_only: bool = False  # run on the ML stacks only


MIXES = {
    "benign": Mix(),
    "attack5": Mix(attack_pct=5),
    "saturation": Mix(ml_only_pct=5, padded_pct=1, connections=4, ml_only=True),
    "restart": Mix(attack_pct=5, ml_only_pct=5, padded_pct=1, restart=True, ml_only=True),
}
RESTARTS = ("systemctl restart mlwaf-analyzer.service", "systemctl kill --signal=KILL mlwaf-analyzer.service")


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


def host(scenario: str) -> tuple[str, int]:
    """The scenario's first platform: instance name and SSH port."""
    config = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    platform = config["platforms"][0]
    return platform["name"], int(platform["ssh_port"])


class Host:
    def __init__(self, name: str, port: int) -> None:
        cache = Path(os.environ.get("MLWAF_CACHE_DIR") or Path.home() / ".cache" / "mlwaf")
        self.key = cache / "hosts" / name / "id_ed25519"
        self.port = port
        if not self.key.exists():
            raise BenchError(f"no test host {name}: run `molecule converge` for its scenario first")

    def run(self, command: str, stdin: str | None = None) -> str:
        """`command` on the test host (with `stdin` as its input); its output."""
        ssh = ["ssh", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        ssh += ["-i", str(self.key), "-p", str(self.port), "root@127.0.0.1", command]
        done = subprocess.run(ssh, input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"on the test host, `{command}` failed: {done.stderr.strip()}")
        return done.stdout

    def converge(self, scenario: str, extra_vars: dict[str, object], log: Path) -> float:
        """Converge the scenario with `extra_vars`, then stop the performance check (its probes
        are not the mix); seconds taken."""
        took = converge(scenario, extra_vars, log)
        self.run("systemctl stop performance_monitor.timer || true")
        return took


def converge(scenario: str, extra_vars: dict[str, object], log: Path) -> float:
    start = time.monotonic()
    command = ["molecule", "converge", "-s", scenario, "--", "-e", json.dumps(extra_vars)]
    with log.open("a") as out:
        out.write(f"\n### {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise BenchError(f"converge with {extra_vars} failed; see {log}")
    return time.monotonic() - start


def cpu_seconds() -> tuple[float, float]:
    """CPU time this machine spent busy, and the time its hypervisor took from it (steal:
    the guest wanted a CPU and got none), all CPUs, since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    )
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def cpu_by_command() -> dict[str, float]:
    """CPU seconds used so far by each command name (live processes; all threads)."""
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process has gone
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return totals


def cpu_split(before: dict[str, float], after: dict[str, float], busy: float) -> dict[str, float]:
    """CPU seconds of Apache, PHP-FPM and the analyzer out of `busy`; the rest as `other`."""
    groups = {"apache": ("apache2",), "php": ("php-fpm",), "analyzer": ("mlwaf",)}
    split = {}
    for group, prefixes in groups.items():
        used = sum(after[n] - before.get(n, 0.0) for n in after if n.startswith(prefixes))
        split[group] = used
    split["other"] = busy - sum(split.values())
    return split


def wrk(args: argparse.Namespace, mix: Mix, seconds: float) -> dict[str, float]:
    """One wrk run; returns its JSON summary plus cpu_ms_per_req."""
    env = {
        **os.environ,
        "MLWAF_BENCH_ATTACK_PCT": str(mix.attack_pct),
        "MLWAF_BENCH_ML_ONLY_PCT": str(mix.ml_only_pct),
        "MLWAF_BENCH_PADDED_PCT": str(mix.padded_pct),
    }
    connections = args.connections * mix.connections
    command = ["wrk", f"-t{args.threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    command += ["-H", f"Host: {args.host}", "-s", str(BENCH / "wrk-mix.lua"), args.url]
    (busy_before, steal_before), commands = cpu_seconds(), cpu_by_command()
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        busy_after, steal_after = cpu_seconds()
        busy = busy_after - busy_before - usage.ru_utime - usage.ru_stime
        capacity = (time.monotonic() - started) * (os.cpu_count() or 1)  # /proc/stat counts every CPU
        split = cpu_split(commands, cpu_by_command(), busy)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise BenchError(f"wrk failed:\n{text}")
    summary = json.loads(text.strip().splitlines()[-1])
    summary["req_per_s"] = summary["requests"] / summary["seconds"]
    per_request = 1000 / max(1, summary["requests"])
    summary["cpu_ms_per_req"] = busy * per_request
    summary["cpu_ms_per_req_by"] = {k: round(v * per_request, 4) for k, v in split.items()}
    summary["steal_pct"] = 100 * (steal_after - steal_before) / capacity
    return summary


def new_lines(target: Host, path: str, offset: int) -> list[str]:
    """Lines written to a log on the test host since it had `offset` bytes."""
    return target.run(f"tail -c +{offset + 1} {path} 2>/dev/null || true").splitlines()


def round_trips(lines: list[str]) -> list[float]:
    """Bridge round-trip milliseconds from ml_performance.log lines."""
    return [float(parts[1]) for parts in (line.split(",") for line in lines) if len(parts) == 3 and parts[1]]


def log_size(target: Host, path: str) -> int:
    return int(target.run(f"stat -c %s {path} 2>/dev/null || echo 0").strip())


class Restarts:
    """The restart mix's actions on the analyzer, timed into the wrk run about to start."""

    def __init__(self, target: Host, seconds: float) -> None:
        self.target = target
        self.errors: list[BenchError] = []
        step = seconds / (len(RESTARTS) + 1)
        self.timers = [threading.Timer(step * (n + 1), self.act, (a,)) for n, a in enumerate(RESTARTS)]
        for timer in self.timers:
            timer.start()

    def act(self, action: str) -> None:
        try:
            self.target.run(action)
        except BenchError as error:
            self.errors.append(error)

    def wait(self) -> None:
        for timer in self.timers:
            timer.join()
        if self.errors:
            raise self.errors[0]
        # the next run starts with a serving analyzer
        self.target.run("until /opt/mlwaf/venv/bin/mlwaf query --timeout 2 /index.php >/dev/null; do sleep 0.2; done")


def ml_paths(fallbacks: list[str], access: list[str]) -> dict[str, int]:
    """What became of the requests the analyzer did not answer, and of the model-only attacks."""
    paths = [u.path for u in map(parse_fallback, fallbacks) if u is not None]
    probes = [a for a in map(parse_access, access) if a is not None and "probe=ml-only" in a.path]
    return {
        "ml_fallbacks": len(paths),
        "ml_degraded": paths.count("degraded"),
        "ml_blind": paths.count("open"),
        "ml_only_attacks": len(probes),
        "ml_only_attacks_passed": sum(a.status < 400 for a in probes),
    }


def bench_stack(target: Host, stack: str, args: argparse.Namespace) -> list[dict[str, object]]:
    wrk(args, MIXES["benign"], 2)  # warm up caches, PHP and the analyzer
    rows = []
    for name, mix in MIXES.items():
        if mix.ml_only and stack not in ML_STACKS:
            continue
        logs = (PERF_LOG, FALLBACK_LOG, ACCESS_LOG)
        offsets = {path: log_size(target, path) for path in logs}
        restarting = Restarts(target, args.seconds) if mix.restart else None
        row: dict[str, object] = {"mix": name, **wrk(args, mix, args.seconds)}
        if restarting is not None:
            restarting.wait()
        lines = {path: new_lines(target, path, offsets[path]) for path in logs}
        times = round_trips(lines[PERF_LOG])
        if stack in ML_STACKS:
            row.update(ml_scored=len(times), **{f"ml_rtt_p{p}_ms": percentile(times, p) for p in (50, 95, 99)})
            row.update(ml_paths(lines[FALLBACK_LOG], lines[ACCESS_LOG]))
        rows.append(row)
    return rows


def ratios(results: list[dict[str, object]]) -> dict[str, float]:
    rate = {(r["stack"], r["mix"]): float(r["req_per_s"]) for r in results}  # type: ignore[arg-type]
    out = {}
    for mix in MIXES:
        if ("crs", mix) in rate and ("crs_ml", mix) in rate:
            out[f"crs_ml_over_crs_{mix}"] = rate["crs_ml", mix] / rate["crs", mix]
        if ("crs", mix) in rate and ("ml", mix) in rate:
            out[f"ml_over_crs_{mix}"] = rate["ml", mix] / rate["crs", mix]
    return out


def markdown(report: dict[str, object]) -> str:
    lines = [
        f"Run {report['date']} on {report['cpus']} CPUs shared by wrk and the test host; "
        f"wrk {report['threads']} threads, {report['connections']} connections, {report['seconds']:g} s per mix.",
        "",
        "| stack | mix | req/s | p50 ms | p95 ms | p99 ms | CPU ms/req | 403 | failed "
        "| ML round trip p50/p99 ms | ML fallbacks | degraded | blind | ML-only attacks passed | CPU stolen |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["stacks"]:  # type: ignore[attr-defined]
        rtt = f"{r['ml_rtt_p50_ms']:.2f} / {r['ml_rtt_p99_ms']:.2f}" if r.get("ml_rtt_p50_ms") is not None else "-"
        passed = f"{r['ml_only_attacks_passed']} of {r['ml_only_attacks']}" if r.get("ml_only_attacks") else "-"
        lines.append(
            f"| {STACKS[r['stack']][0]} | {r['mix']} | {r['req_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['cpu_ms_per_req']:.3f} | {r['status_403']} "
            f"| {r['status_other'] + r['errors_connect'] + r['errors_timeout']} | {rtt} "
            f"| {r.get('ml_fallbacks', '-')} | {r.get('ml_degraded', '-')} | {r.get('ml_blind', '-')} | {passed} "
            f"| {r['steal_pct']:.0f}% |"
        )
    lines += ["", "CPU milliseconds per request, by process (not for the restart mix: a killed one's time is lost):"]
    lines += ["", "| stack | mix | Apache | PHP-FPM | analyzer | other |", "|---|---|---:|---:|---:|---:|"]
    for r in report["stacks"]:  # type: ignore[attr-defined]
        if MIXES[r["mix"]].restart:
            continue
        by = r["cpu_ms_per_req_by"]
        lines.append(
            f"| {STACKS[r['stack']][0]} | {r['mix']} | {by['apache']:.3f} | {by['php']:.3f} "
            f"| {by['analyzer']:.3f} | {by['other']:.3f} |"
        )
    targets = {"crs_ml_over_crs": "target >= 0.90", "ml_over_crs": "target >= 3"}
    lines += ["", "| ratio | value | |", "|---|---:|---|"]
    for name, value in report["ratios"].items():  # type: ignore[attr-defined]
        lines.append(f"| {name} | {value:.2f} | {targets[name.rsplit('_', 1)[0]]} |")
    return "\n".join(lines) + "\n"


def chart(report: dict[str, object], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only needed for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = report["stacks"]  # type: ignore[assignment]
    names = list(dict.fromkeys(r["stack"] for r in rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(MIXES)
    for i, mix in enumerate(MIXES):
        got = {r["stack"]: r for r in rows if r["mix"] == mix}
        xs = [n + (i - (len(MIXES) - 1) / 2) * width for n in range(len(names))]
        left.bar(xs, [got[s]["req_per_s"] if s in got else 0 for s in names], width, label=mix)
        right.bar(xs, [got[s]["p99_ms"] if s in got else 0 for s in names], width, label=mix)
    for axis, title in ((left, "requests/s"), (right, "latency p99 (ms)")):
        axis.set_xticks(range(len(names)), [STACKS[s][0] for s in names], rotation=20, ha="right", fontsize=8)
        axis.set_title(title)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per mix (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stacks", default=",".join(STACKS), help="comma-separated, in order (default: all)")
    parser.add_argument("--url", default="http://127.0.0.1/")
    parser.add_argument("--host", default="mlwaf.test", help="Host header (the scenario's apache_server_name)")
    args = parser.parse_args()
    stacks = [s for s in args.stacks.split(",") if s]
    unknown = set(stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stack(s) {', '.join(sorted(unknown))}; choose from {', '.join(STACKS)}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: `make host-deps` installs it")
    try:
        target = Host(*host(args.scenario))
        log = BENCH / "converge.log"
        log.write_text("")
        results = []
        for stack in stacks:
            label, extra = STACKS[stack]
            took = target.converge(args.scenario, extra, log)
            print(f"{label}: converged in {took:.0f} s, measuring", file=sys.stderr)
            results += [{"stack": stack, **row} for row in bench_stack(target, stack, args)]
        if stacks[-1] != "crs_ml":
            converge(args.scenario, {}, log)  # leave the host as the playbook's defaults make it
    except BenchError as error:
        print(f"bench-appliance: {error}", file=sys.stderr)
        return 1
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "connections": args.connections,
        "seconds": args.seconds,
        "stacks": results,
        "ratios": ratios(results),
    }
    (BENCH / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (BENCH / "results.md").write_text(markdown(report))
    chart(report, BENCH / "results.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
