"""The performance check (``mlwaf performance-check``), run every minute by the
``performance_monitor`` systemd timer: one metric line (probe response time,
traffic, errors, CPU, memory, disk, the analyzer's queue and time, canary
detection and false-positive rates, model load time) and the alerts its
thresholds raise, to the journal and syslog with their severity and, if set,
to a webhook."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import syslog
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlwaf.ops.canary import run_canaries
from mlwaf.ops.health import disk_used, probe, scrape
from mlwaf.ops.logs import LogError, Tally, parse_access, parse_fallback, parse_performance, percentile, recent
from mlwaf.ops.settings import MonitoringSettings

SEVERITIES = {"warning": syslog.LOG_WARNING, "error": syslog.LOG_ERR, "critical": syslog.LOG_CRIT}
FIRST_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Alert:
    severity: str  # warning, error, critical
    name: str
    value: float
    threshold: float
    message: str

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [float(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


def memory_used() -> float:
    """Share of memory in use (1 - MemAvailable / MemTotal)."""
    info: dict[str, float] = {}
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            info[key] = float(value.split()[0])
    return 1 - info["MemAvailable"] / info["MemTotal"]


def queue_depth(socket_path: str) -> int:
    """Connections waiting in the analyzer's accept queue (``ss``'s Recv-Q of its listening socket); -1 unknown."""
    if shutil.which("ss") is None:
        return -1
    done = subprocess.run(["ss", "-Hxl"], capture_output=True, text=True, check=False, timeout=10)
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[4] == socket_path:
            return int(fields[2])
    return -1


def measure(settings: MonitoringSettings, state: dict, now: float) -> dict[str, float]:
    """The metric line's figures; ``state`` (the last run's clock and CPU counters) is updated."""
    services, logs = settings.services, settings.logs
    since = float(state.get("ts", now - FIRST_INTERVAL_S))
    interval = max(now - since, 1.0)
    status, response_ms = probe(services.probe_url, services.probe_user_agent, services.probe_timeout)
    try:
        access = [
            a
            for a in recent(Path(logs.access_log), parse_access, Tally(), since)
            if a.user_agent != services.probe_user_agent
        ]
        timings = [t.ms for t in recent(Path(logs.performance_log), parse_performance, Tally(), since)]
        unanswered = len(recent(Path(logs.fallback_log), parse_fallback, Tally(), since))
        readable = 1.0
    except LogError:
        access, timings, unanswered, readable = [], [], 0, 0.0
    busy, total = cpu_times()
    last_busy, last_total = state.get("cpu", (0.0, 0.0))
    figures: dict[str, float] = {
        "response_ms": round(response_ms, 1),
        "status": status,
        "requests_per_s": round(len(access) / interval, 2),
        "error_rate": round(sum(1 for a in access if a.status >= 500) / len(access), 4) if access else 0.0,
        "unanswered_rate": round(unanswered / (len(timings) + unanswered), 4) if unanswered else 0.0,
        "cpu": round((busy - last_busy) / max(total - last_total, 1.0), 3),
        "memory": round(memory_used(), 3),
        "disk": round(max((disk_used(p) for p in settings.alerts.disk_paths), default=0.0), 3),
        "queue": queue_depth(services.socket),
        "ml_ms_p50": round(percentile(timings, 50), 3),
        "ml_ms_p95": round(percentile(timings, 95), 3),
        "analyzer_up": 1.0,
        "logs_readable": readable,
    }
    try:
        canaries = run_canaries(services.socket)
        figures["detection_rate"] = round(canaries.detection_rate, 3)
        figures["false_positive_rate"] = round(canaries.false_positive_rate, 3)
    except (OSError, ValueError):
        figures["analyzer_up"] = 0.0
    if services.metrics_url:
        with contextlib.suppress(OSError, ValueError):
            figures["model_load_s"] = round(scrape(services.metrics_url).get("mlwaf_model_load_seconds", 0.0), 3)
    state.update(ts=now, cpu=(busy, total))
    return figures


def evaluate(figures: dict[str, float], settings: MonitoringSettings) -> list[Alert]:
    """The alerts the figures raise against the thresholds."""
    limits, alerts = settings.alerts, []

    def above(name: str, limit: float, severity: str, what: str) -> None:
        if name in figures and figures[name] > limit:
            alerts.append(Alert(severity, name, figures[name], limit, f"{what} {figures[name]:g} > {limit:g}"))

    def below(name: str, limit: float, severity: str, what: str) -> None:
        if name in figures and figures[name] < limit:
            alerts.append(Alert(severity, name, figures[name], limit, f"{what} {figures[name]:g} < {limit:g}"))

    if not figures["status"] or figures["status"] >= 500:
        alerts.append(
            Alert("critical", "probe", figures["status"], 500, f"probe answered {figures['status'] or 'nothing'}")
        )
    below("analyzer_up", 1, "critical", "analyzer not answering on its socket:")
    below("logs_readable", 1, "error", "access or performance log unreadable (permissions?):")
    above("response_ms", limits.response_ms, "warning", "response time (ms)")
    if limits.traffic_expected:
        below("requests_per_s", limits.min_requests_per_s, "warning", "requests per second")
    above("error_rate", limits.error_rate, "error", "error rate (5xx share)")
    above("unanswered_rate", limits.unanswered_rate, "error", "share of requests the analyzer did not answer in time")
    below("detection_rate", limits.detection_rate, "critical", "canary detection rate")
    above("false_positive_rate", limits.false_positive_rate, "critical", "canary false-positive rate")
    above("cpu", limits.cpu, "warning", "CPU use")
    above("memory", limits.memory, "error", "memory use")
    above("disk", limits.disk, "error", "disk use")
    above("model_load_s", limits.model_load_s, "warning", "model load time (s)")
    return alerts


def metric_line(figures: dict[str, float], now: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return stamp + " " + " ".join(f"{k}={v:g}" for k, v in figures.items())


def send_webhook(url: str, firing: list[Alert], resolved: list[str], timeout: float) -> str:
    """POST what changed (alerts that started, names of those that ended) as JSON; the error as
    text, or "" when it was accepted."""
    body = {"host": socket.gethostname(), "ts": time.time(), "firing": [a.as_dict() for a in firing]}
    body["resolved"] = resolved
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
    except (OSError, ValueError) as exc:
        return str(exc)
    return ""


def _state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def run_check(settings: MonitoringSettings, now: float | None = None) -> tuple[str, list[Alert]]:
    """One check: the metric line (also appended to the metrics log) and the alerts raised. Every
    alert goes to syslog each time; the webhook hears of an alert when it starts and when it ends
    (and again next time, if it could not be told)."""
    now = time.time() if now is None else now
    state_path = Path(settings.services.state_file)
    state = _state(state_path)
    before = set(state.get("firing", []))
    figures = measure(settings, state, now)
    line = metric_line(figures, now)
    alerts = evaluate(figures, settings)
    current = {a.name for a in alerts}
    state["firing"] = sorted(current)
    syslog.openlog("mlwaf-alert", syslog.LOG_PID, syslog.LOG_DAEMON)
    started, ended = [a for a in alerts if a.name not in before], sorted(before - current)
    if (started or ended) and settings.alerts.webhook_url:
        error = send_webhook(settings.alerts.webhook_url, started, ended, settings.alerts.webhook_timeout)
        if error:
            syslog.syslog(syslog.LOG_ERR, f"ERROR: alert webhook {settings.alerts.webhook_url} failed: {error}")
            state["firing"] = sorted(before)  # tell it next time
    try:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = state_path.with_suffix(f".{os.getpid()}")
        temporary.write_text(json.dumps(state))
        temporary.replace(state_path)
        with Path(settings.logs.metrics_log).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as exc:
        alerts.append(Alert("error", "monitor", 0, 0, f"cannot keep the check's state or line: {exc}"))
    for alert in alerts:
        syslog.syslog(SEVERITIES[alert.severity], f"{alert.severity.upper()}: {alert.message}")
    return line, alerts
