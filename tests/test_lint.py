"""ruff, with the rules in pyproject.toml ([tool.ruff]), is clean on the whole tree: the
test command runs it, so a new lint finding fails the suite like a failing test."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean_on_the_tree():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.fail(f"ruff is not installed in this environment ({ruff}): pip install -e '.[dev]'")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, "ruff found problems:\n" + done.stdout[-6000:] + done.stderr[-2000:]
