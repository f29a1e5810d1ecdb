"""The benchmark scripts are not run by the suite (they take minutes to hours), so a refactor can break them
unseen: every ``from cfnsr... import name`` they make, at module level or inside a function, must resolve."""

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(script):
    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cfnsr")):
            continue
        module = importlib.import_module(node.module)
        for alias in node.names:
            if hasattr(module, alias.name):
                continue
            try:
                importlib.import_module(f"{node.module}.{alias.name}")
            except ImportError:
                missing.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    assert not missing, f"{script.name}: " + "; ".join(missing)
