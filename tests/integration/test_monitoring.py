"""Operations on the running appliance: the live monitor, the report, the
performance_monitor timer and its alerts, the metrics, log rotation, health."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import ML_ONLY_ATTACK, Client
from waiting import wait_until

from mlwaf.ops.logs import parse_access

REPORT_DIR = "/tmp/mlwaf-report"


def host_time(host) -> float:
    return float(host.check_output("date +%s.%N"))


@pytest.fixture(scope="module")
def sent(host) -> float:
    """Known traffic in a second of its own: 10 harmless requests, 3 requests for a restricted file
    type that CRS blocks, 2 command injections only the model blocks; the time it started."""
    client = Client(host)
    start = int(host_time(host)) + 1
    assert wait_until(lambda: host_time(host) >= start, 5)
    for i in range(10):
        assert client.request(f"/index.php?page={i}").status == 200
    for i in range(3):
        assert client.request(f"/index.php.bak?t={i}").status == 403
    for i in range(2):
        assert client.request(f"/search.php?t={i}&q={ML_ONLY_ATTACK}").status == 403
    time.sleep(1)  # Apache writes the access log line after the answer
    return start


def test_monitor_reports_what_was_sent(host, sent: float) -> None:
    run = host.run(f"waf_monitor.sh --once --json --since {sent:.0f}")
    view = json.loads(run.stdout)
    assert view["requests"] == 15, view
    blocked = view["blocked"]
    assert (blocked["total"], blocked["rules"], blocked["ml"]) == (5, 3, 2), blocked
    assert blocked["ml_by_model"]["attack"]["count"] == 2
    assert dict(view["top_families"])["attack/cmdi"] == 2
    assert view["ml_ms"]["scored"] >= 12  # the harmless ones and the two the model blocked
    assert view["ml_ms"]["p50"] > 0
    assert view["unanswered"] == 0
    assert view["latency_ms"]["p99"] > 0
    assert view["health"]["healthy"], view["health"]["line"]
    assert run.rc == 0


def test_monitor_screen(host, sent: float) -> None:
    screen = host.check_output(f"waf_monitor.sh --once --since {sent:.0f}")
    assert "requests   15" in screen
    assert "rules (CRS) 3" in screen
    assert "attack/cmdi" in screen
    assert "\x1b" not in screen, "--once prints plain text"


def test_report_names_the_blocked_families(host, sent: float) -> None:
    run = host.run(f"analyze_waf_performance.py --since {sent - 3600:.0f} --out {REPORT_DIR}")
    assert run.rc == 0, run.stderr
    page = host.file(f"{REPORT_DIR}/index.html").content_string
    for family in ("attack/cmdi", "rules (CRS)"):
        assert family in page
    for chart in ("latency.png", "throughput.png", "families.png", "scores.png"):
        assert host.file(f"{REPORT_DIR}/{chart}").size > 1000
        assert chart in page
    assert "blocked by ML" in host.file(f"{REPORT_DIR}/summary.txt").content_string


def test_performance_timer_has_fired(host) -> None:
    timer = host.service("performance_monitor.timer")
    assert timer.is_enabled
    assert timer.is_running

    def fired() -> bool:
        shown = host.check_output(
            "systemctl show performance_monitor.service -p Result -p ExecMainExitTimestampMonotonic"
        )
        return "Result=success" in shown and "ExecMainExitTimestampMonotonic=0" not in shown

    assert wait_until(fired, 90)
    line = host.check_output("tail -n 1 /var/log/mlwaf/performance_monitor.log")
    figures = dict(item.split("=") for item in line.split()[1:])
    assert float(figures["response_ms"]) > 0
    assert figures["status"] == "200"
    assert figures["detection_rate"] == "1", "every canary attack caught"
    assert figures["false_positive_rate"] == "0"
    assert int(figures["queue"]) >= 0, "the analyzer's accept queue was read"
    assert host.run("journalctl -u performance_monitor.service -o cat | grep -c response_ms=").stdout.strip() != "0"
    probe = host.run("grep -c mlwaf-probe/1 /var/log/apache2/waf_access.log").stdout.strip()
    assert int(probe or 0) > 0, "the probe went through Apache"


def test_alerts_reach_the_journal_with_their_severity(host) -> None:
    # the same settings with a response-time threshold nothing meets, state and lines kept aside
    edits = [
        "s/^response_ms = .*/response_ms = 0.0/",
        's#^state_file = .*#state_file = "/tmp/pm.json"#',
        's#^metrics_log = .*#metrics_log = "/tmp/pm.log"#',
    ]
    script = " ".join(f"-e '{edit}'" for edit in edits)
    host.check_output(f"sed {script} /etc/mlwaf/monitoring.toml > /tmp/monitoring-alert.toml")
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    run = host.run("mlwaf performance-check --monitoring /tmp/monitoring-alert.toml")
    assert run.rc == 0, run.stderr
    assert "WARNING: response time (ms)" in run.stderr

    def journaled() -> str:
        return host.run(f"journalctl -t mlwaf-alert -p warning --since '{since}' -o cat").stdout

    assert wait_until(lambda: "response time" in journaled(), 10)
    assert "WARNING: response time (ms)" in journaled()


def test_metrics_endpoint(host, sent: float) -> None:
    text = host.check_output("curl -sf http://127.0.0.1:9464/metrics")
    values = {
        match.group(1): float(match.group(2)) for match in re.finditer(r"^(mlwaf_[^ ]+) ([0-9.e+-]+)$", text, re.M)
    }
    assert values['mlwaf_requests_total{verdict="block"}'] >= 2
    assert values['mlwaf_detections_total{action="block",family="cmdi",model="attack"}'] >= 2
    assert values["mlwaf_processing_seconds_count"] >= 12
    assert values["mlwaf_workers"] >= 1
    assert any(key.startswith("mlwaf_model_info{") for key in values)
    assert "mlwaf_behaviour_redis_fallbacks_total" in text
    assert "mlwaf_abandoned_requests_total" in values
    assert 0 <= values["mlwaf_gc_longest_seconds"] <= values["mlwaf_gc_seconds_total"]


def test_server_status_is_local_only(host) -> None:
    assert "Total Accesses" in host.check_output("curl -sf 'http://127.0.0.1/server-status?auto'")
    conf = host.file("/etc/apache2/conf-available/mlwaf-hardening.conf").content_string
    assert re.search(r'<Location "/server-status">\s+SetHandler server-status\s+Require local', conf)


def test_every_log_is_rotated(host) -> None:
    for config in ("apache2", "mlwaf", "mlwaf-monitoring"):
        run = host.run(f"logrotate -d /etc/logrotate.d/{config}")
        assert run.rc == 0, run.stderr
    considered = host.run("logrotate -d /etc/logrotate.conf").stderr
    for log in (
        "/var/log/apache2/waf_access.log",
        "/var/log/apache2/waf_error.log",
        "/var/log/apache2/modsec_audit.log",
        "/var/log/apache2/ml_performance.log",
        "/var/log/apache2/ml_analyzer.log",
        "/var/log/mlwaf/decisions.jsonl",
        "/var/log/mlwaf/performance_monitor.log",
    ):
        assert f"considering log {log}" in considered, log
    assert "systemctl reload apache2.service" in host.file("/etc/logrotate.d/apache2").content_string


def test_logs_past_their_size_cap_are_rotated_within_the_hour(host) -> None:
    timer = host.check_output("systemctl show logrotate.timer -p TimersCalendar --value")
    assert "hourly" in timer or "*:00:00" in timer, timer
    assert host.service("logrotate.timer").is_enabled
    logs = ("/var/log/apache2/modsec_audit.log", "/var/log/mlwaf/decisions.jsonl")
    host.check_output("logrotate -f /etc/logrotate.conf")  # rotated today: only the size cap is left to act

    def used_mb() -> int:  # the two logs and their rotated files
        return int(host.check_output(f"du -cm {' '.join(log + '*' for log in logs)} | tail -1 | cut -f1"))

    # twice, as a flood would, 150 MB more in each log than its 100 MB cap between two hourly runs
    for _ in range(2):
        for log in logs:
            host.check_output(f"head -c 150000000 /dev/zero | tr '\\0' a >> {log}")
        host.check_output("systemctl start logrotate.service")
        for log in logs:
            assert host.file(log).size < 100_000_000, f"{log} was not rotated past its cap"
    # 600 MB written; what stays is the last 150 MB of each (rotated, compressed a run later)
    assert used_mb() < 2 * 160, f"{used_mb()} MB kept"


def test_status_says_what_is_wrong(host) -> None:
    healthy = host.run("mlwaf status")
    assert healthy.rc == 0, healthy.stdout
    assert healthy.stdout.startswith("healthy: ")
    assert len(healthy.stdout.strip().splitlines()) == 1
    try:
        host.check_output("systemctl stop apache2")
        broken = host.run("mlwaf status")
        assert broken.rc == 1
        assert broken.stdout.startswith("UNHEALTHY: Apache service apache2.service is inactive")
    finally:
        host.check_output("systemctl start apache2")


def test_access_log_lines_parse(host, sent: float) -> None:
    lines = host.check_output("tail -n 50 /var/log/apache2/waf_access.log").splitlines()
    parsed = [parse_access(line) for line in lines]
    assert all(parsed), [line for line, p in zip(lines, parsed, strict=True) if p is None]
