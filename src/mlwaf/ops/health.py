"""Is the appliance healthy? One line that says so, or why not (``mlwaf status``, the monitor)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mlwaf.ops.settings import MonitoringSettings
from mlwaf.protocol import CANARY_PREFIX, VERSION, exchange


@dataclass
class Health:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def line(self) -> str:
        if self.problems:
            return "UNHEALTHY: " + "; ".join(self.problems)
        return "healthy: " + ", ".join(self.facts)

    def as_dict(self) -> dict[str, object]:
        return {"healthy": self.healthy, "line": self.line, "problems": self.problems, "facts": self.facts}


def service_state(unit: str) -> str:
    """``systemctl is-active``'s word for a unit ("active", "failed", ...); "unknown" without systemd."""
    if not unit or shutil.which("systemctl") is None:
        return "unknown"
    done = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True, check=False, timeout=10)
    return done.stdout.strip() or "unknown"


def ask_analyzer(path: str, message: dict[str, object], timeout: float = 2.0) -> dict:
    """One request on the analyzer's socket and its reply; raises OSError or ValueError."""
    data = exchange(path, {"v": VERSION, **message}, timeout)
    reply = json.loads(data)
    if not isinstance(reply, dict) or "verdict" not in reply:
        raise ValueError(f"not an analyzer reply: {data[:80]!r}")
    return reply


def probe(url: str, user_agent: str, timeout: float) -> tuple[int, float]:
    """GET ``url``: its status (0 when nothing answered) and milliseconds taken."""
    started = time.perf_counter()
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError):
        status = 0
    return status, (time.perf_counter() - started) * 1000


def scrape(url: str, timeout: float = 3.0) -> dict[str, float]:
    """The analyzer's metrics, ``name{label="v",...}`` (labels sorted) to value; raises OSError."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def disk_used(path: str) -> float:
    """Share of the file system under ``path`` in use; 0.0 when it cannot be read."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return 0.0
    return usage.used / usage.total


def check_metrics(health: Health, url: str) -> None:
    """What the analyzer's own metrics say: workers running, Redis reachable."""
    try:
        health.metrics = scrape(url)
    except (OSError, ValueError) as exc:
        health.problems.append(f"no metrics at {url} ({exc})")
        return
    workers = health.metrics.get("mlwaf_workers", 0)
    health.facts.append(f"{workers:.0f} workers")
    if workers < 1:
        health.problems.append("the analyzer runs no worker")
    if health.metrics.get("mlwaf_behaviour_redis_down", 0):
        health.problems.append("Redis unreachable: behavioural state is node-local")


def check(settings: MonitoringSettings) -> Health:
    services, health = settings.services, Health()
    for name, unit in (("analyzer", services.analyzer), ("Apache", services.apache)):
        state = service_state(unit)
        if state not in ("active", "unknown"):
            health.problems.append(f"{name} service {unit} is {state}")
    try:
        started = time.perf_counter()
        ask_analyzer(services.socket, {"id": f"{CANARY_PREFIX}health", "path": "/"})
        health.facts.append(f"analyzer answers in {(time.perf_counter() - started) * 1000:.1f} ms")
    except (OSError, ValueError) as exc:
        health.problems.append(f"analyzer does not answer on {services.socket} ({exc})")
    status, ms = probe(services.probe_url, services.probe_user_agent, services.probe_timeout)
    if status == 0 or status >= 500:
        health.problems.append(f"{services.probe_url} answers {status or 'nothing'}")
    else:
        health.facts.append(f"{services.probe_url} answers {status} in {ms:.0f} ms")
    if services.metrics_url:
        check_metrics(health, services.metrics_url)
    for path in settings.alerts.disk_paths:
        used = disk_used(path)
        if used > settings.alerts.disk:
            health.problems.append(f"disk {path} {used:.0%} full")
    return health
