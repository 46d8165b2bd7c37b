"""One version everywhere: the package, the wheel's metadata, the command, the collection, the shipped models and
the CHANGELOG."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

from mlwaf import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_the_command_and_the_installed_metadata_agree() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert version("mlwaf") == __version__, "reinstall the package (make venv) after a version change"
    out = subprocess.run([sys.executable, "-m", "mlwaf.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"mlwaf {__version__}"


def test_the_shipped_models_name_the_release() -> None:
    for name in ("attack", "flood"):
        meta = json.loads((ROOT / "files" / "models" / f"{name}.json").read_text())
        assert meta["release"] == __version__, f"{name}.json"


def test_the_changelog_has_the_release() -> None:
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases, "releases as '## [X.Y.Z] - YYYY-MM-DD'"
    assert releases[0][0] == __version__, "the newest release is this version"
    assert releases == sorted(releases, key=lambda r: tuple(map(int, r[0].split("."))), reverse=True)


def test_the_collection_has_the_version() -> None:
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"], galaxy["version"]) == ("mlwaf", "appliance", __version__)
