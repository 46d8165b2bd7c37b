"""House rules for roles: names, prefixed and documented variables, managed templates."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT_DIR, ROLES_DIR

_spec = importlib.util.spec_from_file_location("role_docs", PROJECT_DIR / "scripts" / "role-docs.py")
assert _spec
assert _spec.loader
role_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_docs)

ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if p.is_dir())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def test_there_are_roles() -> None:
    assert {"apache", "modsecurity", "demo_site"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_role_name(role: str) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", role)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_prefixed_and_specified(role: str) -> None:
    defaults = load(ROLES_DIR / role / "defaults" / "main.yml")
    spec = load(ROLES_DIR / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert all(name.startswith(f"{role}_") for name in defaults), "every variable carries the role's prefix"
    assert set(defaults) == set(spec), "argument_specs.yml and defaults/main.yml list the same variables"
    for name, option in spec.items():
        assert option.get("description"), f"{name} has no description"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_commented(role: str) -> None:
    lines = (ROLES_DIR / role / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{role}_\w+:", line):
            block = lines[max(0, i - 12) : i]
            assert any(entry.startswith("#") for entry in block), f"{line} is not documented"


@pytest.mark.parametrize("role", ROLES)
def test_internal_vars_are_marked(role: str) -> None:
    path = ROLES_DIR / role / "vars" / "main.yml"
    if path.exists():
        assert all(name.startswith(f"__{role}_") for name in load(path))


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_table_is_current(role: str) -> None:
    readme = (ROLES_DIR / role / "README.md").read_text()
    assert role_docs.table(ROLES_DIR / role) in readme, f"run scripts/role-docs.py to refresh roles/{role}/README.md"


@pytest.mark.parametrize("template", sorted(ROLES_DIR.glob("*/templates/**/*.j2")), ids=lambda p: p.name)
def test_templates_are_marked_managed(template: Path) -> None:
    head = template.read_text().splitlines()[:2]
    assert any("ansible_managed | comment" in line for line in head)


@pytest.mark.parametrize("role", ROLES)
def test_role_readme_keeps_the_usual_order(role: str) -> None:
    readme = (ROLES_DIR / role / "README.md").read_text()
    headings = [line[3:] for line in readme.splitlines() if line.startswith("## ")]
    usual = ["Requirements", "Role Variables", "Dependencies", "Example Playbook"]
    assert [h for h in headings if h in usual] == usual
    assert headings[-len(usual) :] == usual, "explanations come before Requirements"


@pytest.mark.parametrize("playbook", sorted((ROLES_DIR.parent / "playbooks").glob("*.yml")), ids=lambda p: p.name)
def test_playbooks_address_roles_by_their_collection_name(playbook: Path) -> None:
    names = re.findall(r"^\s+(?:- role|name): ([a-z_.]+)$", playbook.read_text(), re.M)
    roles = [n for n in names if n.split(".")[-1] in ROLES]
    assert all(n == f"mlwaf.appliance.{n.split('.')[-1]}" for n in roles), roles
