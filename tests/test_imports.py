"""Imports the suite may never execute: the benchmark scripts are not run by it (they take minutes to hours), and
some of cfnsr's own code runs only on a target (the TensorRT probe, the CUDA paths), so a refactor can break them
unseen. Every ``from cfnsr... import name`` they make, at module level or inside a function, must resolve."""

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
MODULES = sorted((ROOT / "cfnsr").rglob("*.py"))


def _unresolved(path: Path, package: str | None) -> list[str]:
    """The cfnsr names ``path`` imports that do not exist; ``package``: the module's package, for relative imports."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            name = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        else:
            name = node.module or ""
        if not name.startswith("cfnsr"):
            continue
        module = importlib.import_module(name)
        for alias in node.names:
            if hasattr(module, alias.name):
                continue
            try:
                importlib.import_module(f"{name}.{alias.name}")
            except ImportError:
                missing.append(f"line {node.lineno}: from {name} import {alias.name}")
    return missing


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(script):
    missing = _unresolved(script, None)
    assert not missing, f"{script.name}: " + "; ".join(missing)


def test_cfnsr_imports_resolve_in_code_that_runs_only_on_a_target():
    missing = []
    for path in MODULES:
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        package = ".".join(parts if rel.name == "__init__" else parts[:-1])
        missing += [f"{rel}: {m}" for m in _unresolved(path, package)]
    assert not missing, "; ".join(missing)
