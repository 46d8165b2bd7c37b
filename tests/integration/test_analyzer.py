"""End-to-end checks of the ML analyzer and its ModSecurity bridge."""

from __future__ import annotations

import json
import shlex
import time
import uuid

import pytest
from conftest import ML_ONLY_ATTACK, SQLI, Client, audit_entries, converge, rule_ids
from waiting import wait_until

ANALYZER_LOG = "/var/log/apache2/ml_analyzer.log"
DECISIONS = "/var/log/mlwaf/decisions.jsonl"


def log_lines(host, path: str, marker: str) -> list[str]:
    return host.run(f"grep -F {marker} {path}").stdout.splitlines()


def test_analyzer_service_and_socket(host) -> None:
    assert host.service("mlwaf-analyzer.socket").is_enabled
    assert host.service("mlwaf-analyzer.service").is_running
    sock = host.file("/run/mlwaf/analyzer.sock")
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("root", "www-data", 0o660)
    main_pid = host.run("systemctl show -p MainPID --value mlwaf-analyzer").stdout.strip()
    assert host.run(f"ps -o user= -p {main_pid}").stdout.strip() == "mlwaf"
    workers = host.run(f"pgrep -P {main_pid}").stdout.split()
    assert len(workers) >= 1, "the parent forks its workers"
    unit = host.run("systemctl show mlwaf-analyzer -p Type -p StatusText").stdout.splitlines()
    assert "Type=notify" in unit
    assert any(line.startswith("StatusText=serving with") for line in unit), unit


PEER_PROBE = """
import socket
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
try:
    s.connect("/run/mlwaf/analyzer.sock")
except OSError as error:
    print("refused:", error.strerror)
else:
    try:
        s.sendall(b'{"v":1,"id":"peer-probe","method":"GET","path":"/","args":[],"headers":{}}\\n')
        print("answer:", s.recv(4096).decode() or "closed")
    except ConnectionError:  # closed without reading the message: reset
        print("answer: closed")
"""


def probe_as(host, user: str, group: str = "") -> str:
    command = f"setpriv --reuid={user} --regid={group or user} --init-groups python3 -c {shlex.quote(PEER_PROBE)}"
    return host.check_output(command)


def test_only_apache_may_ask_the_analyzer(host) -> None:
    pool = host.run("pgrep -u waf-demo -f 'php-fpm: pool waf-demo'").stdout.split()
    assert pool, "the demo's PHP runs as a user of its own"
    assert host.run("pgrep -u www-data -f php-fpm").rc == 1, "and none of it as Apache's user"
    assert probe_as(host, "waf-demo") == "refused: Permission denied", "application code cannot open the socket"
    assert probe_as(host, "nobody", "nogroup") == "refused: Permission denied"
    assert probe_as(host, "www-data").startswith('answer: {"v":1'), "Apache's user is answered"
    # a process that holds the socket's group but is not Apache's user: opens it, gets no answer
    host.check_output("id mlwaf-peer-probe || useradd --system -M -s /usr/sbin/nologin -G www-data mlwaf-peer-probe")
    try:
        assert probe_as(host, "mlwaf-peer-probe") == "answer: closed", "SO_PEERCRED: not in peer_users"
    finally:
        host.run("userdel mlwaf-peer-probe")
    journal = host.check_output("journalctl -u mlwaf-analyzer --since -2min --no-pager -o cat")
    assert "(not in peer_users)" in journal


def test_analyzer_unit_is_hardened(host) -> None:
    props = dict(
        line.split("=", 1)
        for line in host.run(
            "systemctl show mlwaf-analyzer -p ProtectSystem -p NoNewPrivileges -p PrivateTmp "
            "-p RestrictAddressFamilies -p MemoryMax -p IPAddressDeny -p IPAddressAllow"
        ).stdout.splitlines()
    )
    assert props["ProtectSystem"] == "strict"
    assert props["NoNewPrivileges"] == "yes"
    assert props["PrivateTmp"] == "yes"
    # Unix sockets only: the metrics endpoint's port comes from the socket unit
    assert props["RestrictAddressFamilies"] == "AF_UNIX"
    assert set(props["IPAddressDeny"].split()) == {"0.0.0.0/0", "::/0"}
    assert set(props["IPAddressAllow"].split()) == {"127.0.0.0/8", "::1/128"}
    assert props["MemoryMax"] != "infinity"
    exposure = host.check_output("systemd-analyze security mlwaf-analyzer --no-pager | tail -1")
    assert float(exposure.split("mlwaf-analyzer.service: ")[1].split()[0]) <= 1.0, exposure


def test_model_runs_at_full_speed_under_the_hardened_unit(host) -> None:
    # The sandbox must leave LiteRT what it needs to pick its fast kernels (/proc/cpuinfo).
    journal = host.run("journalctl -u mlwaf-analyzer.service --no-pager -o cat -n 200").stdout
    assert "Error in cpuinfo" not in journal
    answer = json.loads(host.run("/opt/mlwaf/venv/bin/mlwaf query --json '/search.php?q=red+shoes&page=2'").stdout)
    assert answer["ms"] < 5, answer


def test_models_verified_and_loaded(host) -> None:
    assert host.run("cd /var/lib/mlwaf/models/current && sha256sum --check --strict SHA256SUMS").rc == 0
    check = host.run("/opt/mlwaf/venv/bin/mlwaf check --config /etc/mlwaf/analyzer.toml")
    assert check.rc == 0, check.stderr
    assert "model attack" in check.stdout


def test_tampered_or_mismatched_model_is_refused(host) -> None:
    host.run("rm -rf /tmp/mlwaf-model && cp -r /var/lib/mlwaf/models/current/ /tmp/mlwaf-model")
    host.run("printf x >> /tmp/mlwaf-model/attack-int8.tflite")
    check = host.run("/opt/mlwaf/venv/bin/mlwaf check --model /tmp/mlwaf-model/attack.json")
    assert check.rc == 2
    assert "checksum mismatch for attack-int8.tflite" in check.stderr
    host.run("cp /var/lib/mlwaf/models/current/attack-int8.tflite /tmp/mlwaf-model/")
    host.run('sed -i \'s/"spec": "bytes-v1"/"spec": "bytes-v0"/\' /tmp/mlwaf-model/attack.json')
    check = host.run("/opt/mlwaf/venv/bin/mlwaf check --model /tmp/mlwaf-model/attack.json")
    assert check.rc == 2
    assert "feature spec 'bytes-v0' does not match" in check.stderr


def test_benign_requests_are_scored_and_pass(host, client: Client) -> None:
    marker = uuid.uuid4().hex
    assert client.request(f"/search.php?q=coffee+grinder&t={marker}").status == 200
    credentials = {"username": "alice", "password": "wonderland"}
    login = client.request(f"/login.php?t={marker}", method="POST", form=credentials)
    assert login.status == 200
    lines = log_lines(host, ANALYZER_LOG, marker)
    assert len(lines) == 2, lines
    assert all("verdict: allow, blocked: False" in line for line in lines), lines


def test_apache_reaches_the_analyzer_through_the_native_bridge(host, client: Client) -> None:
    library = host.file("/usr/local/lib/mlwaf/mlwaf_bridge.so")
    assert (library.user, library.mode) == ("root", 0o755)
    assert (
        "setvar:'tx.mlwaf_native=/usr/local/lib/mlwaf/mlwaf_bridge.so'"
        in host.file("/etc/modsecurity/mlwaf.d/ml-analyzer.conf").content_string
    )
    assert client.request(f"/search.php?q=tea&t={uuid.uuid4().hex}").status == 200
    children = host.run("pgrep -x apache2").stdout.split()
    mapped = [pid for pid in children if "mlwaf_bridge.so" in host.run(f"cat /proc/{pid}/maps").stdout]
    assert len(mapped) == len(children), "every Apache process keeps the native half loaded (LoadFile)"
    built = host.run("readelf -d /usr/local/lib/mlwaf/mlwaf_bridge.so").stdout
    assert "BIND_NOW" in built, "built with full RELRO"


def ml_only_block(host, marker: str) -> str:
    """The audit log's messages for the one request marked ``marker``, which the ML rule
    (1004) blocked and CRS (949110) did not."""
    entries = audit_entries(host, marker)
    assert len(entries) == 1
    ids = rule_ids(entries[0])
    assert "1004" in ids, ids
    assert "949110" not in ids, "CRS did not block this one: the ML rule did"
    return " ".join(entries[0]["audit_data"]["messages"])


def test_ml_blocks_what_crs_lets_through(host, client: Client) -> None:
    marker = uuid.uuid4().hex
    answer = client.request(f"/search.php?t={marker}&q={ML_ONLY_ATTACK}")
    assert answer.status == 403
    messages = ml_only_block(host, marker)
    assert "cmdi in query:q" in messages, "the audit log names the family and the parameter"
    line = log_lines(host, ANALYZER_LOG, marker)
    assert line
    assert "verdict: block, blocked: True" in line[0]


def test_ml_reads_the_user_agent(host, client: Client) -> None:
    marker = uuid.uuid4().hex
    answer = client.request(f"/search.php?t={marker}", headers={"User-Agent": "`id`"})
    assert answer.status == 403
    assert "cmdi in header:user-agent" in ml_only_block(host, marker)  # CRS does not look for it there


def test_decision_log_is_json_for_a_siem(host, client: Client) -> None:
    marker = uuid.uuid4().hex
    client.request(f"/search.php?t={marker}&q={ML_ONLY_ATTACK}")
    records = [json.loads(line) for line in log_lines(host, DECISIONS, "/search.php") if line.strip()]
    record = records[-1]
    assert record["verdict"] == "block"
    assert record["client_ip"] == "127.0.0.1"
    assert record["reasons"][0]["name"] == "q"
    assert record["scores"]["attack"] >= 0.9


def test_decision_log_survives_rotation(host, client: Client) -> None:
    client.request(f"/search.php?t={uuid.uuid4().hex}&q={ML_ONLY_ATTACK}")  # something to rotate
    rotate = host.run("logrotate --force /etc/logrotate.d/mlwaf")
    assert rotate.rc == 0, rotate.stderr
    rotated = host.file(f"{DECISIONS}.1")
    assert rotated.exists
    size_before = rotated.size
    client.request(f"/search.php?t={uuid.uuid4().hex}&q={ML_ONLY_ATTACK}")
    # The workers reopened the log on the SIGHUP from postrotate: the block lands in the new file.
    assert wait_until(lambda: host.file(DECISIONS).exists and host.file(DECISIONS).size > 0)
    assert host.file(DECISIONS).user == "mlwaf"
    assert rotated.size == size_before


def test_performance_log_is_csv(host, client: Client) -> None:
    client.request(f"/search.php?q=tea&t={uuid.uuid4().hex}")
    last = host.run("tail -n 1 /var/log/apache2/ml_performance.log").stdout.strip()
    timestamp, processing_ms, blocked = last.split(",")
    assert abs(int(timestamp) - time.time()) < 3600
    assert 0 < float(processing_ms) < 1000
    assert blocked in ("True", "False")


def test_operator_tool_scores_through_the_daemon(host) -> None:
    cmd = host.run(f"ml_waf_analyzer.sh {shlex.quote('/search.php?q=' + SQLI)}")
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.startswith("block attack=")
    assert "sqli in query:q" in cmd.stdout


def test_offline_score_agrees_with_the_daemon(host) -> None:
    requests = [
        {"id": "benign", "method": "GET", "path": "/search.php?q=coffee", "headers": {}, "body": ""},
        {"id": "attack", "method": "GET", "path": f"/search.php?q={SQLI}", "headers": {}, "body": ""},
        {"id": "broken", "method": "G E T", "path": "/", "headers": {}, "body": ""},
    ]
    payload = "\n".join(json.dumps(r) for r in requests)
    cmd = host.run(
        f"printf '%s\\n' {shlex.quote(payload)} | /opt/mlwaf/venv/bin/mlwaf score --config /etc/mlwaf/analyzer.toml"
    )
    assert cmd.rc == 0, cmd.stderr
    out = {r["id"]: r for r in map(json.loads, cmd.stdout.splitlines())}
    assert out["benign"]["verdict"] == "allow"
    assert out["attack"]["verdict"] == "block"
    assert out["attack"]["reasons"][0]["family"] == "sqli"
    assert "error" in out["broken"]
    online = host.run(f"ml_waf_analyzer.sh --json {shlex.quote('/search.php?q=' + SQLI)}").stdout
    assert json.loads(online)["scores"]["attack"] == out["attack"]["scores"]["attack"]


def test_degraded_checks_when_the_analyzer_is_stopped(host, client: Client) -> None:
    host.run("systemctl stop mlwaf-analyzer.socket mlwaf-analyzer.service")
    try:
        attack, benign = uuid.uuid4().hex, uuid.uuid4().hex
        assert client.request(f"/search.php?t={attack}&q={ML_ONLY_ATTACK}").status == 403, "caught in-process"
        assert client.request(f"/search.php?t={benign}&q=blue+cotton+shirt").status == 200, "benign passes"
        caught, passed = (log_lines(host, "/var/log/apache2/ml_fallback.log", m) for m in (attack, benign))
        assert caught, "the fallback is logged"
        assert caught[0].endswith("fail-degraded, check: cmdi"), caught
        assert passed, "the fallback is logged"
        assert passed[0].endswith("fail-degraded, check: -"), passed
        assert "1033" in rule_ids(audit_entries(host, attack)[0])
        assert audit_entries(host, benign) == [], "a request that passed is not recorded"
    finally:
        host.run("systemctl start mlwaf-analyzer.socket mlwaf-analyzer.service")


@pytest.fixture(params=[("closed", 503, "1007"), ("open", 200, "1006")], ids=["closed", "open"])
def fail_mode(host, request):
    """Converge with another ml_analyzer_fail_mode and stop the analyzer; restore both after."""
    mode = request.param[0]
    converge(host.backend.host, "--tags", "ml_analyzer_configure", "-e", json.dumps({"ml_analyzer_fail_mode": mode}))
    host.run("systemctl stop mlwaf-analyzer.socket mlwaf-analyzer.service")
    yield request.param
    host.run("systemctl start mlwaf-analyzer.socket mlwaf-analyzer.service")
    converge(host.backend.host, "--tags", "ml_analyzer_configure")


def test_fail_closed_and_fail_open(host, client: Client, fail_mode) -> None:
    mode, status, rule = fail_mode
    marker = uuid.uuid4().hex
    assert client.request(f"/search.php?t={marker}&q={ML_ONLY_ATTACK}").status == status
    lines = log_lines(host, "/var/log/apache2/ml_fallback.log", marker)
    assert lines, "the fallback is logged"
    assert f"fail-{mode}, check: -" in lines[0]
    entries = audit_entries(host, marker)
    if status == 200:  # passed: not recorded (the fallback log and the error log name rule 1006)
        assert entries == []
        assert host.run(f"grep -c 'id \"{rule}\"' /var/log/apache2/waf_error.log").stdout.strip() != "0"
    else:
        assert rule in rule_ids(entries[0])


def test_a_value_past_the_bridge_limit_is_checked_in_process(host, client: Client) -> None:
    # The bridge sends a value's first 8,192 characters: the rest is checked in-process.
    marker = uuid.uuid4().hex
    answer = client.request(f"/search.php?t={marker}", method="POST", form={"q": "a" * 9000 + ";id"})
    assert answer.status == 403
    assert "1033" in rule_ids(audit_entries(host, marker)[0])


def attacks_through(host, action: str, count: int = 2000) -> tuple[list[str], list[str]]:
    """``count`` ML-only attacks from 8 parallel clients while ``action`` runs on the analyzer;
    the statuses they got and the fallback log's lines for them."""
    marker = uuid.uuid4().hex
    url = f"http://127.0.0.1/search.php?t={marker}-{{}}&q={ML_ONLY_ATTACK}"
    script = (
        f"seq 1 {count} | xargs -P 8 -I{{}} curl -s -o /dev/null -w '%{{http_code}} ' '{url}' > /tmp/{marker} &"
        f" sleep 0.3; {action}; wait; cat /tmp/{marker}; rm -f /tmp/{marker}"
    )
    statuses = host.run(f"bash -c {shlex.quote(script)}").stdout.split()
    return statuses, log_lines(host, "/var/log/apache2/ml_fallback.log", marker)


@pytest.mark.parametrize(
    "action",
    ["systemctl restart mlwaf-analyzer.service", "systemctl kill --signal=KILL mlwaf-analyzer.service"],
    ids=["restart", "kill"],
)
def test_no_attack_passes_while_the_analyzer_restarts(host, action: str) -> None:
    statuses, fallbacks = attacks_through(host, action)
    assert len(statuses) == 2000
    assert set(statuses) == {"403"}, "scored, or caught by the degraded checks"
    assert not [line for line in fallbacks if "fail-open" in line]
    # the socket outlives the service: connections wait in its queue, none is refused
    assert not [line for line in fallbacks if "connect" in line], fallbacks[:3]
    assert wait_until(lambda: host.run("/opt/mlwaf/venv/bin/mlwaf query --timeout 2 /index.php").rc == 0)


def test_killed_analyzer_comes_back(host, client: Client) -> None:
    before = host.run("systemctl show -p MainPID --value mlwaf-analyzer").stdout.strip()
    host.run("systemctl kill --signal=KILL mlwaf-analyzer.service")
    assert wait_until(
        lambda: (
            host.run("systemctl show -p MainPID --value mlwaf-analyzer").stdout.strip() not in ("0", before)
            and host.service("mlwaf-analyzer").is_running
        )
    )
    # The new daemon loads and warms up its models before its workers accept; until then
    # the bridge's 50 ms timeout sends requests down the degraded path. Once it answers, it blocks again.
    assert wait_until(lambda: host.run("/opt/mlwaf/venv/bin/mlwaf query --timeout 2 /index.php").rc == 0)
    marker = uuid.uuid4().hex
    assert client.request(f"/search.php?t={marker}&q={ML_ONLY_ATTACK}").status == 403


def test_restart_returns_once_the_analyzer_serves(host, client: Client) -> None:
    # Type=notify: systemctl, and so the playbook's handler, waits for the READY=1 the daemon
    # sends once its models are loaded and its workers fork. The first request after it is scored.
    assert host.run("systemctl restart mlwaf-analyzer.service").rc == 0
    marker = uuid.uuid4().hex
    assert client.request(f"/search.php?t={marker}&q={ML_ONLY_ATTACK}").status == 403
    assert not log_lines(host, "/var/log/apache2/ml_fallback.log", marker), "no fallback after the restart"


@pytest.fixture
def crs_off(host):
    """Run ModSecurity without CRS, then restore the scenario's settings."""
    converge(host.backend.host, "--tags", "modsecurity_configure", "-e", '{"modsecurity_crs_enabled": false}')
    yield
    converge(host.backend.host, "--tags", "modsecurity_configure")


def test_ml_blocks_with_crs_off(host, client: Client, crs_off) -> None:
    assert "REQUEST-942" not in host.run("apache2ctl -t -D DUMP_INCLUDES").stdout
    marker = uuid.uuid4().hex
    answer = client.request(f"/search.php?t={marker}&q={SQLI}")
    assert answer.status == 403
    assert rule_ids(audit_entries(host, marker)[0]) == {"1004"}
    assert client.request(f"/search.php?q=coffee&t={marker}").status == 200
