#!/usr/bin/env python3
"""Where Apache's CPU time goes with the ML bridge, step by step.

    .venv/bin/python scripts/profile-bridge.py [--scenario default] [--seconds 10]

The Molecule scenario's host must be up (`molecule converge -s default`). wrk
sends the benign mix of bench/wrk-mix.lua to a series of stacks, each adding
one step of the bridge's work, and Apache's CPU time per request is read from
/proc; the difference between two steps is what the step costs:

    modsec          ModSecurity, no rules (the playbook's `modsec` stack)
    rules           + the ML analyzer's rules and logs, with rule 1003 (the
                    Lua bridge) replaced by a plain action
    lua_state       + rule 1003 running the bridge, which returns at once
                    (ModSecurity's fresh Lua state per script)
    gather          + the bridge reading the request's variables and encoding
                    the message, answering itself (no socket)
    lua_socket      + the exchange with the analyzer through lua-socket
    native          the exchange and JSON quoting through the native half
                    (mlwaf_bridge.so), as the role deploys it

The steps after `modsec` run on the `ml` stack (CRS off), with the bridge and
its rules edited in place on the test host and restored afterwards; the host
is converged back to the playbook's defaults at the end. With perf installed,
the last step is also sampled and its hottest symbols in Apache listed.

Writes bench/bridge-profile.json and bench/bridge-profile.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_appliance", ROOT / "scripts" / "bench-appliance.py")
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bench_appliance"] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)  # type: ignore[union-attr]

BRIDGE = "/usr/share/mlwaf/modsecurity/mlwaf-bridge.lua"
RULES = "/etc/modsecurity/mlwaf.d/ml-analyzer.conf"
PLAIN = "phase:2,pass,nolog,setvar:tx.mlwaf_verdict=allow"
EXCHANGE = "  local line, err = exchange(message())\n"


def edit(old: str, new: str, regex: bool = False) -> Callable[[str], str]:
    def apply(text: str) -> str:
        changed = re.sub(old, new, text, count=1, flags=re.M) if regex else text.replace(old, new, 1)
        if changed == text:
            raise bench.BenchError(f"the deployed file no longer holds {old!r}: update profile-bridge.py")
        return changed

    return apply


# step: (what it adds, the step it adds to, {file on the test host: edit}), on the ml stack
STEPS: dict[str, tuple[str, str, dict[str, Callable[[str], str]]]] = {
    "rules": (
        "ML rules and logs, no Lua",
        "modsec",
        {RULES: edit(r'^SecRuleScript \S+ "id:1003,.*$', f'SecAction "id:1003,{PLAIN}"', True)},
    ),
    "lua_state": (
        "+ a fresh Lua state (script returns at once)",
        "rules",
        {BRIDGE: edit("function main()\n", "function main()\n  if true then return nil end\n")},
    ),
    "gather": (
        "+ reading the variables, encoding the message",
        "lua_state",
        {BRIDGE: edit(EXCHANGE, '  local line, err = message() and \'{"v":1,"verdict":"allow","scores":{}}\'\n')},
    ),
    "lua_socket": (
        "+ the exchange through lua-socket, quoting in Lua",
        "gather",
        {RULES: edit(r",\\\n\s*setvar:'tx\.mlwaf_native=[^']*'", "", True)},
    ),
    "native": ("+ the exchange and quoting in C (as deployed)", "gather", {}),
}


class Editor:
    """Edits files on the test host in place and puts the originals back."""

    def __init__(self, target: bench.Host) -> None:
        self.target = target
        self.originals: dict[str, str] = {}

    def write(self, path: str, text: str) -> None:
        self.target.run(f"cat > {path}", stdin=text)

    def apply(self, edits: dict[str, Callable[[str], str]]) -> None:
        for path, change in edits.items():
            original = self.originals.setdefault(path, self.target.run(f"cat {path}"))
            self.write(path, change(original))
        self.reload()

    def restore(self) -> None:
        for path, text in self.originals.items():
            self.write(path, text)
        self.originals.clear()
        self.reload()

    def reload(self) -> None:
        self.target.run("apache2ctl configtest && systemctl reload apache2 && sleep 1")


def hottest(data: Path) -> list[dict[str, object]]:
    """Apache's 15 hottest symbols in a perf recording."""
    command = ["perf", "report", "-i", str(data), "--comms", "apache2", "--sort", "dso,sym"]
    command += ["--stdio", "--no-children", "-q", "-g", "none"]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in text.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if match:
            rows.append({"share": float(match[1]) / 100, "dso": match[2], "symbol": match[3].strip()})
    return rows[:15]


def measure(args: argparse.Namespace, step: str, label: str, base: str, perf: Path | None = None) -> dict[str, object]:
    bench.wrk(args, bench.MIXES["benign"], 2)  # warm up
    recorder = None
    if perf is not None:
        command = ["perf", "record", "-a", "-F", "999", "-o", str(perf), "--", "sleep", str(max(1.0, args.seconds - 2))]
        recorder = threading.Timer(1.0, subprocess.run, (command,), {"capture_output": True, "check": False})
        recorder.start()
    summary = bench.wrk(args, bench.MIXES["benign"], args.seconds)
    row: dict[str, object] = {
        "step": step,
        "label": label,
        "adds_to": base,
        "req_per_s": round(summary["req_per_s"], 1),
        "apache_cpu_ms_per_req": summary["cpu_ms_per_req_by"]["apache"],  # type: ignore[index]
        "analyzer_cpu_ms_per_req": summary["cpu_ms_per_req_by"]["analyzer"],  # type: ignore[index]
    }
    if recorder is not None and perf is not None:
        recorder.join()
        time.sleep(0.5)
        if perf.exists():
            row["hottest"] = hottest(perf)
    print(f"{step}: {row['apache_cpu_ms_per_req']:.3f} ms of Apache CPU per request", file=sys.stderr)
    return row


def markdown(report: dict[str, object]) -> str:
    steps = report["steps"]  # type: ignore[assignment]
    lines = [
        f"# Where Apache's time goes with the ML bridge ({report['date']}, {report['cpus']} CPUs)",
        "",
        "`make profile-bridge` (`.venv/bin/python scripts/profile-bridge.py`): the benign mix of `make bench`,",
        f"{report['seconds']:g} s per step, {report['connections']} connections. Apache's CPU milliseconds per",
        "request; each step adds one part of the bridge's work to the step named in `to`.",
        "",
        "| step | what it adds | to | req/s | Apache ms/req | the step costs |",
        "|---|---|---|---:|---:|---:|",
    ]
    ms = {row["step"]: float(row["apache_cpu_ms_per_req"]) for row in steps}  # type: ignore[attr-defined]
    for row in steps:  # type: ignore[attr-defined]
        base = row["adds_to"]
        cost = f"{ms[row['step']] - ms[base]:+.3f}" if base in ms else ""
        rate = f"{row['req_per_s']:,.0f}"
        lines.append(f"| {row['step']} | {row['label']} | {base} | {rate} | {ms[row['step']]:.3f} | {cost} |")
    first, last = steps[0], steps[-1]  # type: ignore[index]
    bridge = float(last["apache_cpu_ms_per_req"]) - float(first["apache_cpu_ms_per_req"])
    lines += ["", f"The bridge as deployed costs Apache {bridge:.3f} ms per request over ModSecurity alone.", ""]
    if "hottest" in last:
        lines += ["Apache's hottest symbols as deployed (share of its perf samples):", ""]
        lines += [f"- {h['share']:.1%} {h['dso']} {h['symbol']}" for h in last["hottest"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per step (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--url", default="http://127.0.0.1/")
    parser.add_argument("--host", default="mlwaf.test", help="Host header (the scenario's apache_server_name)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed: `make host-deps` installs it")
    log = bench.BENCH / "converge.log"
    log.write_text("")
    steps = []
    try:
        target = bench.Host(*bench.host(args.scenario))
        editor = Editor(target)
        target.converge(args.scenario, bench.STACKS["modsec"][1], log)
        steps.append(measure(args, "modsec", "ModSecurity, no rules", ""))
        target.converge(args.scenario, bench.STACKS["ml"][1], log)
        with tempfile.TemporaryDirectory() as workdir:
            for step, (label, base, edits) in STEPS.items():
                try:
                    editor.apply(edits)
                    perf = Path(workdir) / "native.perf" if step == "native" and shutil.which("perf") else None
                    steps.append(measure(args, step, label, base, perf))
                finally:
                    editor.restore()
        bench.converge(args.scenario, {}, log)  # leave the host as the playbook's defaults make it
    except (bench.BenchError, subprocess.CalledProcessError) as error:  # perf report
        print(f"profile-bridge: {error}", file=sys.stderr)
        return 1
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "connections": args.connections,
        "steps": steps,
    }
    (bench.BENCH / "bridge-profile.json").write_text(json.dumps(report, indent=2) + "\n")
    (bench.BENCH / "bridge-profile.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
