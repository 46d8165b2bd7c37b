"""Helpers for the unit tests: run small playbooks against the controller itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
ROLES_DIR = PROJECT_DIR / "roles"
PLAYBOOKS = Path(__file__).parent / "playbooks"


def _ansible_playbook() -> str:
    local = Path(sys.executable).parent / "ansible-playbook"
    found = str(local) if local.exists() else shutil.which("ansible-playbook")
    if not found:
        pytest.skip("ansible-playbook is not installed")
    return found


def run_playbook(playbook: str, extra_vars: dict, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROLES_DIR), ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "0"
    extra_vars = {"ansible_python_interpreter": sys.executable, **extra_vars}
    cmd = [_ansible_playbook(), "-i", "localhost,", str(PLAYBOOKS / playbook), "-e", json.dumps(extra_vars), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PROJECT_DIR, check=False)
