"""Helpers for the end-to-end tests of the appliance (run by Molecule's testinfra verifier)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
AUDIT_LOG = "/var/log/apache2/modsec_audit.log"
# A command injection that CRS 3.3 at paranoia level 1 lets through and the model blocks.
ML_ONLY_ATTACK = "%60id%60"
SQLI = "1%20union%20select%20password%20from%20users--"
SQLI_LOGIN = {"username": "admin' OR '1'='1' -- ", "password": "x"}


@dataclass
class Answer:
    status: int
    headers: str
    body: str


class Client:
    """Sends HTTP requests from inside the test host with curl."""

    def __init__(self, host) -> None:
        self.host = host

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        form: dict[str, str] | None = None,
        scheme: str = "http",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> Answer:
        marker = uuid.uuid4().hex
        out = f"/tmp/mlwaf-test-{marker}"
        args = ["curl", "-sk", "-o", f"{out}.body", "-D", f"{out}.head", "-w", "%{http_code}", "-X", method]
        for name, value in (headers or {}).items():
            args += ["-H", f"{name}: {value}"]
        for name, value in (form or {}).items():
            args += ["--data-urlencode", f"{name}={value}"]
        if body is not None:
            args += ["--data-binary", body]
        args.append(f"{scheme}://127.0.0.1{path}")
        cmd = self.host.run(" ".join(shlex.quote(a) for a in args))
        assert cmd.rc == 0, f"curl failed: {cmd.stderr}"
        answer = Answer(
            status=int(cmd.stdout.strip()),
            headers=self.host.file(f"{out}.head").content_string,
            body=self.host.file(f"{out}.body").content_string,
        )
        self.host.run(f"rm -f {out}.body {out}.head")
        return answer


@pytest.fixture
def client(host) -> Client:
    return Client(host)


@pytest.fixture(scope="module")
def hostvars(host) -> dict:
    """The inventory variables of the host (group_vars from molecule.yml)."""
    return host.ansible.get_variables()


def audit_entries(host, needle: str) -> list[dict]:
    """Audit-log entries (JSON lines) whose request line contains needle."""
    cmd = host.run(f"grep -F {shlex.quote(needle)} {AUDIT_LOG}")
    return [json.loads(line) for line in cmd.stdout.splitlines() if line.strip()]


def rule_ids(entry: dict) -> set[str]:
    """Rule ids named in an audit-log entry's messages."""
    ids = set()
    for message in entry.get("audit_data", {}).get("messages", []):
        if '[id "' in message:
            ids.add(message.split('[id "', 1)[1].split('"', 1)[0])
    return ids


def converge(hostname: str, *extra: str, playbook: str = "site.yml", succeed: bool = True) -> str:
    """Re-run a playbook (the site one by default) against the test host, as an operator would;
    returns its output, and checks that it succeeded (or, with ``succeed=False``, that it failed)."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    cmd = ["ansible-playbook", "-i", inventory, "--limit", hostname, str(PROJECT_DIR / "playbooks" / playbook), *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = result.stdout[-20000:] + result.stderr[-4000:]
    assert (result.returncode == 0) == succeed, output
    return output
