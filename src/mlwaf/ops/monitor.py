"""The live monitor (``waf_monitor.sh``, ``mlwaf monitor``): what the appliance did
over the last minute (or since a time), read from its logs, and its health."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

from mlwaf.ops.health import check
from mlwaf.ops.logs import (
    Access,
    Decision,
    Tail,
    Tally,
    parse_access,
    parse_decision,
    parse_fallback,
    parse_performance,
    percentile,
)
from mlwaf.ops.settings import MonitoringSettings

TOP = 5
RECENT = 8


def _percentiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)}


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


class Followed:
    """The logs the monitor reads, followed from one snapshot to the next."""

    def __init__(self, settings: MonitoringSettings) -> None:
        logs = settings.logs
        self.tallies = {name: Tally() for name in ("access", "performance", "decisions", "fallbacks")}
        self.access = Tail(Path(logs.access_log), parse_access, self.tallies["access"])
        self.timings = Tail(Path(logs.performance_log), parse_performance, self.tallies["performance"])
        self.decisions = Tail(Path(logs.decision_log), parse_decision, self.tallies["decisions"])
        self.unanswered = Tail(Path(logs.fallback_log), parse_fallback, self.tallies["fallbacks"])


def snapshot(
    settings: MonitoringSettings,
    since: float,
    now: float | None = None,
    health: bool = True,
    logs: Followed | None = None,
) -> dict:
    """The figures the monitor shows, for the entries from ``since`` on (machine-readable, ``--json``);
    ``logs``: the followed logs of the previous snapshot, if any."""
    now = time.time() if now is None else now
    logs = Followed(settings) if logs is None else logs
    tallies, agent = logs.tallies, settings.services.probe_user_agent
    access: list[Access] = [a for a in logs.access.since(since) if a.user_agent != agent]
    timings = logs.timings.since(since)
    decisions: list[Decision] = logs.decisions.since(since)
    unanswered = logs.unanswered.since(since)
    blocked = Counter(a.blocked_by for a in access if a.blocked_by)
    ml_blocks = [d for d in decisions if d.verdict == "block"]
    by_model = Counter(d.model for d in ml_blocks)
    total, window = len(access), max(now - since, 1e-9)
    out: dict = {
        "ts": round(now, 3),
        "since": round(since, 3),
        "window_s": round(window, 1),
        "requests": total,
        "requests_per_s": round(total / window, 2),
        "statuses": dict(sorted(Counter(f"{a.status // 100}xx" for a in access).items())),
        "blocked": {
            "total": blocked.total(),
            "rules": blocked["rules"],
            "ml": blocked["ml"],
            "share": _share(blocked.total(), total),
            "rules_share": _share(blocked["rules"], total),
            "ml_share": _share(blocked["ml"], total),
            "ml_by_model": {model: {"count": n, "share": _share(n, total)} for model, n in by_model.most_common()},
        },
        "flagged": sum(1 for d in decisions if d.verdict == "log"),
        "latency_ms": _percentiles([a.ms for a in access]),
        "ml_ms": {**_percentiles([t.ms for t in timings]), "scored": len(timings)},
        "unanswered": len(unanswered),  # the analyzer did not answer in time
        "unanswered_by_outcome": dict(sorted(Counter(u.outcome for u in unanswered).items())),
        "top_families": Counter(f"{d.model}/{d.family}" for d in decisions if d.reasons).most_common(TOP),
        "top_blocked_clients": Counter(a.client for a in access if a.blocked_by).most_common(TOP),
        "recent_decisions": [
            {"ts": d.ts, "client": d.client, "verdict": d.verdict, "model": d.model, "family": d.family, "path": d.path}
            for d in decisions[-RECENT:]
        ],
        "skipped_lines": {name: t.skipped for name, t in tallies.items()},
    }
    if health:
        out["health"] = check(settings).as_dict()
    return out


def render(view: dict) -> str:
    """The snapshot as a plain-text screen (80 columns, no colours: it must read over any SSH terminal)."""
    blocked, ml, lat = view["blocked"], view["ml_ms"], view["latency_ms"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(view["ts"]))
    lines = [
        f"mlwaf monitor  {when}  (last {view['window_s']:.0f} s)",
        f"health     {view['health']['line']}" if "health" in view else "",
        f"requests   {view['requests']} ({view['requests_per_s']:.1f}/s)  "
        + "  ".join(f"{k}: {v}" for k, v in view["statuses"].items()),
        f"blocked    {blocked['total']} ({blocked['share']:.1%}): rules (CRS) {blocked['rules']} "
        f"({blocked['rules_share']:.1%}), ML {blocked['ml']} ({blocked['ml_share']:.1%})"
        + "".join(f", {m} {v['count']}" for m, v in blocked["ml_by_model"].items()),
        f"flagged    {view['flagged']} (logged, passed)",
        f"latency    p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  p99 {lat['p99']:.1f} ms (Apache, %D)",
        f"ML time    p50 {ml['p50']:.2f} ms  p95 {ml['p95']:.2f} ms  p99 {ml['p99']:.2f} ms "
        f"({ml['scored']} scored, bridge round trip; {view['unanswered']} unanswered"
        + "".join(f", {k} {v}" for k, v in view["unanswered_by_outcome"].items())
        + ")",
        "top families     " + (", ".join(f"{f} {n}" for f, n in view["top_families"]) or "-"),
        "top blocked      " + (", ".join(f"{c} {n}" for c, n in view["top_blocked_clients"]) or "-"),
        "recent decisions" + ("" if view["recent_decisions"] else "  -"),
    ]
    for d in reversed(view["recent_decisions"]):
        stamp = time.strftime("%H:%M:%S", time.localtime(d["ts"]))
        lines.append(f"  {stamp} {d['verdict']:<5} {d['model']}/{d['family']:<20} {d['client']:<15} {d['path'][:30]}")
    skipped = {k: v for k, v in view["skipped_lines"].items() if v}
    if skipped:
        lines.append("unreadable lines skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    return "\n".join(line for line in lines if line)


def run(
    settings: MonitoringSettings,
    *,
    window: float,
    interval: float,
    once: bool,
    as_json: bool,
    since: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Show snapshots until interrupted (or one, with ``once``: exit status 1 when unhealthy)."""
    logs = Followed(settings)
    try:
        while True:
            now = time.time()
            view = snapshot(settings, since if since is not None else now - window, now, logs=logs)
            text = json.dumps(view) if as_json else render(view)
            if once:
                print(text, file=out)
                return 0 if view["health"]["healthy"] else 1
            out.write("\033[H\033[2J" + text + "\n")  # home, clear: a redraw any terminal understands
            out.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
