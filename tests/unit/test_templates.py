"""What the modsecurity and apache templates generate from the role variables."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import ROLES_DIR, run_playbook

from mlwaf.config import ParamAllow, from_dict
from mlwaf.ops.settings import load_monitoring

MODSEC_TEMPLATES = [
    "etc/modsecurity/modsecurity.conf",
    "etc/modsecurity/crs/crs-setup.conf",
    "etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
    "etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf",
    "etc/apache2/mods-available/security2.conf",
]
APACHE_TEMPLATES = ["etc/apache2/sites-available/mlwaf.conf", "etc/apache2/conf-available/mlwaf-hardening.conf"]


def render(tmp_path: Path, role: str, templates: list[str], overrides: dict) -> dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    overrides_file = tmp_path / "overrides.json"
    overrides_file.write_text(json.dumps(overrides))
    out = tmp_path / "out"
    out.mkdir()
    extra = {
        "mlwaf_roles_dir": str(ROLES_DIR),
        "mlwaf_test_role": role,
        "mlwaf_test_overrides": str(overrides_file),
        "mlwaf_test_output": str(out),
        "mlwaf_test_templates": templates,
    }
    result = run_playbook("render.yml", extra)
    assert result.returncode == 0, result.stdout[-3000:]
    return {p.name: p.read_text() for p in out.iterdir()}


@pytest.fixture(scope="module")
def modsec_defaults(tmp_path_factory) -> dict[str, str]:
    crs = {"__modsecurity_crs_version": {"stdout": "3.3.4-1+deb12u3"}}
    return render(tmp_path_factory.mktemp("defaults"), "modsecurity", MODSEC_TEMPLATES, crs)


def test_defaults_set_engine_and_limits(modsec_defaults: dict[str, str]) -> None:
    conf = modsec_defaults["modsecurity.conf"]
    assert re.search(r"^SecRuleEngine On$", conf, re.M)
    assert re.search(r"^SecAuditLogFormat JSON$", conf, re.M)
    assert re.search(r"^SecAuditLog /var/log/apache2/modsec_audit.log$", conf, re.M)
    assert re.search(r"^SecPcreMatchLimit 100000$", conf, re.M)
    assert re.search(r"^SecDataDir /var/cache/modsecurity$", conf, re.M)


def test_defaults_crs_setup(modsec_defaults: dict[str, str]) -> None:
    setup = modsec_defaults["crs-setup.conf"]
    assert "setvar:tx.paranoia_level=1" in setup
    assert "setvar:tx.executing_paranoia_level=1" in setup
    assert "setvar:tx.crs_setup_version=334" in setup
    assert "|text/plain|" in setup
    restricted = re.search(r"tx\.restricted_headers=([^']*)'", setup)
    assert restricted
    assert restricted.group(1) == "/content-encoding/ /proxy/ /lock-token/ /content-range/ /if/"
    assert "accept-charset" not in setup
    assert "900130" not in setup  # no application exclusions by default


def test_crs_can_be_turned_off(tmp_path: Path) -> None:
    overrides = {"__modsecurity_crs_version": {"stdout": "3.3.7-1"}, "modsecurity_crs_enabled": False}
    loader = render(tmp_path, "modsecurity", ["etc/apache2/mods-available/security2.conf"], overrides)["security2.conf"]
    assert "modsecurity-crs" not in loader
    assert "Include /etc/modsecurity/modsecurity.conf" in loader


def test_exclusions_and_levels(tmp_path: Path) -> None:
    overrides = {
        "__modsecurity_crs_version": {"stdout": "3.3.7-1"},
        "modsecurity_engine_mode": "DetectionOnly",
        "modsecurity_crs_paranoia_level": 2,
        "modsecurity_crs_executing_paranoia_level": 3,
        "modsecurity_crs_application_exclusions": ["wordpress", "nextcloud"],
        "modsecurity_crs_rule_exclusions": [
            {"id": 942100, "target": "ARGS:q", "path": "/search", "reason": "product search"},
            {"id": 920350},
            {"id": 932100, "path": "/api/"},
            {"id": 941100, "target": "REQUEST_COOKIES:/^_ga/"},
        ],
    }
    files = render(tmp_path, "modsecurity", MODSEC_TEMPLATES, overrides)
    assert re.search(r"^SecRuleEngine DetectionOnly$", files["modsecurity.conf"], re.M)
    setup = files["crs-setup.conf"]
    assert "setvar:tx.paranoia_level=2" in setup
    assert "setvar:tx.executing_paranoia_level=3" in setup
    assert "setvar:tx.crs_setup_version=337" in setup
    assert "setvar:tx.crs_exclusions_wordpress=1,setvar:tx.crs_exclusions_nextcloud=1" in setup
    before = files["REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"]
    assert "# product search" in before
    assert 'SecRule REQUEST_FILENAME "@beginsWith /search"' in before
    assert '"id:10000,' in before
    assert "ctl:ruleRemoveTargetById=942100;ARGS:q" in before
    assert '"id:10001,' in before
    assert "ctl:ruleRemoveById=932100" in before
    after = files["RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"]
    assert re.search(r"^SecRuleRemoveById 920350$", after, re.M)
    assert 'SecRuleUpdateTargetById 941100 "!REQUEST_COOKIES:/^_ga/"' in after
    assert "942100" not in after


def test_executing_level_never_below_paranoia_level(tmp_path: Path) -> None:
    overrides = {"__modsecurity_crs_version": {"stdout": "3.3.4-1"}, "modsecurity_crs_paranoia_level": 3}
    setup = render(tmp_path, "modsecurity", ["etc/modsecurity/crs/crs-setup.conf"], overrides)["crs-setup.conf"]
    assert "setvar:tx.executing_paranoia_level=3" in setup


def test_apache_docroot_mode(tmp_path: Path) -> None:
    files = render(tmp_path, "apache", APACHE_TEMPLATES, {"apache_docroot": "/srv/site"})
    site = files["mlwaf.conf"]
    assert site.count("DocumentRoot /srv/site") == 2  # HTTP and HTTPS vhosts
    assert "ProxyPass" not in site
    assert "ServerName waf.example.test" in site
    hardening = files["mlwaf-hardening.conf"]
    assert "ServerTokens Prod" in hardening
    assert '%D %{MLWAF_VERDICT}e" waf_combined' in hardening
    assert 'Header always set X-Content-Type-Options "nosniff"' in hardening


def test_apache_proxy_mode_with_redirect(tmp_path: Path) -> None:
    overrides = {
        "apache_mode": "proxy",
        "apache_backend_url": "http://10.0.0.5:8080",
        "apache_http_redirect_to_https": True,
        "apache_https_port": 8443,
    }
    site = render(tmp_path, "apache", APACHE_TEMPLATES, overrides)["mlwaf.conf"]
    assert 'ProxyPass "/" "http://10.0.0.5:8080/"' in site
    assert 'ProxyPass "/server-status" "!"' in site
    assert "DocumentRoot" not in site
    assert 'Redirect permanent "/" "https://waf.example.test:8443/"' in site
    assert site.count('ProxyPass "/"') == 1  # only the HTTPS vhost proxies


ANALYZER_TEMPLATES = [
    "etc/systemd/system/mlwaf-analyzer.service",
    "etc/systemd/system/mlwaf-analyzer.socket",
    "etc/mlwaf/analyzer.toml",
]


def test_analyzer_unit_stays_off_the_network_unless_redis_needs_it(tmp_path: Path) -> None:
    local = render(tmp_path / "local", "ml_analyzer", ANALYZER_TEMPLATES, {"ml_analyzer_metrics_listen": ""})
    unit = local["mlwaf-analyzer.service"]
    assert "PrivateNetwork=true" in unit
    assert re.search(r"^RestrictAddressFamilies=AF_UNIX$", unit, re.M)
    assert "IPAddressAllow" not in unit
    assert local["mlwaf-analyzer.socket"].count("ListenStream=") == 1, "no metrics port"
    assert 'redis_url = ""' in local["analyzer.toml"]
    assert 'listen = ""' in local["analyzer.toml"]
    assert 'model = "/var/lib/mlwaf/models/current/flood.json"' in local["analyzer.toml"]
    settings = from_dict(tomllib.loads(local["analyzer.toml"]))
    assert settings.score_headers == ("*",)
    metrics = render(tmp_path / "metrics", "ml_analyzer", ANALYZER_TEMPLATES, {})
    unit = metrics["mlwaf-analyzer.service"]
    # the metrics port is the socket unit's, handed over: the service itself stays off the network
    assert "PrivateNetwork=true" in unit
    assert re.search(r"^RestrictAddressFamilies=AF_UNIX$", unit, re.M)
    assert re.search(
        r"^ListenStream=/run/mlwaf/analyzer.sock\nListenStream=127.0.0.1:9464$", metrics["mlwaf-analyzer.socket"], re.M
    )
    assert re.search(r"^IPAddressDeny=any\nIPAddressAllow=127.0.0.0/8\nIPAddressAllow=::1/128$", unit, re.M)
    assert 'listen = "127.0.0.1:9464"' in metrics["analyzer.toml"]
    shared = render(
        tmp_path / "shared",
        "ml_analyzer",
        ANALYZER_TEMPLATES,
        {
            "ml_analyzer_behaviour_redis_url": "redis://10.0.0.5:6379/0",
            "ml_analyzer_behaviour_redis_networks": ["10.0.0.5"],
            "ml_analyzer_behaviour_model": "",
            "ml_analyzer_metrics_listen": "",
        },
    )
    unit = shared["mlwaf-analyzer.service"]
    assert "PrivateNetwork=false" in unit
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in unit
    assert re.search(r"^IPAddressDeny=any\nIPAddressAllow=10.0.0.5$", unit, re.M)
    assert 'redis_url = "redis://10.0.0.5:6379/0"' in shared["analyzer.toml"]
    assert "model =" not in shared["analyzer.toml"], "no flood/bot model: the heuristics alone"


MONITORING_TEMPLATES = [
    "etc/mlwaf/monitoring.toml",
    "etc/logrotate.d/apache2",
    "etc/systemd/system/performance_monitor.service",
    "etc/systemd/system/performance_monitor.timer",
]


def test_monitoring_settings_follow_the_other_roles(tmp_path: Path) -> None:
    rendered = render(tmp_path / "defaults", "monitoring", MONITORING_TEMPLATES, {})
    (tmp_path / "monitoring.toml").write_text(rendered["monitoring.toml"])
    settings = load_monitoring(tmp_path / "monitoring.toml")
    assert settings.services.probe_url == "http://127.0.0.1:80/"
    assert settings.services.metrics_url == ""  # ml_analyzer's variables unknown here: no metrics assumed
    assert settings.alerts.response_ms == 500.0
    assert "/var/log/apache2/*.log {" in rendered["apache2"]
    assert "OnUnitActiveSec=1min" in rendered["performance_monitor.timer"]
    placed = render(
        tmp_path / "placed",
        "monitoring",
        MONITORING_TEMPLATES,
        {
            "apache_listen_address": "10.0.0.7",
            "apache_http_port": 8080,
            "apache_access_log": "/srv/logs/access.log",
            "ml_analyzer_metrics_listen": "10.0.0.7:9464",
            "monitoring_webhook_url": "https://alerts.example.net/hook",
        },
    )
    (tmp_path / "placed.toml").write_text(placed["monitoring.toml"])
    settings = load_monitoring(tmp_path / "placed.toml")
    assert settings.services.probe_url == "http://10.0.0.7:8080/"
    assert settings.services.metrics_url == "http://10.0.0.7:9464/metrics"
    assert settings.logs.access_log == "/srv/logs/access.log"
    assert settings.alerts.webhook_url == "https://alerts.example.net/hook"
    assert "/srv/logs/*.log /var/log/apache2/*.log {" in placed["apache2"]


def analyzer_rules(tmp_path: Path, overrides: dict) -> str:
    facts = {"__ml_analyzer_lua_unix": "/usr/lib/x86_64-linux-gnu/lua/5.1/socket/unix.so"}  # found by a task
    return render(tmp_path, "ml_analyzer", ["etc/modsecurity/mlwaf.d/ml-analyzer.conf"], facts | overrides)[
        "ml-analyzer.conf"
    ]


def test_crs_blocks_after_the_analyzer_with_the_model_as_second_opinion(tmp_path: Path) -> None:
    rules = analyzer_rules(tmp_path / "on", {})
    assert "setvar:tx.inbound_anomaly_score_threshold=1000000" in rules, "CRS's own block held back"
    for category in ("sql_injection", "xss", "rce", "lfi"):
        assert f"setvar:'tx.mlwaf_crs_judged=+%{{tx.{category}_score}}'" in rules
    assert "rfi_score}'" not in rules.split("id:1022")[1].split("id:1023")[0], "rfi is not judged by default"
    assert '"@ge 500" "id:1026' in rules
    assert 'TX:MLWAF_PARTIAL "@eq 1" "id:1028,phase:2,deny' in rules, "a partly read request: CRS alone"
    assert '"@ge 15" "id:1025' in rules
    # the decisions come after END_MLWAF, so a request the analyzer skipped is still decided
    assert rules.index("SecMarker END_MLWAF\n") < rules.index("id:1020") < rules.index("SecMarker END_MLWAF_CRS")
    tuned = {"ml_analyzer_crs_judged": ["xss"], "ml_analyzer_crs_confirm_score": 0.7, "ml_analyzer_crs_alone_score": 10}
    text = analyzer_rules(tmp_path / "tuned", tuned)
    assert "sql_injection_score}'" not in text.split("id:1022")[1].split("id:1023")[0]
    assert '"@ge 700" "id:1026' in text
    assert '"@ge 10" "id:1025' in text
    off = analyzer_rules(tmp_path / "off", {"ml_analyzer_crs_arbitration": False})
    assert "id:1017" not in off, "CRS blocks on its own"
    assert "id:1020" not in off


TUNED_EXCLUSIONS = [
    {"rule": 941160, "endpoint": "/comment.php", "target": "ARGS:comment", "evidence": {"clients": 31, "days": 3}},
    {"rule": 942100, "endpoint": "/post/{id}.json", "target": "ARGS:json.body", "evidence": {}},
    {"rule": 920170, "endpoint": "/api/items", "target": "REQUEST_HEADERS:Content-Length", "whole_rule": True},
]


def test_a_site_tuning_becomes_narrow_crs_exclusions(tmp_path: Path) -> None:
    overrides = {"__modsecurity_crs_version": {"stdout": "3.3.4-1"}, "__modsecurity_tuned_exclusions": TUNED_EXCLUSIONS}
    before = render(tmp_path, "modsecurity", MODSEC_TEMPLATES, overrides)["REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"]
    assert "# 31 client networks on 3 days" in before
    assert 'SecRule REQUEST_FILENAME "@streq /comment.php"' in before
    assert '"id:10500,phase:1,pass,nolog,t:none,\\\n    ctl:ruleRemoveTargetById=941160;ARGS:comment"' in before
    pattern = before.split('SecRule REQUEST_FILENAME "@rx ', 1)[1].split('"', 1)[0]
    assert pattern == r"^/post/[^/]+\.json$"
    assert re.fullmatch(pattern, "/post/42.json")
    assert not re.fullmatch(pattern, "/post/42/x.json")
    assert "ctl:ruleRemoveTargetById=942100;ARGS:json.body" in before
    tuned = before.split("# Site tuning")[1]
    assert re.findall(r"ruleRemove\w+=\d+", tuned) == [
        "ruleRemoveTargetById=941160",
        "ruleRemoveTargetById=942100",
        "ruleRemoveById=920170",
    ], "a rule is removed whole only where the entry says so (a chained rule), and only on its endpoint"
    assert 'SecRule REQUEST_FILENAME "@streq /api/items" \\\n    "id:10502,' in tuned


def test_learning_records_crs_matches_and_tuned_suppressions_reach_the_settings(tmp_path: Path) -> None:
    ids = {"stdout_lines": ["920170 1", "920180 3", "920350 0", "941011 0", "941160 0", "942100 0", "944018 0"]}
    rules = analyzer_rules(tmp_path / "rules", {"ml_analyzer_tuning_record": True, "__ml_analyzer_crs_rule_ids": ids})
    updated = re.findall(r"^SecRuleUpdateActionById (\S+) \"setvar:'tx.mlwaf_crs=(.*)'\"$", rules, re.M)
    assert updated == [
        ("920170:1", "%{tx.mlwaf_crs} %{rule.id}:chain@%{matched_var_name}"),
        ("920180:3", "%{tx.mlwaf_crs} %{rule.id}:chain@%{matched_var_name}"),
        ("920350", "%{tx.mlwaf_crs} %{rule.id}@%{matched_var_name}"),
        ("941160", "%{tx.mlwaf_crs} %{rule.id}@%{matched_var_name}"),
        ("942100", "%{tx.mlwaf_crs} %{rule.id}@%{matched_var_name}"),
    ], "a chained rule's last condition is updated, never its first; the paranoia-level skips are left alone"
    assert "SecRuleUpdateActionById" not in analyzer_rules(tmp_path / "off", {"__ml_analyzer_crs_rule_ids": ids})
    suppressions = [{"endpoint": "/comment.php", "param": "comment", "family": "xss", "evidence": {"clients": 31}}]
    overrides = {
        "ml_analyzer_tuning_record": True,
        "__ml_analyzer_tuned_params": suppressions,
        "ml_analyzer_allow_params": ["token", {"name": "html", "path": "/cms/"}],
    }
    files = render(tmp_path / "settings", "ml_analyzer", [*ANALYZER_TEMPLATES, "etc/logrotate.d/mlwaf"], overrides)
    settings = from_dict(tomllib.loads(files["analyzer.toml"]))
    assert settings.allow_params == (
        ParamAllow("token"),
        ParamAllow("html", "/cms/"),
        ParamAllow("comment", endpoint="/comment.php", families=("xss",)),
    )
    assert settings.tuning_record == "/var/lib/mlwaf/tuning/record.jsonl"
    assert "ReadWritePaths=/var/lib/mlwaf/tuning" in files["mlwaf-analyzer.service"]
    assert "/var/lib/mlwaf/tuning/record.jsonl {" in files["mlwaf"]
