"""The operations tools on log files written here: parsing (with broken lines),
rotated and gzipped files, the monitor's figures, the report, alert thresholds."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from mlwaf.config import ConfigError
from mlwaf.ops.canary import ATTACKS
from mlwaf.ops.logs import (
    LogError,
    Tail,
    Tally,
    entries,
    parse_access,
    parse_decision,
    parse_fallback,
    parse_performance,
    recent,
    rotated,
)
from mlwaf.ops.monitor import render, snapshot
from mlwaf.ops.perfcheck import evaluate, metric_line, run_check
from mlwaf.ops.report import ReportError, parse_when, write_report
from mlwaf.ops.settings import Alerts, Logs, MonitoringSettings, Services, load_monitoring

NOW = 1_790_000_000.0


def access_line(ts: float, status: int = 200, verdict: str = "-", **fields: str) -> str:
    """A waf_combined line (fields: agent, client)."""
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(ts))
    agent, client = fields.get("agent", "Mozilla/5.0"), fields.get("client", "192.0.2.1")
    return f'{client} - - [{when}] "GET /index.php?id=1 HTTP/1.1" {status} 512 "-" "{agent}" 1500 {verdict}\n'


def decision_line(ts: float, verdict: str = "block", model: str = "attack", family: str = "sqli") -> str:
    record = {
        "ts": ts, "client_ip": "192.0.2.9", "method": "GET", "path": "/s", "v": 1, "id": "x", "verdict": verdict,
        "scores": {model: 0.99}, "ms": 0.4,
        "reasons": [{"model": model, "family": family, "source": "query", "name": "q", "score": 0.99}],
    }  # fmt: skip
    return json.dumps(record) + "\n"


def test_access_lines() -> None:
    entry = parse_access(access_line(NOW, 403, agent='curl \\"quoted\\" 8.0'))
    assert entry is not None
    assert (entry.status, entry.ms, entry.method, entry.path) == (403, 1.5, "GET", "/index.php?id=1")
    assert entry.ts == NOW
    assert entry.blocked_by == "rules"
    assert parse_access(access_line(NOW, 403, verdict="block")).blocked_by == "ml"
    assert parse_access(access_line(NOW, 200, verdict="allow")).blocked_by == ""
    old_format = access_line(NOW).replace(" -\n", "\n")  # before the verdict field was added
    assert parse_access(old_format).verdict == "-"
    fallback = access_line(NOW, 200, verdict="")  # the analyzer did not answer: an empty field
    assert (parse_access(fallback).verdict, parse_access(fallback).blocked_by) == ("-", "")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        access_line(NOW)[:40],  # cut off by a crash
        access_line(NOW).replace("[", "[99/Xyz/2026:"),  # a date that is no date
        access_line(NOW).replace(" 1500 ", " 1.5e3 "),
    ],
)
def test_broken_access_lines(line: str) -> None:
    assert parse_access(line) is None


@pytest.mark.parametrize("line", ["", "1700000000", "a,b,c", "1700000000,-1,True", "nan,1,True", "1,2,3,4"])
def test_broken_performance_lines(line: str) -> None:
    assert parse_performance(line) is None


@pytest.mark.parametrize(
    "line", ["", "{", "[]", '{"ts": 1}', '{"ts": "x", "verdict": "block"}', '{"ts": 1, "verdict": "log", "reasons": 5}']
)
def test_broken_decision_lines(line: str) -> None:
    assert parse_decision(line) is None


def test_rotated_and_gzipped_logs_are_read_oldest_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with gzip.open(tmp_path / "access.log.2.gz", "wt") as handle:
        handle.write(access_line(NOW - 300) + "broken line\n")
    (tmp_path / "access.log.1").write_text(access_line(NOW - 200) + access_line(NOW - 100)[:30] + "\n")
    log.write_text(access_line(NOW - 50) + access_line(NOW))
    (tmp_path / "access.log.bak").write_text("not a rotation\n")
    assert [p.name for p in rotated(log)] == ["access.log.2.gz", "access.log.1", "access.log"]
    tally = Tally()
    got = [e.ts for e in entries(log, parse_access, tally)]
    assert got == [NOW - 300, NOW - 200, NOW - 50, NOW]
    assert (tally.read, tally.skipped) == (4, 2)
    assert [e.ts for e in entries(log, parse_access, Tally(), NOW - 250, NOW - 10)] == [NOW - 200, NOW - 50]


def test_recent_reads_from_the_end(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    # about 3 MB: the first chunk read from the end does not reach back far enough
    with log.open("w") as handle:
        for i in range(30_000):
            handle.write(access_line(NOW - 30_000 + i))
        handle.write("half a li")
    tally = Tally()
    got = recent(log, parse_access, tally, NOW - 20_000)
    assert len(got) == 20_000
    assert tally.skipped == 1
    assert recent(tmp_path / "missing.log", parse_access, Tally(), 0) == []


@pytest.fixture
def logs(tmp_path: Path) -> MonitoringSettings:
    access, perf, decisions = tmp_path / "access.log", tmp_path / "ml_performance.log", tmp_path / "decisions.jsonl"
    lines = [access_line(NOW - 30 + i) for i in range(20)]
    lines += [access_line(NOW - 5, 403, client="198.51.100.7")] * 3  # CRS
    lines += [access_line(NOW - 4, 403, "block", client="198.51.100.8")] * 2  # the attack model
    lines += [access_line(NOW - 4, 429, "ratelimit", client="198.51.100.9")]  # the behavioural layer
    lines += [access_line(NOW - 3, agent="mlwaf-probe/1")] * 4  # the performance probe: left out
    lines += [access_line(NOW - 600)] * 7  # before the window
    lines += ["broken\n"]
    access.write_text("".join(lines))
    perf.write_text("".join(f"{NOW - 10:.0f},{ms},False\n" for ms in (0.2, 0.3, 0.4, 5.0)) + "x,y\n")
    decisions.write_text(
        decision_line(NOW - 4) * 2 + decision_line(NOW - 4, model="behaviour", family="flood")
        + decision_line(NOW - 3, "log", family="xss") + "{broken\n"
    )  # fmt: skip
    return MonitoringSettings(
        logs=Logs(
            access_log=str(access),
            performance_log=str(perf),
            decision_log=str(decisions),
            fallback_log=str(tmp_path / "ml_fallback.log"),
        ),
        services=Services(metrics_url=""),
    )


def test_monitor_counts_what_the_logs_say(logs: MonitoringSettings) -> None:
    view = snapshot(logs, NOW - 60, NOW, health=False)
    assert view["requests"] == 26
    assert view["blocked"]["total"] == 6
    assert (view["blocked"]["rules"], view["blocked"]["ml"]) == (3, 3)
    assert view["blocked"]["ml_by_model"] == {
        "attack": {"count": 2, "share": round(2 / 26, 4)},
        "behaviour": {"count": 1, "share": round(1 / 26, 4)},
    }
    assert view["flagged"] == 1
    assert view["statuses"] == {"2xx": 20, "4xx": 6}
    assert view["ml_ms"]["scored"] == 4
    assert view["ml_ms"]["p50"] == pytest.approx(0.35)
    assert view["top_families"][0] == ("attack/sqli", 2)
    assert ("198.51.100.7", 3) in view["top_blocked_clients"]
    assert view["skipped_lines"] == {"access": 1, "performance": 1, "decisions": 1, "fallbacks": 0}
    assert view["unanswered"] == 0
    screen = render(view)
    assert "rules (CRS) 3" in screen
    assert "attack/xss" in screen
    assert json.loads(json.dumps(view))["requests"] == 26


def test_report_names_the_blocked_families(logs: MonitoringSettings, tmp_path: Path) -> None:
    out = tmp_path / "report"
    text = write_report(logs, NOW - 3600, NOW, out, "waf1")
    page = (out / "index.html").read_text()
    for family in ("attack/sqli", "behaviour/flood", "attack/xss", "rules (CRS)"):
        assert family in page
        assert family in text
    for chart in ("latency.png", "throughput.png", "families.png", "scores.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert chart in page
    assert "requests" in (out / "summary.txt").read_text()
    with pytest.raises(ReportError, match="after"):
        write_report(logs, NOW, NOW - 10, out, "waf1")


def test_times() -> None:
    assert parse_when("2h", NOW) == NOW - 7200
    assert parse_when("1790000000", NOW) == NOW
    assert parse_when("2026-11-21T20:00", NOW) > 0
    with pytest.raises(ReportError, match="cannot read the time"):
        parse_when("yesterday", NOW)


FIGURES = {
    "response_ms": 12.0, "status": 200, "requests_per_s": 150.0, "error_rate": 0.0, "cpu": 0.2, "memory": 0.5,
    "disk": 0.3, "queue": 0, "analyzer_up": 1.0, "detection_rate": 1.0, "false_positive_rate": 0.0, "model_load_s": 0.4,
}  # fmt: skip


def test_thresholds() -> None:
    settings = MonitoringSettings()
    assert evaluate(FIGURES, settings) == []
    bad = {**FIGURES, "response_ms": 900.0, "cpu": 0.95, "detection_rate": 0.5, "disk": 0.85, "model_load_s": 2.0}
    alerts = {a.name: a.severity for a in evaluate(bad, settings)}
    assert alerts == {
        "response_ms": "warning", "cpu": "warning", "detection_rate": "critical", "disk": "error",
        "model_load_s": "warning",
    }  # fmt: skip
    quiet = {**FIGURES, "requests_per_s": 3.0}
    assert evaluate(quiet, settings) == []  # little traffic is only news when traffic is expected
    expected = replace(settings, alerts=Alerts(traffic_expected=True))
    assert [a.name for a in evaluate(quiet, expected)] == ["requests_per_s"]
    down = {**FIGURES, "status": 0, "analyzer_up": 0.0, "logs_readable": 0.0, "unanswered_rate": 0.2}
    assert {a.name for a in evaluate(down, settings)} == {"probe", "analyzer_up", "logs_readable", "unanswered_rate"}
    line = metric_line(FIGURES, NOW)
    assert line.startswith("2026-")
    assert "response_ms=12 " in line
    assert "detection_rate=1" in line


class Hook(BaseHTTPRequestHandler):
    """The probe's URL (GET) and the alert webhook (POST, kept in ``received``)."""

    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def fake_analyzer(path: Path) -> socket.socket:
    """Answers like the analyzer: the canary attacks blocked by the attack model, the rest allowed."""
    attacks = {value for _, value in ATTACKS}
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                value = json.loads(conn.makefile().readline())["args"][0][2]
                reasons = [{"model": "attack", "family": "x"}] if value in attacks else []
                conn.sendall(json.dumps({"verdict": "block" if reasons else "allow", "reasons": reasons}).encode())

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_the_webhook_hears_when_alerts_start_and_end(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    sock = tmp_path / "analyzer.sock"
    settings = MonitoringSettings(
        logs=Logs(*(str(tmp_path / name) for name in ("access.log", "perf.log", "fallback.log", "d.jsonl", "m.log"))),
        services=Services(
            analyzer="", apache="", socket=str(sock), metrics_url="", probe_url=f"{url}/",
            state_file=str(tmp_path / "state.json"),
        ),
        alerts=Alerts(disk_paths=(), webhook_url=f"{url}/hook", cpu=1.0),
    )  # fmt: skip
    Hook.received.clear()
    try:
        line, alerts = run_check(settings, NOW)  # no analyzer yet
        assert "analyzer_up=0" in line
        assert [a.name for a in alerts] == ["analyzer_up"]
        assert [a["name"] for a in Hook.received[-1]["firing"]] == ["analyzer_up"]
        run_check(settings, NOW + 60)
        assert len(Hook.received) == 1, "an alert that goes on is not sent again"
        listener = fake_analyzer(sock)
        line, alerts = run_check(settings, NOW + 120)
        listener.close()
        assert "detection_rate=1 false_positive_rate=0" in line
        assert alerts == []
        assert Hook.received[-1] == {**Hook.received[-1], "firing": [], "resolved": ["analyzer_up"]}
        sock.unlink()
        nobody = replace(settings, alerts=replace(settings.alerts, webhook_url=f"http://127.0.0.1:{free_port()}/"))
        run_check(nobody, NOW + 180)  # the webhook is down: said in syslog, tried again next time
        assert json.loads((tmp_path / "state.json").read_text())["firing"] == []
        run_check(settings, NOW + 240)
        assert [a["name"] for a in Hook.received[-1]["firing"]] == ["analyzer_up"]
    finally:
        server.shutdown()
        server.server_close()
    assert len((tmp_path / "m.log").read_text().splitlines()) == 5, "one metric line a run"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.toml"
    path.write_text('[alerts]\nresponse_ms = 250\ndisk_paths = ["/"]\n[services]\nmetrics_url = ""\n')
    settings = load_monitoring(path)
    assert settings.alerts.response_ms == 250.0
    assert settings.alerts.disk_paths == ("/",)
    assert settings.services.metrics_url == ""
    for text, message in (
        ("[alerts]\nresponse = 1\n", "unknown setting"),
        ("[alerts]\nresponse_ms = 'fast'\n", "must be float"),
        ("[alert]\n", "unknown section"),
        ("[alerts]\ncpu = -1\n", "negative"),
        ("[alerts\n", "not valid TOML"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_monitoring(path)


def test_unanswered_requests(tmp_path: Path) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW - 5))
    line = f'[{when}] aBc 192.0.2.4 "GET /s?q=1 HTTP/1.1" 200 analyzer unavailable: timeout, fail-open\n'
    entry = parse_fallback(line)
    assert entry is not None
    assert (entry.ts, entry.client, entry.status, entry.reason) == (NOW - 5, "192.0.2.4", 200, "timeout")
    assert entry.outcome == "open"
    assert parse_fallback(line.replace("fail-open", "fail-sideways")) is None
    for tail, outcome in (
        ("fail-degraded, check: cmdi", "degraded-caught"),
        ("fail-degraded, check: -", "degraded-passed"),
        ("fail-closed, check: -", "closed"),
    ):
        parsed = parse_fallback(line.replace("fail-open", tail))
        assert parsed is not None
        assert parsed.outcome == outcome
    assert parse_fallback(line.replace(when, "2026-13-45 99:00:00")) is None
    settings = MonitoringSettings(logs=Logs(
        access_log=str(tmp_path / "a"), performance_log=str(tmp_path / "p"), decision_log=str(tmp_path / "d"),
        fallback_log=str(tmp_path / "ml_fallback.log"),
    ))  # fmt: skip
    (tmp_path / "ml_fallback.log").write_text(line * 3 + "half a line")
    view = snapshot(settings, NOW - 60, NOW, health=False)
    assert view["unanswered"] == 3
    assert view["skipped_lines"]["fallbacks"] == 1
    assert "3 unanswered" in render(view)


def test_unreadable_log_is_an_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "access.log").mkdir()  # exists, cannot be read as a file (root reads anything else)
    with pytest.raises(LogError, match="cannot read log"):
        recent(tmp_path / "access.log", parse_access, Tally(), 0)


def test_the_live_monitor_reads_only_what_was_appended(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(access_line(NOW - 100) + access_line(NOW - 10))
    tally = Tally()
    tail = Tail(log, parse_access, tally)
    assert [e.ts for e in tail.since(NOW - 60)] == [NOW - 10]
    with log.open("a") as handle:
        handle.write(access_line(NOW - 5) + "garbage\n" + access_line(NOW - 1)[:20])  # the last one half written
    assert [e.ts for e in tail.since(NOW - 60)] == [NOW - 10, NOW - 5]
    with log.open("a") as handle:
        handle.write(access_line(NOW - 1)[20:])
    assert [e.ts for e in tail.since(NOW - 8)] == [NOW - 5, NOW - 1]
    assert tally.skipped == 1
    log.rename(tmp_path / "access.log.1")  # rotated: a new, shorter file
    log.write_text(access_line(NOW))
    assert [e.ts for e in tail.since(NOW - 8)] == [NOW]
    log.unlink()
    assert tail.since(0) == []
