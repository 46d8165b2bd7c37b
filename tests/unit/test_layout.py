"""The analyzer the appliance runs imports nothing from the training side (mlwaf.training)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mlwaf

PACKAGE = Path(mlwaf.__file__).parent
TRAINING = "mlwaf.training"
# mlwaf.cli declares the training commands' options; their handlers load only when one runs
ALLOWED = {"cli.py": {"mlwaf.training", "mlwaf.training.cli"}}


def imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def runtime_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] != "training"]


def test_no_runtime_module_imports_the_training_side() -> None:
    modules = runtime_modules()
    assert len(modules) > 30, "the runtime modules were found"
    wrong = {}
    for path in modules:
        name = path.relative_to(PACKAGE).as_posix()
        training = {m for m in imported(path) if m.split(".")[:2] == TRAINING.split(".")} - ALLOWED.get(name, set())
        if training:
            wrong[name] = sorted(training)
    assert wrong == {}


def test_the_rule_catches_an_import(tmp_path: Path) -> None:
    module = tmp_path / "decision.py"
    module.write_text("def f():\n    from mlwaf.training.evaluate import evaluate\n    return evaluate\n")
    assert "mlwaf.training.evaluate" in imported(module)


def test_the_command_line_loads_no_training_module_until_a_training_command_runs() -> None:
    code = (
        "import sys, mlwaf.cli\n"
        "mlwaf.cli.parser().parse_args(['score'])\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('mlwaf.training'))))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == ["mlwaf.training", "mlwaf.training.cli"]
