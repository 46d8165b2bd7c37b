"""The analyzer's settings, read from a TOML file (``/etc/mlwaf/analyzer.toml``).

Every key is optional; see ``docs`` in the ml_analyzer role for the file the
role writes. Unknown keys and wrong types are errors with the key's name, so
a typo never silently turns a protection off.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from mlwaf.profile import KINDS as PROFILE_KINDS
from mlwaf.request import Limits

MODES = ("block", "detection-only")
RUNTIMES = ("litert-int8", "litert-float", "tensorflow")  # mlwaf.model imports numpy; this module stays light
DEFAULT_CONFIG = Path("/etc/mlwaf/analyzer.toml")


class ConfigError(ValueError):
    """Settings that cannot be used."""


@dataclass(frozen=True)
class ModelSettings:
    path: str
    block_threshold: float | None = None  # None: the threshold calibrated at training time
    log_threshold: float | None = None
    runtime: str = "litert-int8"  # litert-int8, litert-float or tensorflow (see mlwaf.model.RUNTIMES)


@dataclass(frozen=True)
class ParamAllow:
    """An input the attack models leave alone: all of it, or (``families``) for those families only."""

    name: str
    path: str = ""  # path prefix; empty: every path
    endpoint: str = ""  # one endpoint (id-like segments as {id}, mlwaf.profile.endpoint_of); empty: any
    families: tuple[str, ...] = ()  # attack families not scored on it; empty: the input is not scored at all

    def covers(self, path: str, endpoint: str) -> bool:
        return path.startswith(self.path) and (not self.endpoint or endpoint == self.endpoint)


@dataclass(frozen=True)
class ProfileSettings:
    """The application profile: a third verdict source (see mlwaf.profile)."""

    path: str = ""  # the learned profile (JSON); empty: requests are not scored against one
    mode: str = "block"  # block, or detection-only: deviations are logged, never blocked
    block_threshold: float = 0.95
    log_threshold: float = 0.9
    ignore: tuple[str, ...] = ()  # deviation kinds not scored (mlwaf.profile.KINDS)
    observations: str = ""  # learning: the shapes of allowed requests are appended here


BEHAVIOUR_PROFILES = ("development", "staging", "production")  # mlwaf.behaviour.detect.PROFILES
CLIENT_KEYS = ("ip", "ip+ua")


@dataclass(frozen=True)
class BehaviourSettings:
    """The behavioural layer (mlwaf.behaviour): per-client history and its verdicts."""

    enabled: bool = False
    profile: str = "production"  # development (log only), staging or production
    max_clients: int = 50_000  # hard cap; 1,728 bytes a client with history = 50
    history: int = 50  # requests kept per client
    window: float = 300.0  # seconds
    client_key: str = "ip"  # ip, or ip+ua (address plus User-Agent)
    hash_clients: bool = False  # the decision log names clients by a salted hash
    login_paths: str = r"(?i)(login|logon|signin|sign-in|auth|session|wp-login)"
    baseline: str = ""  # where the per-endpoint rate baseline is kept across restarts (empty: not kept)
    redis_url: str = ""  # shared history for several nodes (redis://host:6379/0, unix:///run/redis.sock); empty: local
    redis_timeout: float = 0.02  # seconds; past it the node goes on with local state
    geoip_database: str = ""  # country of clients (MaxMind .mmdb or legacy GeoIP.dat); empty: none
    model: str = ""  # the flood/bot model's metadata JSON (flood.json); empty: the heuristics alone
    model_runtime: str = "litert-int8"
    model_action: str = "log"  # log: the model's findings are logged, never ban; block: they ban like the heuristics'
    # clients never tracked or banned (local tools, monitoring, load balancers' health checks)
    exempt_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


@dataclass(frozen=True)
class Settings:
    socket: str = "/run/mlwaf/analyzer.sock"
    socket_group: str = ""
    socket_mode: int = 0o660
    # users whose processes may ask (SO_PEERCRED), besides root and the analyzer's own; empty: any
    peer_users: tuple[str, ...] = ()
    workers: int = 0  # 0: one per CPU
    mode: str = "block"
    models: dict[str, ModelSettings] = field(default_factory=dict)
    allow_paths: tuple[str, ...] = ()
    allow_params: tuple[ParamAllow, ...] = ()
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    decision_log: str = ""
    log_allowed: bool = False
    log_values: bool = True  # the inputs behind a log/block verdict go into the decision log
    secret_args: tuple[str, ...] = ()  # argument names masked there, besides mlwaf.sensitive.SECRET_ARGS
    # learning for site tuning: flagged requests' shapes are appended here (mlwaf.tuning.record); empty: off
    tuning_record: str = ""
    max_reasons: int = 3
    # request headers the attack models read (names in lower case; "*": all of them), see mlwaf.inputs
    score_headers: tuple[str, ...] = ("*",)
    profile: ProfileSettings = field(default_factory=ProfileSettings)
    behaviour: BehaviourSettings = field(default_factory=BehaviourSettings)
    metrics_listen: str = ""  # host:port of the Prometheus endpoint; empty: none
    metrics_textfile: str = ""  # a .prom file for node_exporter's textfile collector; empty: none

    @property
    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a (host, port) pair; raises ValueError."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics listen address {listen!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def _typed(table: dict, key: str, kind: type | tuple[type, ...], where: str):
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}{key} must be {getattr(kind, '__name__', kind)}, not a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}{key} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where or 'top level'}: {', '.join(unknown)}")


def _threshold(table: dict, key: str, where: str) -> float | None:
    if key not in table:
        return None
    value = _typed(table, key, float, where)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{where}{key} must be in (0, 1], got {value}")
    return value


def _model(name: str, table: object) -> ModelSettings:
    where = f"[models.{name}] "
    if name == "profile":
        raise ConfigError("[models.profile]: the name profile is reserved for the application profile's scores")
    if not isinstance(table, dict) or "path" not in table:
        raise ConfigError(f"{where}needs a path")
    _check_keys(table, {"path", "block_threshold", "log_threshold", "runtime"}, where)
    runtime = _typed(table, "runtime", str, where) if "runtime" in table else ModelSettings.runtime
    if runtime not in RUNTIMES:
        raise ConfigError(f"{where}runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return ModelSettings(
        path=_typed(table, "path", str, where),
        runtime=runtime,
        block_threshold=_threshold(table, "block_threshold", where),
        log_threshold=_threshold(table, "log_threshold", where),
    )


def _server(server: dict) -> dict[str, object]:
    """The [server] table's settings."""
    try:
        socket_mode = int(str(server.get("socket_mode", "660")), 8)
    except ValueError:
        mode = server["socket_mode"]
        raise ConfigError(f'[server] socket_mode must be an octal mode like "660", got {mode!r}') from None
    peers = _typed(server, "peer_users", list, "[server] ") if "peer_users" in server else []
    for name in peers:
        if not isinstance(name, str):
            raise ConfigError(f"[server] peer_users must be user names, got {name!r}")
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise ConfigError(f"[server] peer_users: there is no user {name!r} on this host") from None
    return {
        "socket": server.get("socket", Settings.socket),
        "socket_group": server.get("socket_group", ""),
        "socket_mode": socket_mode,
        "peer_users": tuple(peers),
        "workers": _typed(server, "workers", int, "[server] ") if "workers" in server else 0,
    }


def from_dict(raw: dict) -> Settings:
    """Settings from a parsed TOML document."""
    _check_keys(raw, {"server", "decision", "models", "limits", "logs", "profile", "behaviour", "metrics"}, "")
    server, decision = raw.get("server", {}), raw.get("decision", {})
    limits_raw, logs = raw.get("limits", {}), raw.get("logs", {})
    _check_keys(server, {"socket", "socket_group", "socket_mode", "workers", "peer_users"}, "[server]")
    decision_keys = {"mode", "allow_paths", "allow_params", "allow_networks", "max_reasons", "score_headers"}
    _check_keys(decision, decision_keys, "[decision]")
    _check_keys(limits_raw, {f.name for f in fields(Limits)}, "[limits]")
    _check_keys(logs, {"decision_log", "log_allowed", "log_values", "secret_args", "tuning_record"}, "[logs]")

    models = {name: _model(name, table) for name, table in raw.get("models", {}).items()}
    mode = decision.get("mode", "block")
    if mode not in MODES:
        raise ConfigError(f"[decision] mode must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in decision.get("allow_networks", []))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[decision] allow_networks: {exc}") from None
    params = [_param_allow(item) for item in decision.get("allow_params", [])]

    limit_values = {key: _typed(limits_raw, key, int, "[limits] ") for key in limits_raw}
    if any(v < 1 for v in limit_values.values()):
        raise ConfigError("[limits] values must be positive")
    headers = decision.get("score_headers", list(Settings.score_headers))
    if not isinstance(headers, list) or not all(isinstance(h, str) and h.strip() for h in headers):
        raise ConfigError(f"[decision] score_headers must be a list of header names, got {headers!r}")
    settings = {
        **_server(server),
        "mode": mode,
        "models": models,
        "allow_paths": tuple(str(p) for p in decision.get("allow_paths", [])),
        "allow_params": tuple(params),
        "allow_networks": networks,
        "limits": Limits(**limit_values),
        "decision_log": str(logs.get("decision_log", "")),
        "log_allowed": bool(logs.get("log_allowed", False)),
        "log_values": _typed(logs, "log_values", bool, "[logs] ") if "log_values" in logs else True,
        "secret_args": tuple(
            str(n) for n in (_typed(logs, "secret_args", list, "[logs] ") if "secret_args" in logs else [])
        ),
        "tuning_record": _typed(logs, "tuning_record", str, "[logs] ") if "tuning_record" in logs else "",
        "max_reasons": _typed(decision, "max_reasons", int, "[decision] ") if "max_reasons" in decision else 3,
        "score_headers": tuple(h.strip().lower() for h in headers),
    }
    settings["profile"] = _profile(raw.get("profile", {}))
    settings["behaviour"] = _behaviour(raw.get("behaviour", {}))
    metrics = raw.get("metrics", {})
    _check_keys(metrics, {"listen", "textfile"}, "[metrics]")
    settings["metrics_listen"] = _typed(metrics, "listen", str, "[metrics] ") if "listen" in metrics else ""
    settings["metrics_textfile"] = _typed(metrics, "textfile", str, "[metrics] ") if "textfile" in metrics else ""
    if settings["metrics_listen"]:
        try:
            parse_listen(settings["metrics_listen"])
        except ValueError as exc:
            raise ConfigError(f"[metrics] {exc}") from None
    if settings["workers"] < 0:
        raise ConfigError("[server] workers must be 0 (one per CPU) or more")
    return Settings(**settings)


def _param_allow(item: object) -> ParamAllow:
    where = "[decision] allow_params: "
    if isinstance(item, str) and item:
        return ParamAllow(item)
    if not (isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]):
        raise ConfigError(f"{where}entries are names or {{name, path, endpoint, families}} tables, got {item!r}")
    _check_keys(item, {"name", "path", "endpoint", "families"}, "[decision] allow_params entry")
    families = item.get("families", [])
    if not isinstance(families, list) or not all(isinstance(f, str) and f for f in families):
        raise ConfigError(f"{where}families must be a list of attack family names, got {families!r}")
    endpoint = item.get("endpoint", "")
    if not isinstance(endpoint, str) or (endpoint and not endpoint.startswith("/")):
        raise ConfigError(f"{where}endpoint must be a path beginning with /, got {endpoint!r}")
    return ParamAllow(item["name"], str(item.get("path", "")), endpoint, tuple(families))


def _profile(table: dict) -> ProfileSettings:
    where = "[profile] "
    _check_keys(table, {f.name for f in fields(ProfileSettings)}, "[profile]")
    mode = _typed(table, "mode", str, where) if "mode" in table else ProfileSettings.mode
    if mode not in MODES:
        raise ConfigError(f"{where}mode must be one of {', '.join(MODES)}, got {mode!r}")
    ignore = _typed(table, "ignore", list, where) if "ignore" in table else []
    unknown = [kind for kind in ignore if kind not in PROFILE_KINDS]
    if unknown:
        raise ConfigError(f"{where}ignore: unknown kind(s) {unknown}; kinds are {', '.join(PROFILE_KINDS)}")
    block = _threshold(table, "block_threshold", where) or ProfileSettings.block_threshold
    log = _threshold(table, "log_threshold", where) or min(ProfileSettings.log_threshold, block)
    return ProfileSettings(
        path=_typed(table, "path", str, where) if "path" in table else "",
        mode=mode,
        block_threshold=block,
        log_threshold=min(log, block),
        ignore=tuple(ignore),
        observations=_typed(table, "observations", str, where) if "observations" in table else "",
    )


def _behaviour(table: dict) -> BehaviourSettings:
    where = "[behaviour] "
    _check_keys(table, {f.name for f in fields(BehaviourSettings)}, "[behaviour]")
    kinds = {"enabled": bool, "profile": str, "max_clients": int, "history": int, "window": float}
    kinds |= {"client_key": str, "hash_clients": bool, "login_paths": str, "baseline": str}
    kinds |= {"redis_url": str, "redis_timeout": float, "geoip_database": str}
    kinds |= {"model": str, "model_runtime": str, "model_action": str}
    values: dict[str, object] = {key: _typed(table, key, kind, where) for key, kind in kinds.items() if key in table}
    if "exempt_networks" in table:
        try:
            values["exempt_networks"] = tuple(
                ipaddress.ip_network(n, strict=False) for n in _typed(table, "exempt_networks", list, where)
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}exempt_networks: {exc}") from None
    settings = BehaviourSettings(**values)  # type: ignore[arg-type]
    if settings.profile not in BEHAVIOUR_PROFILES:
        raise ConfigError(f"{where}profile must be one of {', '.join(BEHAVIOUR_PROFILES)}, got {settings.profile!r}")
    if settings.client_key not in CLIENT_KEYS:
        raise ConfigError(f"{where}client_key must be one of {', '.join(CLIENT_KEYS)}, got {settings.client_key!r}")
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{where}redis_url must start with redis://, rediss:// or unix://, got {settings.redis_url!r}"
        )
    if settings.model_action not in ("log", "block"):
        raise ConfigError(f"{where}model_action must be log or block, got {settings.model_action!r}")
    if settings.model_runtime not in RUNTIMES:
        raise ConfigError(f"{where}model_runtime must be one of {', '.join(RUNTIMES)}, got {settings.model_runtime!r}")
    if settings.max_clients < 64 or settings.history < 5 or settings.window <= 0:
        raise ConfigError(f"{where}max_clients must be >= 64, history >= 5 and window > 0")
    try:
        re.compile(settings.login_paths)
    except re.error as exc:
        raise ConfigError(f"{where}login_paths is not a regular expression: {exc}") from None
    return settings


def read_toml(path: Path) -> dict:
    """A TOML settings file as a dict; unreadable or not TOML raises ConfigError naming the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load(path: Path) -> Settings:
    raw = read_toml(path)
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
