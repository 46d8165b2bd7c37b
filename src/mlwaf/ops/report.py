"""The performance report (``analyze_waf_performance.py``, ``mlwaf report``): the
access log, ``ml_performance.log`` and the decision log over a time range, as
an HTML page with PNG charts and a plain-text summary."""

from __future__ import annotations

import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlwaf.ops.logs import (
    Access,
    Decision,
    Performance,
    Tally,
    entries,
    parse_access,
    parse_decision,
    parse_performance,
    percentile,
)
from mlwaf.ops.settings import MonitoringSettings

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlwaf performance report</title>
<style>body{font-family:sans-serif;max-width:64em;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%}</style></head><body>
<h1>mlwaf performance report</h1>
<p>{{ start }} to {{ end }} ({{ hours }} h) on {{ host }}</p>
<h2>Summary</h2>
<table>{% for name, value in summary %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}</table>
<h2>Blocks per family</h2>
<table><tr><th>model / family</th><th>blocked</th><th>logged</th></tr>
{% for family, counts in families %}<tr><td>{{ family }}</td><td>{{ counts.block }}</td><td>{{ counts.log }}</td></tr>
{% endfor %}</table>
{% for chart in charts %}<h2>{{ chart.title }}</h2><img src="{{ chart.file }}" alt="{{ chart.title }}">
{% endfor %}
{% if skipped %}<p>Unreadable lines skipped: {{ skipped }}</p>{% endif %}
</body></html>
"""


class ReportError(ValueError):
    """A report that cannot be made (bad time range, missing library)."""


def parse_when(text: str, now: float) -> float:
    """A time as Unix seconds: ``1700000000``, ``2026-11-21T20:00[:00]``, ``2026-11-21 20:00``,
    ``2026-11-21``, or a span before now (``90m``, ``24h``, ``7d``)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ReportError(f"cannot read the time {text!r}: use 2026-11-21T20:00, a Unix time or 24h") from None


@dataclass
class Data:
    access: list[Access]
    timings: list[Performance]
    decisions: list[Decision]
    tallies: dict[str, Tally]


def read(settings: MonitoringSettings, since: float, until: float) -> Data:
    logs = settings.logs
    tallies = {name: Tally() for name in ("access", "performance", "decisions")}
    agent = settings.services.probe_user_agent
    access = [
        a
        for a in entries(Path(logs.access_log), parse_access, tallies["access"], since, until)
        if a.user_agent != agent
    ]
    timings = list(entries(Path(logs.performance_log), parse_performance, tallies["performance"], since, until))
    decisions = list(entries(Path(logs.decision_log), parse_decision, tallies["decisions"], since, until))
    return Data(access, timings, decisions, tallies)


def families(data: Data) -> list[tuple[str, dict[str, int]]]:
    """Blocked and logged requests per model/family; CRS's blocks as "rules (CRS)"."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"block": 0, "log": 0})
    for d in data.decisions:
        if d.verdict in ("block", "log"):
            counts[f"{d.model}/{d.family}"][d.verdict] += 1
    rules = sum(1 for a in data.access if a.blocked_by == "rules")
    if rules:
        counts["rules (CRS)"]["block"] = rules
    return sorted(counts.items(), key=lambda item: -item[1]["block"] - item[1]["log"])


def summary(data: Data, since: float, until: float) -> list[tuple[str, str]]:
    total = len(data.access)
    blocked = Counter(a.blocked_by for a in data.access if a.blocked_by)
    latency = [a.ms for a in data.access]
    timings = [t.ms for t in data.timings]
    span = max(min(until, time.time()) - since, 1.0)

    def share(n: int) -> str:
        return f"{n} ({n / total:.2%})" if total else str(n)

    return [
        ("requests", str(total)),
        ("requests per second (mean)", f"{total / span:.2f}"),
        ("blocked", share(blocked.total())),
        ("blocked by rules (CRS)", share(blocked["rules"])),
        ("blocked by ML", share(blocked["ml"])),
        ("flagged by ML (logged, passed)", str(sum(1 for d in data.decisions if d.verdict == "log"))),
        ("server errors (5xx)", share(sum(1 for a in data.access if a.status >= 500))),
        *((f"latency p{q} (ms, Apache %D)", f"{percentile(latency, q):.2f}") for q in (50, 95, 99)),
        *((f"ML time p{q} (ms, bridge round trip)", f"{percentile(timings, q):.3f}") for q in (50, 95, 99)),
        ("requests scored by ML", str(len(timings))),
    ]


def _buckets(since: float, until: float) -> float:
    return max(60.0, math.ceil((until - since) / 60 / 60) * 60)


def _per_bucket(data: Data, since: float, step: float) -> tuple[dict[int, list[Access]], dict[int, list[float]]]:
    """Access entries and ML timings by time bucket of ``step`` seconds."""
    per: dict[int, list[Access]] = defaultdict(list)
    for a in data.access:
        per[int((a.ts - since) // step)].append(a)
    ml_per: dict[int, list[float]] = defaultdict(list)
    for t in data.timings:
        ml_per[int((t.ts - since) // step)].append(t.ms)
    return per, ml_per


def charts(data: Data, since: float, until: float, out: Path) -> list[dict[str, str]]:
    """The PNG charts in ``out``; their titles and file names."""
    try:
        import matplotlib  # noqa: PLC0415 - only the report needs it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise ReportError("matplotlib is not installed: pip install 'mlwaf[report]'") from None
    step = _buckets(since, until)
    per, ml_per = _per_bucket(data, since, step)
    slots = sorted(set(per) | set(ml_per))
    x = [datetime.fromtimestamp(since + (s + 0.5) * step) for s in slots]
    made = []

    def save(figure, name: str, title: str) -> None:
        figure.tight_layout()
        figure.savefig(out / name, dpi=90)
        plt.close(figure)
        made.append({"title": title, "file": name})

    figure, axis = plt.subplots(figsize=(9, 4))
    for q in (50, 95, 99):
        axis.plot(x, [percentile([a.ms for a in per[s]], q) for s in slots], label=f"Apache p{q}", marker=".")
    axis.plot(x, [percentile(ml_per[s], 95) for s in slots], label="ML p95 (round trip)", linestyle="--", marker=".")
    axis.set_ylabel("milliseconds")
    axis.legend()
    figure.autofmt_xdate()
    save(figure, "latency.png", "Latency percentiles over time")

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot(x, [len(per[s]) / step for s in slots], label="requests/s", marker=".")
    axis.plot(x, [sum(1 for a in per[s] if a.blocked_by) / step for s in slots], label="blocked/s", marker=".")
    axis.set_ylabel(f"per second ({step:.0f} s buckets)")
    axis.legend()
    figure.autofmt_xdate()
    save(figure, "throughput.png", "Throughput")

    rows = families(data)
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.4 * len(rows) + 1)))
    names = [name for name, _ in rows][::-1]
    axis.barh(names, [counts["block"] for _, counts in rows][::-1], label="blocked")
    axis.barh(
        names, [counts["log"] for _, counts in rows][::-1], left=[c["block"] for _, c in rows][::-1], label="logged"
    )
    axis.set_xlabel("requests")
    axis.legend()
    save(figure, "families.png", "Blocks per family")

    figure, axis = plt.subplots(figsize=(9, 4))
    by_model: dict[str, list[float]] = defaultdict(list)
    for d in data.decisions:
        for model, score in d.scores.items():
            by_model[model].append(score)
    for model, scores in sorted(by_model.items()):
        axis.hist(scores, bins=20, range=(0, 1), alpha=0.6, label=model)
    axis.set_xlabel("score (requests the analyzer logged or blocked)")
    axis.set_ylabel("requests")
    if by_model:
        axis.legend()
    save(figure, "scores.png", "Score distributions")
    return made


def write_report(settings: MonitoringSettings, since: float, until: float, out: Path, host: str) -> str:
    """Write ``index.html``, ``summary.txt`` and the charts into ``out``; the summary's text."""
    try:
        import jinja2  # noqa: PLC0415 - only the report needs it
    except ImportError:
        raise ReportError("jinja2 is not installed: pip install 'mlwaf[report]'") from None
    if until <= since:
        raise ReportError("--until must be after --since")
    out.mkdir(parents=True, exist_ok=True)
    data = read(settings, since, until)
    rows = summary(data, since, until)
    made = charts(data, since, until, out)
    skipped = ", ".join(f"{name} {t.skipped}" for name, t in data.tallies.items() if t.skipped)
    start, end = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in (since, min(until, time.time())))
    page = (
        jinja2.Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            start=start,
            end=end,
            hours=f"{(min(until, time.time()) - since) / 3600:.1f}",
            host=host,
            summary=rows,
            families=families(data),
            charts=made,
            skipped=skipped,
        )
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    text = "\n".join(
        [f"mlwaf performance report, {start} to {end}, {host}"]
        + [f"  {name:<38} {value}" for name, value in rows]
        + ["  blocks per family:"]
        + [f"    {name:<36} blocked {c['block']}, logged {c['log']}" for name, c in families(data)]
        + ([f"  unreadable lines skipped: {skipped}"] if skipped else [])
    )
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    return text
