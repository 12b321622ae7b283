"""The command line starts without torch: ``--help`` and ``models`` never import it, and
nothing is printed on stderr. (Start-up time is a benchmark: ``python -m benchmarks --only cli``.)"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.cli.common import format_table


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["models", "--json"], ["models"], ["prune", "--help"]])
def test_command_does_not_import_torch(argv):
    done = _run("import sys\nfrom core.cli import main\n"
                f"try:\n    code = main({argv!r})\nexcept SystemExit as e:\n    code = e.code or 0\n"
                "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    assert done.stderr == ""
    assert done.stdout.strip().splitlines()[-1] == "NO-TORCH 0", done.stdout[-500:]


def test_models_lists_recorded_param_counts_that_match_the_architectures():
    from core.sources.models import build_model, get_spec, list_models, param_count

    done = _run("from core.cli import main; main(['models', '--json'])")
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows] == list_models()
    for r in rows:
        built = sum(p.numel() for p in build_model(get_spec(r["name"]), load_weights=False).parameters())
        assert r["params"] == built == param_count(r["name"])


def test_step_kinds_are_known_to_the_notebook_api():
    """``import core`` does not load the engine; a recipe read through the notebook API
    (an entry point: ``core.startup.register_all``) knows every kind."""
    done = _run("import sys\nfrom core import Plan\n"
                "p = Plan.from_dict({'format': 'prunescope.plan/1', 'model': 'digits_cnn', 'steps': ["
                "{'op': 'prune', 'criterion': 'l1', 'granularity': 'weight', 'sparsity': 0.5},"
                "{'op': 'cut', 'blocks': ['features.1']}]})\n"
                "print([type(s).__name__ for s in p.steps])")
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.strip() == "['Prune', 'Cut']"


def test_import_core_is_cheap_and_still_gives_the_notebook_api():
    done = _run("import sys, core\nassert 'torch' not in sys.modules\n"
                "from core import Workspace, Plan, Prune, export_model\nprint('torch' in sys.modules)")
    assert done.returncode == 0, done.stderr[-1000:]
    assert done.stdout.strip() == "True"


def test_tables_are_aligned_and_rounded():
    text = format_table([{"name": "a", "acc": 0.987654321, "shape": [1, 8, 8]},
                         {"name": "bbbb", "acc": 12.0, "shape": [1, 32, 32]}])
    # numbers right-aligned and rounded to 4 significant digits, shapes as CxHxW
    assert text.splitlines() == ["name     acc  shape",
                                 "----  ------  -------",
                                 "a     0.9877  1x8x8",
                                 "bbbb      12  1x32x32"]
