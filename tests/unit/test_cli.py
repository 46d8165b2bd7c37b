"""The mlwaf command line, and the `mlwaf score` contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlwaf.cli import main

MODEL = str(Path(__file__).resolve().parents[2] / "files" / "models" / "attack.json")


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlwaf.cli", *args], input=stdin, capture_output=True, text=True, check=False
    )


def test_help_explains_the_commands() -> None:
    out = run("--help").stdout
    for command in ("serve", "score", "query", "check", "train"):
        assert command in out


def test_score_contract() -> None:
    requests = [
        {"id": 1, "method": "GET", "path": "/search.php?q=coffee", "headers": {}, "body": ""},
        {
            "id": "form",
            "method": "POST",
            "path": "/login.php",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "body": "username=admin%27%20or%20%271%27%3D%271&password=x",
        },
        {
            "id": "json",
            "method": "POST",
            "path": "/api",
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"filter": {"name": "<script>alert(1)</script>"}}),
            "client_ip": "192.0.2.4",
            "ts": 1700000000,
        },
        {
            "id": "multipart",
            "method": "POST",
            "path": "/upload",
            "headers": {"Content-Type": "multipart/form-data; boundary=XX"},
            "body": '--XX\r\nContent-Disposition: form-data; name="cmd"\r\n\r\n; cat /etc/passwd\r\n--XX--\r\n',
        },
    ]
    stdin = "\n".join(json.dumps(r) for r in requests) + "\n\nnot json\n" + json.dumps({"id": "x", "method": 5})
    result = run("score", "--model", MODEL, stdin=stdin)
    assert result.returncode == 0, result.stderr
    out = [json.loads(x) for x in result.stdout.splitlines()]
    by_id = {r["id"]: r for r in out}
    assert set(by_id[1]) == {"id", "verdict", "scores", "reasons"}
    assert by_id[1]["verdict"] == "allow"
    assert by_id["form"]["verdict"] == "block"
    assert by_id["form"]["reasons"][0] == {
        **by_id["form"]["reasons"][0],
        "family": "sqli",
        "source": "body",
        "name": "username",
    }
    assert by_id["json"]["reasons"][0]["name"] == "filter.name"
    assert by_id["json"]["reasons"][0]["family"] == "xss"
    assert by_id["multipart"]["reasons"][0]["family"] == "cmdi"
    assert "line 6" in out[4]["error"]
    assert out[4]["id"] is None
    assert out[5]["id"] == "x"
    assert "invalid method" in out[5]["error"]
    assert "scored 4 requests" in result.stderr
    assert "3 block, 0 log, 1 allow, 2 unreadable" in result.stderr


def test_score_from_a_checkout_finds_the_shipped_model(tmp_path: Path) -> None:
    stdin = json.dumps({"id": 1, "path": "/s?q=1%20union%20select%20password%20from%20users--"})
    command = [sys.executable, "-m", "mlwaf.cli", "score"]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert f"using the checkout's shipped {MODEL}" in result.stderr
    assert json.loads(result.stdout)["verdict"] == "block"


def test_score_detection_only_mode() -> None:
    stdin = json.dumps({"id": 1, "path": "/s?q=1%20union%20select%20password%20from%20users--"})
    out = json.loads(run("score", "--model", MODEL, "--mode", "detection-only", stdin=stdin).stdout)
    assert out["verdict"] == "log"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--model", "/nonexistent/attack.json"], "cannot read model metadata"),
        (["check", "--config", "/nonexistent.toml"], "cannot read /nonexistent.toml"),
        (["score", "--model", MODEL, "/nonexistent.jsonl"], "cannot open /nonexistent.jsonl: No such file"),
        (["simulate", "flood", "stampede"], "unknown scenario stampede"),
        (["train", "flood", "--data", "/nonexistent", "--extra", "x.jsonl"], "are for the attack model only"),
        (["train", "flood", "--data", "/nonexistent", "--recalibrate"], "are for the attack model only"),
    ],
)
def test_errors_are_readable(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_check_reports_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--model", MODEL]) == 0
    out = capsys.readouterr().out
    assert "model attack" in out
    assert "configuration OK" in out


def test_query_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--socket", str(tmp_path / "none.sock"), "/x?q=1"]) == 3
    assert "unavailable" in capsys.readouterr().err
