"""The playbooks stop early, with a readable message, on bad variables or an unsupported OS."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_playbook

DEBIAN_12 = {"distribution": "Debian", "distribution_major_version": "12", "distribution_version": "12.11"}


def validate(role: str, facts: dict | None = None, **variables: object):
    facts = {"fqdn": "waf.example.test", **(facts or DEBIAN_12)}
    extra = {"mlwaf_test_role": role, "mlwaf_test_facts": facts, **variables}
    # Check mode and a tag nothing carries: only validation and the checks run.
    return run_playbook("validate.yml", extra, "--check", "--tags", "mlwaf_validation_only")


@pytest.mark.parametrize("role", ["apache", "modsecurity", "demo_site"])
def test_valid_defaults_pass(role: str) -> None:
    result = validate(role)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("role", ["apache", "modsecurity", "demo_site"])
def test_unsupported_os_is_refused(role: str) -> None:
    facts = {"distribution": "Ubuntu", "distribution_major_version": "24", "distribution_version": "24.04"}
    result = validate(role, facts)
    assert result.returncode != 0
    assert "mlwaf supports Debian 12 and 13; this host runs Ubuntu 24.04" in result.stdout


def test_old_debian_is_refused() -> None:
    facts = {"distribution": "Debian", "distribution_major_version": "11", "distribution_version": "11.9"}
    result = validate("apache", facts)
    assert result.returncode != 0
    assert "this host runs Debian 11.9" in result.stdout


@pytest.mark.parametrize(
    ("role", "variables", "message"),
    [
        ("apache", {"apache_mode": "cache"}, "apache_mode must be one of: docroot, proxy"),
        ("apache", {"apache_https_port": "https"}, "apache_https_port"),
        ("apache", {"apache_mode": "proxy"}, "apache_backend_url must be an http:// or https:// URL"),
        ("apache", {"apache_mode": "proxy", "apache_backend_url": "10.0.0.5:8080"}, 'got "10.0.0.5:8080"'),
        ("apache", {"apache_ssl_certificate": "/nonexistent/cert.pem"}, "Set both apache_ssl_certificate"),
        (
            "apache",
            {"apache_ssl_certificate": "/nonexistent/cert.pem", "apache_ssl_certificate_key": "/nonexistent/k.pem"},
            "Certificate file /nonexistent/cert.pem does not exist on the controller",
        ),
        ("apache", {"apache_mpm_max_request_workers": 160}, "must be a multiple of apache_mpm_threads_per_child"),
        ("modsecurity", {"modsecurity_engine_mode": "Block"}, "modsecurity_engine_mode must be one of"),
        ("modsecurity", {"modsecurity_crs_paranoia_level": 5}, "modsecurity_crs_paranoia_level must be one of"),
        ("modsecurity", {"modsecurity_crs_application_exclusions": ["joomla"]}, "joomla"),
        ("modsecurity", {"modsecurity_crs_rule_exclusions": [{"target": "ARGS:q"}]}, "id"),
        ("modsecurity", {"modsecurity_crs_rule_exclusions": [{"id": 942100, "paht": "/x"}]}, "paht"),
        ("modsecurity", {"modsecurity_crs_rule_exclusions": [{"id": 942100, "path": "search"}]}, 'must start with "/"'),
        ("modsecurity", {"modsecurity_crs_inbound_anomaly_threshold": 0}, "anomaly thresholds must be positive"),
        ("demo_site", {"demo_site_base_url": "localhost"}, "demo_site_base_url must be an http://"),
        ("monitoring", {"monitoring_log_max_size": "lots"}, "monitoring_log_max_size a size like 100M"),
        ("ml_analyzer", {"ml_analyzer_log_max_size": "0"}, "ml_analyzer_log_max_size a size like 100M"),
    ],
)
def test_bad_variables_stop_the_play(role: str, variables: dict, message: str) -> None:
    result = validate(role, **variables)
    assert result.returncode != 0, result.stdout[-2000:]
    assert message in result.stdout, result.stdout[-3000:]


def test_operator_certificate_files_are_accepted(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("certificate")
    key.write_text("key")
    result = validate("apache", apache_ssl_certificate=str(cert), apache_ssl_certificate_key=str(key))
    assert result.returncode == 0, result.stdout[-3000:]
