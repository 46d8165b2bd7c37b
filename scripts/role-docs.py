#!/usr/bin/env python3
"""Regenerate the variable table in each roles/<role>/README.md.

The table sits between the markers below; everything else in the README is
written by hand. Names, types and descriptions come from the role's
meta/argument_specs.yml, defaults from defaults/main.yml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

BEGIN = "<!-- BEGIN VARIABLES (scripts/role-docs.py) -->"
END = "<!-- END VARIABLES -->"
ROLES = Path(__file__).resolve().parents[1] / "roles"


def cell(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if text else '`""`'


def table(role: Path) -> str:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, option in spec.items():
        kind = option.get("type", "str")
        if "choices" in option:
            kind += " (" + ", ".join(str(c) for c in option["choices"]) + ")"
        rows.append(f"| `{name}` | {kind} | {cell(defaults.get(name, ''))} | {option.get('description', '')} |")
    return "\n".join(rows)


def main() -> int:
    for role in sorted(p for p in ROLES.iterdir() if p.is_dir()):
        readme = role / "README.md"
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            print(f"{readme}: markers missing", file=sys.stderr)
            return 1
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        readme.write_text(f"{head}{BEGIN}\n{table(role)}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
