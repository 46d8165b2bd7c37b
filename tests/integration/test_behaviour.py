"""The behavioural layer on the appliance: live floods, scanners and credential stuffing from mlwaf simulate."""

from __future__ import annotations

import json
import re

import pytest
from conftest import converge

MLWAF = "/opt/mlwaf/venv/bin/mlwaf"
DECISIONS = "/var/log/mlwaf/decisions.jsonl"


@pytest.fixture(scope="module")
def counted(host):
    """Loopback traffic counts (it is exempt by default), so that mlwaf simulate can drive it."""
    converge(
        host.backend.host, "--tags", "ml_analyzer_configure", "-e", '{"ml_analyzer_behaviour_exempt_networks": []}'
    )
    yield
    converge(host.backend.host, "--tags", "ml_analyzer_configure")


def behaviour_reasons(host) -> list[dict]:
    """The behavioural layer's reasons in the last decisions (the findings behind bans)."""
    records = [json.loads(line) for line in host.file(DECISIONS).content_string.splitlines()[-400:]]
    return [r for d in records for r in d.get("reasons", []) if r["model"] == "behaviour"]


def simulate(host, scenario: str, count: int, limit: int) -> dict[int, tuple[int, float]]:
    """Drive one scenario live from inside the host, on a fresh analyzer (no bans, no history);
    {status: (responses, seconds to the first)}."""
    assert host.run("systemctl restart mlwaf-analyzer.service").rc == 0
    cmd = host.run(
        f"{MLWAF} simulate {scenario} -n {count} --url http://127.0.0.1 --max-requests {limit} --max-seconds 20"
    )
    assert cmd.rc == 0, cmd.stderr
    found = re.findall(r"(\d{3}): (\d+) \(first after ([\d.]+) s\)", cmd.stdout)
    return {int(code): (int(n), float(first)) for code, n, first in found}


def test_a_flood_is_answered_429_with_retry_after_within_two_seconds(host, counted) -> None:
    outcome = simulate(host, "flood", 5, 300)  # 100 requests a second
    assert 429 in outcome, outcome
    assert outcome[429][1] <= 2.0
    assert outcome[429][0] > outcome.get(200, (0, 0))[0], "once caught, the flood stays refused"
    head = host.run("curl -s -o /dev/null -D - http://127.0.0.1/index.php").stdout
    assert head.startswith("HTTP/1.1 429")
    assert re.search(r"^Retry-After: \d+\r?$", head, re.M | re.I), head
    assert any(r["family"] == "flood" and "rate" in r.get("detail", "") for r in behaviour_reasons(host))


def test_a_scanner_is_refused_within_twenty_requests(host, counted) -> None:
    outcome = simulate(host, "scanner", 40, 40)  # its 404s reach the analyzer after each response
    assert 403 in outcome, outcome
    assert 404 in outcome
    assert outcome[404][0] + outcome.get(200, (0, 0))[0] <= 20
    assert any(r["family"] == "scanner" and "not_found" in r.get("detail", "") for r in behaviour_reasons(host))


def test_credential_stuffing_is_refused_within_twenty_requests(host, counted) -> None:
    outcome = simulate(host, "stuffing", 40, 40)
    assert 403 in outcome, outcome
    assert outcome.get(200, (0, 0))[0] <= 20
    assert any(r["family"] == "credential-stuffing" for r in behaviour_reasons(host))


def test_the_rate_baseline_is_kept_across_restarts(host, counted) -> None:
    assert host.run("systemctl restart mlwaf-analyzer.service").rc == 0
    assert host.file("/var/lib/mlwaf/behaviour/baseline.npz").exists
    journal = host.run("journalctl -u mlwaf-analyzer.service -n 20 --no-pager -o cat").stdout
    assert "endpoint rate baseline loaded from /var/lib/mlwaf/behaviour/baseline.npz" in journal


def test_the_flood_bot_model_and_the_country_database_are_loaded(host) -> None:
    assert host.package("geoip-database").is_installed
    check = host.run(f"{MLWAF} check --config /etc/mlwaf/analyzer.toml")
    assert check.rc == 0, check.stderr
    assert "behaviour: client countries from /usr/share/GeoIP/GeoIP.dat" in check.stdout
    assert re.search(r"behaviour model \S+/flood\.json: version mlp-\w+, runtime litert-int8", check.stdout)
    config = host.file("/etc/mlwaf/analyzer.toml").content_string
    assert 'model_action = "log"' in config, "the model only logs unless asked to block"
