"""Habits of the test suite, held by a test so they stay held.

Shared test helpers live in the ``tests.helpers`` package (and fixtures in conftest files):
no test module, conftest or helper imports from a test module or from a conftest.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Imports that break the rule and are known, as (file, imported module). Each is to go.
KNOWN: set[tuple[str, str]] = set()  # (test module, what it may import besides tests.helpers): none


def _allowed(module: str) -> bool:
    return module == "tests.helpers" or module.startswith("tests.helpers.")


def _offences(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for each import in ``path`` of a module of tests/ outside
    tests/helpers; a relative import counts unless it stays inside tests/helpers."""
    rel = path.relative_to(ROOT)
    package = ".".join(rel.with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] if node.module else [f"{module}.{a.name}" for a in node.names]
            elif node.module == "tests":  # from tests import x: the module tests.x
                names = [f"tests.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        out += [(node.lineno, n) for n in names if (n == "tests" or n.startswith("tests.")) and not _allowed(n)]
    return out


def test_no_module_imports_from_a_test_module_or_a_conftest():
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    bad = []
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        bad += [f"{rel}:{line}: {module}" for line, module in _offences(f) if (rel, module) not in KNOWN]
    assert not bad, ("import shared helpers from tests.helpers (fixtures come from conftest files, "
                     "never imported):\n" + "\n".join(bad))
