"""Analyzer settings from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwaf.config import ConfigError, ParamAllow, from_dict, load


def test_defaults() -> None:
    settings = from_dict({})
    assert settings.mode == "block"
    assert settings.socket == "/run/mlwaf/analyzer.sock"
    assert settings.worker_count >= 1
    assert settings.score_headers == ("*",)
    assert from_dict({"decision": {"score_headers": ["X-Forwarded-For "]}}).score_headers == ("x-forwarded-for",)


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "analyzer.toml"
    path.write_text(
        """
[server]
socket = "/tmp/a.sock"
workers = 3
[decision]
mode = "detection-only"
allow_paths = ["/healthz"]
allow_params = ["token", { name = "html", path = "/cms/" }, { name = "bio", endpoint = "/u/{id}", families = ["xss"] }]
allow_networks = ["10.0.0.0/8", "2001:db8::1"]
[limits]
max_args = 50
[logs]
decision_log = "/tmp/d.jsonl"
log_allowed = true
log_values = false
[models.attack]
path = "/m/attack.json"
block_threshold = 0.95
runtime = "litert-float"
[behaviour]
enabled = true
profile = "staging"
max_clients = 1000
window = 120
client_key = "ip+ua"
exempt_networks = ["10.0.0.0/8"]
[profile]
path = "/p/profile.json"
mode = "detection-only"
block_threshold = 0.99
ignore = ["endpoint", "method"]
observations = "/p/observations.jsonl"
"""
    )
    settings = load(path)
    assert settings.workers == 3
    assert settings.mode == "detection-only"
    assert settings.allow_params == (
        ParamAllow("token"),
        ParamAllow("html", "/cms/"),
        ParamAllow("bio", endpoint="/u/{id}", families=("xss",)),
    )
    assert len(settings.allow_networks) == 2
    assert settings.limits.max_args == 50
    assert settings.models["attack"].block_threshold == 0.95
    assert settings.models["attack"].log_threshold is None
    assert settings.models["attack"].runtime == "litert-float"
    assert settings.log_values is False
    assert settings.profile.path == "/p/profile.json"
    assert settings.profile.mode == "detection-only"
    assert (settings.profile.block_threshold, settings.profile.log_threshold) == (0.99, 0.9)
    assert settings.profile.ignore == ("endpoint", "method")
    assert settings.profile.observations == "/p/observations.jsonl"
    assert from_dict({}).profile.path == ""
    behaviour = settings.behaviour
    assert (behaviour.enabled, behaviour.profile, behaviour.max_clients, behaviour.window) == (
        True,
        "staging",
        1000,
        120.0,
    )
    assert behaviour.client_key == "ip+ua"
    assert [str(n) for n in behaviour.exempt_networks] == ["10.0.0.0/8"]
    assert from_dict({}).behaviour.enabled is False
    assert [str(n) for n in from_dict({}).behaviour.exempt_networks] == ["127.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"decison": {}}, "unknown setting"),
        ({"decision": {"mode": "monitor"}}, "mode must be one of"),
        ({"decision": {"allow_networks": ["10.0.0.300/8"]}}, "allow_networks"),
        ({"decision": {"allow_params": [3]}}, "allow_params"),
        ({"decision": {"allow_params": [{"name": "c", "families": "xss"}]}}, "families must be a list"),
        ({"decision": {"allow_params": [{"name": "c", "endpoint": "post"}]}}, "endpoint must be a path"),
        ({"decision": {"allow_params": [{"name": "c", "famillies": ["xss"]}]}}, "unknown setting"),
        ({"logs": {"tuning_record": 1}}, "tuning_record must be str"),
        ({"models": {"attack": {"path": "/m.json", "block_threshold": 1.5}}}, r"in \(0, 1\]"),
        ({"models": {"attack": {}}}, "needs a path"),
        ({"models": {"attack": {"path": "/m.json", "runtime": "onnx"}}}, "runtime must be one of"),
        ({"logs": {"log_values": "yes"}}, "log_values must be bool"),
        ({"models": {"attack": {"path": "/m.json", "typo": 1}}}, "unknown setting"),
        ({"server": {"workers": True}}, "not a boolean"),
        ({"decision": {"score_headers": "user-agent"}}, "score_headers must be a list"),
        ({"decision": {"score_headers": [""]}}, "score_headers must be a list"),
        ({"server": {"workers": -1}}, "workers"),
        ({"server": {"socket_mode": "rw"}}, "octal"),
        ({"server": {"peer_users": "www-data"}}, "peer_users must be list"),
        ({"server": {"peer_users": [33]}}, "peer_users must be user names"),
        ({"server": {"peer_users": ["no-such-user-here"]}}, "there is no user 'no-such-user-here'"),
        ({"limits": {"max_args": 0}}, "positive"),
        ({"profile": {"mode": "learn"}}, r"\[profile\] mode must be one of"),
        ({"profile": {"ignore": ["charsets"]}}, "unknown kind"),
        ({"profile": {"ignore": "charset"}}, "ignore must be list"),
        ({"profile": {"threshold": 0.9}}, "unknown setting"),
        ({"profile": {"log_threshold": 0}}, r"in \(0, 1\]"),
        ({"models": {"profile": {"path": "/m.json"}}}, "reserved"),
        ({"behaviour": {"profile": "prod"}}, "profile must be one of"),
        ({"behaviour": {"client_key": "ua"}}, "client_key must be one of"),
        ({"behaviour": {"max_clients": 10}}, "max_clients must be >= 64"),
        ({"behaviour": {"login_paths": "("}}, "not a regular expression"),
        ({"behaviour": {"exempt_networks": ["nowhere"]}}, "exempt_networks"),
        ({"behaviour": {"enabled": "yes"}}, "enabled must be bool"),
        ({"behaviour": {"model_runtime": "onnx"}}, "model_runtime must be one of"),
        ({"behaviour": {"model_action": "ban"}}, "model_action must be log or block"),
    ],
)
def test_bad_settings_say_what_is_wrong(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(raw)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(tmp_path / "bad.toml")
