"""Model releases on the appliance: deploy a new one, refuse a mismatched one, roll back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from conftest import PROJECT_DIR, converge

MODELS_DIR = "/var/lib/mlwaf/models"
SHIPPED = PROJECT_DIR / "files" / "models"


def release_of(folder: Path) -> str:
    """The release id the role gives a model folder (lookup('file') drops the final newline)."""
    return hashlib.sha256((folder / "SHA256SUMS").read_text().rstrip("\n").encode()).hexdigest()[:12]


def model_folder(tmp_path: Path, name: str, **changes: object) -> Path:
    """A copy of the shipped models with changed metadata and matching checksums."""
    folder = tmp_path / name
    shutil.copytree(SHIPPED, folder)
    meta = json.loads((folder / "attack.json").read_text())
    (folder / "attack.json").write_text(json.dumps({**meta, **changes}, indent=2))
    sums = [
        f"{hashlib.sha256((folder / line.split()[1]).read_bytes()).hexdigest()}  {line.split()[1]}"
        for line in (SHIPPED / "SHA256SUMS").read_text().splitlines()
    ]
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return folder


def links(host) -> tuple[str, str]:
    current = host.run(f"readlink {MODELS_DIR}/current").stdout.strip()
    previous = host.run(f"readlink {MODELS_DIR}/previous").stdout.strip()
    return current, previous


def analyzer_version(host) -> str:
    check = host.run("/opt/mlwaf/venv/bin/mlwaf check --config /etc/mlwaf/analyzer.toml")
    assert check.rc == 0, check.stderr
    return check.stdout


def test_shipped_models_are_the_current_release(host) -> None:
    current, _ = links(host)
    assert current == f"releases/{release_of(SHIPPED)}"
    assert host.run(f"cd {MODELS_DIR}/current && sha256sum --check --strict SHA256SUMS").rc == 0


def test_deploy_refuse_and_roll_back(host, tmp_path: Path) -> None:
    hostname = host.backend.host
    shipped, _ = links(host)
    new = model_folder(tmp_path, "new", version="cnn-release-test")
    converge(hostname, "-e", f"ml_analyzer_models_src={new}", playbook="models.yml")
    assert links(host) == (f"releases/{release_of(new)}", shipped)
    assert "version cnn-release-test" in analyzer_version(host)
    assert host.service("mlwaf-analyzer").is_running

    # A release the analyzer cannot run never becomes current.
    bad = model_folder(tmp_path, "bad", spec="bytes-v0")
    output = converge(hostname, "-e", f"ml_analyzer_models_src={bad}", playbook="models.yml", succeed=False)
    flat = " ".join(output.split())  # Ansible's output wraps the message and doubles its quotes
    assert "cannot load model release" in flat
    assert "bytes-v0" in flat
    assert "does not match this analyzer" in flat
    assert links(host) == (f"releases/{release_of(new)}", shipped)
    assert not host.file(f"{MODELS_DIR}/releases/{release_of(bad)}").exists

    converge(hostname, "-e", '{"ml_analyzer_models_rollback": true}', playbook="models.yml")
    assert links(host) == (shipped, f"releases/{release_of(new)}")
    assert "version cnn-release-test" not in analyzer_version(host)
    assert host.service("mlwaf-analyzer").is_running
