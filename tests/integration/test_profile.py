"""The application profile on the appliance: a learning period, then blocking what strays from it."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Client, converge

PROFILE_DIR = "/var/lib/mlwaf/profile"
MLWAF = "/opt/mlwaf/venv/bin/mlwaf"
DECISIONS = "/var/log/mlwaf/decisions.jsonl"
# Normal use of the demo site during the learning period: searches for words,
# logins with letters-only user names, the home page.
LEARNING_TRAFFIC = r"""
set -e
words="coffee grinder kettle filter beans mug espresso milk sugar cup paper press"
for i in $(seq 1 240); do
  w=$(echo $words | tr ' ' '\n' | shuf -n1)
  user=$(tr -dc 'a-z' </dev/urandom | head -c $((4 + i % 8)))
  curl -s -o /dev/null "http://127.0.0.1/search.php?q=$w"
  curl -s -o /dev/null --data-urlencode "username=$user" --data-urlencode "password=pw$i-$user" \
    http://127.0.0.1/login.php
  curl -s -o /dev/null http://127.0.0.1/index.php
done
"""


@pytest.fixture(scope="module")
def profiled(host):
    """Learn the site's profile from real traffic, switch to blocking; afterwards turn it off."""
    hostname = host.backend.host
    converge(hostname, "--tags", "ml_analyzer_configure", "-e", "ml_analyzer_profile_mode=learn")
    host.run(f"rm -f {PROFILE_DIR}/profile.json")
    learning = host.run(LEARNING_TRAFFIC)
    assert learning.rc == 0, learning.stderr
    converge(hostname, "--tags", "ml_analyzer_configure", "-e", "ml_analyzer_profile_mode=block")
    yield
    converge(hostname, "--tags", "ml_analyzer_configure")


def test_learning_recorded_shapes_not_values(host, profiled) -> None:
    observations = host.file(f"{PROFILE_DIR}/observations.jsonl").content_string.splitlines()
    assert len(observations) >= 600
    first = json.loads(observations[0])
    assert {"m", "e", "a"} <= first.keys()
    assert "coffee" not in host.file(f"{PROFILE_DIR}/observations.jsonl").content_string


def test_profile_was_learned_and_loaded(host, profiled) -> None:
    profile = json.loads(host.file(f"{PROFILE_DIR}/profile.json").content_string)
    assert profile["requests"] >= 600
    assert {"/search.php", "/login.php", "/index.php"} <= profile["endpoints"].keys()
    check = host.run(f"{MLWAF} check --config /etc/mlwaf/analyzer.toml")
    assert check.rc == 0, check.stderr
    assert "profile /var/lib/mlwaf/profile/profile.json" in check.stdout
    assert "mode block" in check.stdout
    assert "observations" not in check.stdout, "learning stops when the mode moves on"


def test_normal_requests_still_pass(client: Client, profiled) -> None:
    assert client.request("/search.php?q=kettle").status == 200
    login = client.request("/login.php", method="POST", form={"username": "zelda", "password": "pw1-zelda"})
    assert login.status == 200  # the login fails (no such user), but the request is let through
    assert "Log in" in login.body


def decisions(host) -> list[dict]:
    return [json.loads(line) for line in host.file(DECISIONS).content_string.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "case",
    [
        ("/search.php?q=mug&debug=1", "GET", None, "param"),
        ("/search.php?qq=mug", "GET", None, "param"),
        ("/login.php", "POST", {"username": "b0b", "password": "pw9-bob"}, "charset"),
        ("/login.php", "POST", {"username": "a" * 80, "password": "pw9-bob"}, "length"),
        ("/admin.php", "GET", None, "endpoint"),
        ("/search.php?q=mug", "OPTIONS", None, "method"),  # CRS refuses PUT and DELETE itself
    ],
)
def test_tampered_requests_are_refused(host, client: Client, profiled, case: tuple) -> None:
    path, method, form, kind = case
    before = len(decisions(host))
    answer = client.request(path, method=method, form=form)
    assert answer.status == 403, (path, method, form)
    deadline = time.monotonic() + 5  # the worker writes its decision just after it answers
    while len(new := decisions(host)[before:]) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    reasons = [(r["model"], r["family"]) for d in new for r in d.get("reasons", [])]
    assert ("profile", kind) in reasons, new
