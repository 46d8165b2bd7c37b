"""Settings of the operations tools, read from ``/etc/mlwaf/monitoring.toml``
(the monitoring role writes it). Every key is optional; unknown keys and wrong
types are errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from mlwaf.config import ConfigError, read_toml

DEFAULT_MONITORING_CONFIG = Path("/etc/mlwaf/monitoring.toml")


@dataclass(frozen=True)
class Logs:
    access_log: str = "/var/log/apache2/access.log"  # Apache's waf_combined format (with %D)
    performance_log: str = "/var/log/apache2/ml_performance.log"
    fallback_log: str = "/var/log/apache2/ml_fallback.log"
    decision_log: str = "/var/log/mlwaf/decisions.jsonl"
    metrics_log: str = "/var/log/mlwaf/performance_monitor.log"  # the performance check's metric lines


@dataclass(frozen=True)
class Services:
    analyzer: str = "mlwaf-analyzer.service"
    apache: str = "apache2.service"
    socket: str = "/run/mlwaf/analyzer.sock"
    metrics_url: str = "http://127.0.0.1:9464/metrics"  # empty: the analyzer exports none
    probe_url: str = "http://127.0.0.1/"  # the request whose response time is measured
    probe_user_agent: str = "mlwaf-probe/1"  # the monitor leaves these requests out of its figures
    probe_timeout: float = 5.0
    state_file: str = "/var/lib/mlwaf/performance_monitor.json"


@dataclass(frozen=True)
class Alerts:
    response_ms: float = 500.0
    min_requests_per_s: float = 100.0
    traffic_expected: bool = False  # alert on too little traffic only when some is expected
    error_rate: float = 0.05
    unanswered_rate: float = 0.01  # requests the bridge passed (or refused) without the analyzer's answer
    detection_rate: float = 0.90
    false_positive_rate: float = 0.10
    cpu: float = 0.80
    memory: float = 0.90
    disk: float = 0.80
    disk_paths: tuple[str, ...] = ("/", "/var/log")
    model_load_s: float = 1.0
    webhook_url: str = ""
    webhook_timeout: float = 5.0


@dataclass(frozen=True)
class MonitoringSettings:
    logs: Logs = Logs()
    services: Services = Services()
    alerts: Alerts = Alerts()


def _section(cls: type, table: object, name: str):
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{name}]: {', '.join(unknown)}")
    values = {}
    for key, raw in table.items():
        default, value = getattr(cls, key), raw
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{name}] {key} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise ConfigError(f"[{name}] {key} must be {type(default).__name__}, got {type(value).__name__}")
        if isinstance(value, float) and value < 0:
            raise ConfigError(f"[{name}] {key} must not be negative")
        values[key] = value
    return cls(**values)


def load_monitoring(path: Path | None = None) -> MonitoringSettings:
    """The settings in ``path`` (default: DEFAULT_MONITORING_CONFIG if it exists, else the built-in defaults)."""
    if path is None:
        if not DEFAULT_MONITORING_CONFIG.exists():
            return MonitoringSettings()
        path = DEFAULT_MONITORING_CONFIG
    raw = read_toml(path)
    parts = {"logs": Logs, "services": Services, "alerts": Alerts}
    unknown = sorted(set(raw) - set(parts))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s): {', '.join(unknown)}")
    try:
        return MonitoringSettings(**{name: _section(cls, raw.get(name, {}), name) for name, cls in parts.items()})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
