"""The analyzer daemon, run for real on a socket in a temporary folder."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwaf.config import ModelSettings, Settings
from mlwaf.decision import Analyzer
from mlwaf.metrics import Metrics, serve_on
from mlwaf.ops.canary import run_canaries
from mlwaf.ops.health import check, scrape
from mlwaf.ops.settings import Alerts, MonitoringSettings, Services
from mlwaf.protocol import VERDICTS, Reply
from mlwaf.server import DecisionLog, TuningLog, allowed_peers, freeze_heap, handle_line, hung_up, refuse

MODEL = Path(__file__).resolve().parents[2] / "files" / "models" / "attack.json"
ATTACK = {"v": 1, "id": "r1", "path": "/s", "args": [["query", "q", "1 union select password from users--"]]}


def ask(path: Path, payload: bytes, timeout: float = 5.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(path))
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        data = b"".join(iter(lambda: conn.recv(65536), b""))
    return json.loads(data)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def scrape_until(port: int, done, seconds: float = 5.0) -> dict[str, float]:
    """The metrics once ``done(metrics)`` holds: a worker counts a request just after it
    has answered, so a scrape straight after the answer may come first."""
    deadline = time.monotonic() + seconds
    while True:
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
        if done(metrics) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


def line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("daemon")
    sock, log = folder / "a.sock", folder / "decisions.jsonl"
    config = folder / "analyzer.toml"
    with socket.socket() as probe:  # a free port for the metrics endpoint
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(
        f'[metrics]\nlisten = "127.0.0.1:{port}"\ntextfile = "{folder / "mlwaf.prom"}"\n'
        f'[server]\nsocket = "{sock}"\nworkers = 2\n[logs]\ndecision_log = "{log}"\n[models.attack]\npath = "{MODEL}"\n'
        f'[profile]\nobservations = "{folder / "observations.jsonl"}"\n'
        f'[behaviour]\nenabled = true\nbaseline = "{folder / "baseline.npz"}"\n'
    )
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # stands in for systemd's notify socket
    systemd.bind(str(folder / "notify"))
    systemd.settimeout(20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlwaf.cli", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(folder / "notify")},
    )
    ready = systemd.recv(4096).decode()
    assert ready.startswith("READY=1\nSTATUS=serving with 2 workers"), ready
    assert sock.exists(), "ready before the socket exists"
    assert listening(port), "ready before the metrics endpoint listens"
    yield proc, sock, log, port
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert systemd.recv(4096) == b"STOPPING=1"
    systemd.close()
    journal = proc.stderr.read()
    assert "stopped" in journal
    assert "endpoint rate baseline starts empty" in journal
    assert (folder / "baseline.npz").exists(), "the behavioural layer's baseline is kept at stop"


def test_socket_mode(daemon) -> None:
    _, sock, *_ = daemon
    assert sock.stat().st_mode & 0o777 == 0o660


def test_attack_and_benign(daemon) -> None:
    _, sock, *_ = daemon
    reply = ask(sock, line(ATTACK))
    assert reply["v"] == 1
    assert reply["id"] == "r1"
    assert reply["verdict"] == "block"
    assert reply["reasons"][0]["name"] == "q"
    benign = ask(sock, line({"v": 1, "args": [["query", "q", "tea"]]}))
    assert benign["verdict"] == "allow"


def test_many_concurrent_clients(daemon) -> None:
    _, sock, *_ = daemon
    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(lambda i: ask(sock, line({**ATTACK, "id": str(i)})), range(400)))
    assert sorted(int(r["id"]) for r in replies) == list(range(400))
    assert {r["verdict"] for r in replies} == {"block"}


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json\n", "not JSON"),
        (b'{"v": 2}\n', "unsupported protocol version"),
        (b'{"v": 1, "args": "x"}\n', "args must be a list"),
        (b'{"v": 1, "id": "t", "args": [[1, 2, 3]]\n', "not JSON"),
        (b"\xff\xfe\x00garbage\n", "not JSON"),
    ],
)
def test_bad_messages_get_a_safe_answer(daemon, payload: bytes, error: str) -> None:
    _, sock, *_ = daemon
    reply = ask(sock, payload)
    assert reply["verdict"] == "allow"
    assert error in reply["error"]


def test_oversize_message_and_silent_clients(daemon) -> None:
    _, sock, *_ = daemon
    reply = ask(sock, b'{"v": 1, "args": [["query", "q", "' + b"a" * (2 << 20) + b'"]]}\n', timeout=10)
    assert reply["verdict"] == "allow"
    assert "larger than" in reply["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:  # connect and leave without a word
        conn.connect(str(sock))
    assert ask(sock, line(ATTACK))["verdict"] == "block"


def test_deep_json_and_many_args(daemon) -> None:
    _, sock, *_ = daemon
    deep = b'{"v": 1, "x": ' + b"[" * 100000 + b"]" * 100000 + b"}\n"
    assert ask(sock, deep)["verdict"] == "allow"
    many = {"v": 1, "args": [["query", f"p{i}", "x"] for i in range(5000)]}
    reply = ask(sock, line(many))
    assert reply["verdict"] == "allow"
    assert reply["anomalies"] == ["args_truncated"]


def test_decision_log(daemon) -> None:
    _, sock, log, _ = daemon
    ask(sock, line({**ATTACK, "id": "logged", "client_ip": "192.0.2.1", "method": "POST"}))
    deadline = time.monotonic() + 5  # the worker writes the log line just after it answers
    while '"logged"' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    record = next(r for r in records if r["id"] == "logged")
    assert (record["verdict"], record["client_ip"], record["method"]) == ("block", "192.0.2.1", "POST")
    assert all(r["verdict"] != "allow" or "error" in r for r in records), "allowed requests are not logged by default"
    # the input behind the verdict is kept for `mlwaf feedback`
    assert any(reason.get("value") == ATTACK["args"][0][2] for reason in record["reasons"]), record
    marked = subprocess.run(
        [sys.executable, "-m", "mlwaf.cli", "feedback", "--log", str(log), "--false-positive", "logged"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert marked.returncode == 0, marked.stderr
    exported = [json.loads(x) for x in marked.stdout.splitlines()]
    assert {"text": ATTACK["args"][0][2], "family": "benign"}.items() <= exported[0].items()


def test_learning_records_shapes_of_allowed_requests(daemon) -> None:
    _, sock, log, _ = daemon
    observations = log.parent / "observations.jsonl"
    secret = "correct horse battery staple"
    ask(sock, line({"v": 1, "id": "learned", "method": "POST", "path": "/login", "args": [["body", "pw", secret]]}))
    ask(sock, line({**ATTACK, "path": "/attack-path"}))
    deadline = time.monotonic() + 5
    while "/login" not in observations.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = observations.read_text()
    assert '"/login"' in text
    assert secret not in text, "observations keep shapes, never values"
    assert "/attack-path" not in text, "blocked requests are not learned"
    out = log.parent / "profile.json"
    learned = subprocess.run(
        [sys.executable, "-m", "mlwaf.cli", "learn", "--observations", str(observations), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert learned.returncode == 0, learned.stderr
    assert "pw" in json.loads(out.read_text())["endpoints"]["/login"]["params"]


def workers(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()


def test_dead_worker_is_replaced(daemon) -> None:
    proc, sock, *_ = daemon
    children = workers(proc.pid)
    assert len(children) == 3  # two workers and the metrics process
    os.kill(int(children[0]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = workers(proc.pid)
        if len(now) == 3 and children[0] not in now:
            break
        time.sleep(0.1)
    assert len(now) == 3
    assert children[0] not in now
    assert ask(sock, line(ATTACK))["verdict"] == "block"


def test_metrics_count_what_was_answered(daemon) -> None:
    _, sock, _, port = daemon
    before = scrape(f"http://127.0.0.1:{port}/metrics")
    for _ in range(3):
        assert ask(sock, line(ATTACK))["verdict"] == "block"
    assert ask(sock, line({"v": 1, "path": "/s", "args": [["query", "q", "shoes"]]}))["verdict"] == "allow"
    assert ask(sock, b"not json\n")["error"]
    counted = before.get("mlwaf_processing_seconds_count", 0.0) + 5
    after = scrape_until(port, lambda m: m["mlwaf_processing_seconds_count"] >= counted)

    def grew(key: str) -> float:
        return after[key] - before.get(key, 0.0)

    assert grew('mlwaf_requests_total{verdict="block"}') == 3
    assert grew('mlwaf_requests_total{verdict="allow"}') == 1
    assert grew('mlwaf_requests_total{verdict="error"}') == 1
    assert grew('mlwaf_detections_total{action="block",family="sqli",model="attack"}') == 3
    assert grew("mlwaf_processing_seconds_count") == 5
    assert after['mlwaf_processing_seconds_bucket{le="+Inf"}'] == after["mlwaf_processing_seconds_count"]
    assert after["mlwaf_workers"] == 2
    assert 0 < after["mlwaf_model_load_seconds"] < 60
    assert any(k.startswith("mlwaf_model_info{") and 'model="attack"' in k for k in after)
    assert after["mlwaf_tracked_clients"] >= 0
    assert 0 <= after["mlwaf_gc_longest_seconds"] <= after["mlwaf_gc_seconds_total"]


def test_limits_hit_are_counted_per_limit() -> None:
    metrics = Metrics(1, [])
    metrics.worker(0)
    metrics.count(Reply(verdict="allow", anomalies=["bridge_cut", "value_truncated", "json_invalid"]))
    metrics.count(Reply(verdict="block", anomalies=["value_truncated"]))
    metrics.count(Reply(verdict="allow"))
    (family,) = [m for m in metrics.collect() if m.name == "mlwaf_limited_requests"]
    counted = {s.labels["limit"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert counted["value_truncated"] == 2
    assert counted["bridge_cut"] == 1
    assert counted["args_truncated"] == 0
    assert "json_invalid" not in counted, "an anomaly that is not a limit"


def test_only_the_allowed_users_may_ask() -> None:
    import pwd  # noqa: PLC0415 - this test alone

    nobody = pwd.getpwnam("nobody").pw_uid
    assert allowed_peers(()) is None, "no list: whoever can open the socket"
    assert allowed_peers(("nobody",)) == {0, os.getuid(), nobody}, "root and the analyzer's own user always"
    metrics = Metrics(1, [])
    metrics.worker(0)
    refused: set[int] = set()
    ours, theirs = socket.socketpair()  # the peer is this process: root here
    with ours, theirs:
        assert not refuse(ours, None, refused, metrics)
        assert not refuse(ours, frozenset({os.getuid()}), refused, metrics)
        assert refuse(ours, frozenset({nobody}), refused, metrics)
        assert refuse(ours, frozenset({nobody}), refused, metrics)
    assert refused == {os.getuid()}, "logged once"
    (family,) = [m for m in metrics.collect() if m.name == "mlwaf_refused_peers"]
    assert next(s.value for s in family.samples if s.name.endswith("_total")) == 2


def test_collections_are_timed() -> None:
    metrics = Metrics(1, [])
    metrics.worker(0)
    metrics.watch_collector()
    try:
        garbage = [[[n]] for n in range(200_000)]  # enough containers to make a full collection take a while
        gc.collect()
        del garbage
        gc.collect()
    finally:
        gc.callbacks.pop()
    total, longest = metrics.get("gc_s", 0), metrics.get("gc_longest_s", 0)
    assert 0 < longest <= total
    scraped = {m.name: m.samples[0].value for m in metrics.collect() if m.samples}
    assert scraped["mlwaf_gc_seconds"] == total
    assert scraped["mlwaf_gc_longest_seconds"] == longest


def test_the_loaded_heap_is_kept_out_of_collections() -> None:
    gc.unfreeze()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 1000  # this test process's modules, at the least
    finally:
        gc.unfreeze()


def test_a_late_reply_is_logged_whatever_its_verdict(tmp_path: Path) -> None:
    """A reply the bridge never read (it had given up): Apache took its fallback path, so the
    decision log keeps what the model said, allow included, for ml_fallback.log's line to join."""
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path), log_allowed=False)
    allowed = Reply(verdict="allow", id="on-time")
    log.write(allowed, None)
    log.write(Reply(verdict="allow", id="slow"), None, "late")
    log.write(Reply(verdict="block", id="slow-attack"), None, "late")
    records = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert set(records) == {"slow", "slow-attack"}
    assert records["slow"]["unanswered"] == records["slow-attack"]["unanswered"] == "late"
    assert records["slow-attack"]["verdict"] == "block"


def test_secrets_never_reach_the_decision_log(tmp_path: Path) -> None:
    from mlwaf.protocol import Reason  # noqa: PLC0415 - this test alone

    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(str(path), log_allowed=False, secret_args=("pin",))
    inputs = [
        ("body", "username", "admin'--"),
        ("body", "user_password", "Secret123!;id"),
        ("json", "login.pass:base64", "Secret123!;id"),
        ("body", "card_pin", "1234;id"),
        ("cookie", "PHPSESSID", "abc;id"),
        ("header", "authorization:jwt", "Bearer x;id"),
        ("header", "user-agent", "curl;id"),
    ]
    reasons = [Reason("attack", "cmdi", 0.99, source, name, value=value) for source, name, value in inputs]
    log.write(Reply(verdict="block", id="r1", reasons=reasons), None)
    text = path.read_text()
    assert "Secret123" not in text
    assert "1234" not in text, "the operator's own names too"
    assert "abc;id" not in text
    assert "Bearer" not in text
    (record,) = map(json.loads, text.splitlines())
    logged = {r["name"]: r for r in record["reasons"]}
    assert logged["username"]["value"] == "admin'--", "what is not a secret stays readable for mlwaf feedback"
    assert logged["user-agent"]["value"] == "curl;id"
    assert logged["user_password"]["value_masked"] is True
    assert "value" not in logged["PHPSESSID"]


def test_hung_up_tells_a_closed_client_from_one_that_only_finished_sending() -> None:
    for ending, gone in (("close", True), ("half-close", False), ("stay", False)):
        server, client = socket.socketpair()
        with server, client:
            client.sendall(line(ATTACK))
            if ending == "close":
                client.close()
            elif ending == "half-close":
                client.shutdown(socket.SHUT_WR)  # as `mlwaf query` does, and still waits for its answer
            assert server.recv(65536) == line(ATTACK)
            assert hung_up(server) is gone, ending


def test_requests_the_bridge_gave_up_on_are_not_analysed(daemon) -> None:
    _, sock, log, port = daemon
    before = scrape(f"http://127.0.0.1:{port}/metrics")
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    for conn in silent:  # keep both workers waiting for a message
        conn.connect(str(sock))
    time.sleep(0.5)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as queued:  # waits in the backlog, then gives up
        queued.connect(str(sock))
        queued.sendall(line({**ATTACK, "id": "abandoned"}))
    for conn in silent:
        conn.close()
    assert ask(sock, line({**ATTACK, "id": "after"}))["verdict"] == "block"
    blocked, dropped = 'mlwaf_requests_total{verdict="block"}', "mlwaf_abandoned_requests_total"
    after = scrape_until(port, lambda m: m[blocked] > before[blocked] and m[dropped] > before[dropped])
    assert '"after"' in log.read_text()  # logged before it is counted
    (record,) = [r for r in map(json.loads, log.read_text().splitlines()) if r["id"] == "abandoned"]
    assert (record["verdict"], record["unanswered"], record["path"]) == ("unscored", "abandoned", "/s")
    assert after[dropped] - before[dropped] == 1
    assert after[blocked] - before[blocked] == 1


def test_requests_the_bridge_gave_up_on_still_count_for_the_behavioural_layer(daemon) -> None:
    """A client whose requests all wait in the backlog until the bridge gives up (a flood that
    overloads the analyzer) is still counted, and banned: its next request is refused at once."""
    sock = daemon[1]
    flood = {"v": 1, "path": "/", "args": [], "client_ip": "198.51.100.23"}
    silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    for conn in silent:
        conn.connect(str(sock))
    time.sleep(0.5)
    for i in range(12):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as queued:
            queued.connect(str(sock))
            queued.sendall(line({**flood, "id": f"gave-up-{i}"}))
    for conn in silent:
        conn.close()
    time.sleep(0.5)  # the workers read the twelve and find each hung up
    reply = ask(sock, line({**flood, "id": "next"}))
    assert (reply["verdict"], reply.get("status")) == ("block", 429), reply
    other = ask(sock, line({**flood, "id": "other", "client_ip": "198.51.100.24"}))
    assert other["verdict"] == "allow", "only that client"


def test_metrics_answer_on_a_port_systemd_opened() -> None:
    import urllib.request  # noqa: PLC0415 - this test alone

    metrics = Metrics(1, [])
    metrics.worker(0)
    metrics.count(Reply(verdict="block"))
    listener = socket.create_server(("127.0.0.1", 0))  # as the socket unit hands it over
    serve_on(metrics, listener)
    port = listener.getsockname()[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert 'mlwaf_requests_total{verdict="block"} 1.0' in text


def test_metrics_textfile(daemon) -> None:
    log = daemon[2]
    textfile = log.parent / "mlwaf.prom"
    deadline = time.monotonic() + 5
    while not textfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "mlwaf_requests_total" in textfile.read_text()
    assert textfile.stat().st_mode & 0o777 == 0o644, "node_exporter runs as a user of its own"


def test_canaries_and_health(daemon) -> None:
    _, sock, log, port = daemon
    url = f"http://127.0.0.1:{port}/metrics"
    before, logged = scrape(url), log.stat().st_size
    result = run_canaries(str(sock))
    assert result.detection_rate == 1.0, result.missed
    assert result.false_positive_rate == 0.0, result.flagged
    services = Services(analyzer="", apache="", socket=str(sock), metrics_url=url, probe_url=url)
    settings = MonitoringSettings(services=services, alerts=Alerts(disk_paths=()))
    health = check(settings)
    assert health.healthy, health.line
    assert "2 workers" in health.line
    # the checks are neither counted nor logged
    assert scrape(url)["mlwaf_processing_seconds_count"] == before["mlwaf_processing_seconds_count"]
    assert log.stat().st_size == logged
    gone = MonitoringSettings(services=replace(services, socket=f"{sock}.gone"), alerts=Alerts(disk_paths=()))
    assert check(gone).line.startswith("UNHEALTHY: analyzer does not answer")


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer.from_settings(Settings(models={"attack": ModelSettings(path=str(MODEL))}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_any_bytes_get_a_valid_reply(analyzer: Analyzer, data: bytes) -> None:
    reply, _ = handle_line(analyzer, data)
    assert reply.verdict in VERDICTS
    json.loads(reply.encode())


def test_the_tuning_recording_keeps_flagged_requests_shapes(tmp_path: Path) -> None:
    """Learning for site tuning: a line for a request a model or a CRS rule flagged, with
    the rules CRS reported through the bridge; none for a quiet one; no value, no address."""
    settings = Settings(models={"attack": ModelSettings(path=str(MODEL))}, mode="detection-only")
    subject = Analyzer.from_settings(settings)
    path = tmp_path / "record.jsonl"
    recording = TuningLog(str(path), {"attack": subject.thresholds["attack"].block})
    attack = "1' union select password from users--"
    flagged = line(
        {
            "v": 1,
            "id": "r1",
            "method": "POST",
            "path": "/post/42",
            "args": [["body", "comment", attack]],
            "client_ip": "198.51.100.7",
            "crs": "942100@ARGS:comment 901001@TX:x",
            "crs_score": 5,
        }
    )
    quiet = line({"v": 1, "id": "r2", "path": "/", "args": [["query", "q", "shoes"]], "client_ip": "198.51.100.7"})
    for message in (flagged, quiet):
        reply, request = handle_line(subject, message)
        recording.write(reply, request)
    (record,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert record["e"] == "/post/{id}"
    assert record["crs"] == [["942100", "ARGS:comment"]]
    assert record["ml"][0][:4] == ["attack", "sqli", "body", "comment"]
    assert record["ml"][0][5] == 1
    assert attack not in path.read_text()
    assert "198.51.100" not in path.read_text()
    assert (tmp_path / "record.jsonl.key").stat().st_mode & 0o777 == 0o600
