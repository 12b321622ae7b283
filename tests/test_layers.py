"""The layers of core hold by contract: import-linter's contracts in pyproject.toml (every
import statement counts, inside functions too), and the ground stays light."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail(f"import-linter is not installed in this environment ({lint}): pip install -e '.[dev]'")
    done = subprocess.run([str(lint), "--no-logo", "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, "a layer contract is broken:\n" + done.stdout[-6000:] + done.stderr[-2000:]


def test_a_registry_loads_no_other_core_module_than_errors_and_formatting():
    done = _python("import json, sys\nimport core.ground.registry\n"
                   "print(json.dumps(sorted(m for m in sys.modules if m == 'core' or m.startswith('core.'))))")
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout)) - {"core", "core.ground", "core.ground.registry"}
    assert loaded <= {"core.errors", "core.ground.formatting"}, loaded


def test_a_lookup_imports_nothing_and_reads_no_home_folder(tmp_path):
    """A registry lookup below the entry points finds only what was registered; the
    message says how to register the rest."""
    done = _python("import sys\nfrom core.sources.models import MODELS\n"
                   "try:\n    MODELS.get('digits_mlp')\nexcept ValueError as e:\n    print(e)\n"
                   "print(sorted(m for m in sys.modules if m.startswith(('core.user', 'demo_models'))))")
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = done.stdout.strip().splitlines()
    assert "core.startup.register_all()" in first
    assert last == "[]"


def test_every_entry_point_knows_every_step_kind():
    """The notebook API, the command line and the app register the step kinds at start."""
    recipe = {"format": "prunescope.plan/1", "model": "digits_cnn",
              "steps": [{"op": "prune", "criterion": "l1", "granularity": "weight", "sparsity": 0.5},
                        {"op": "cut", "blocks": ["features.1"]}]}
    read = f"from core.plan import Plan\nprint([type(s).__name__ for s in Plan.from_dict({json.dumps(recipe)}).steps])"
    for start in ("from core import Plan", "from core.cli import main; main(['models'])",
                  "from core.startup import register_all; register_all()", "import benchmarks"):
        done = _python(f"{start}\n{read}")
        assert done.returncode == 0, (start, done.stderr[-2000:])
        assert done.stdout.strip().splitlines()[-1] == "['Prune', 'Cut']", (start, done.stdout[-500:])
    # the app's one script registers before it imports any page (it needs a Streamlit run)
    app = (ROOT / "app" / "streamlit_app.py").read_text()
    assert "\nregister_all()" in app and app.index("\nregister_all()") < app.index("from app.")


# --- rooms: the sizes issue 21 set -------------------------------------------------------

MAX_TOP_LEVEL = 8  # modules at core's top level (packages hold the rest)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80  # unless its docstring says why ("Over 80 lines on purpose: ...")


def _sources():
    for folder in ("core", "app", "benchmarks", "demo_models"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_core_keeps_at_most_eight_top_level_modules():
    top = sorted(p.stem for p in (ROOT / "core").glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_no_module_over_400_lines_and_no_function_over_80_without_a_reason():
    import ast

    long_modules, long_functions = [], []
    for path in _sources():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append((str(rel), text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and "80 lines on purpose" not in (ast.get_docstring(node) or ""):
                    long_functions.append((f"{rel}:{node.name}", n))
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_no_module_imports_a_page():
    """A page module draws its page when imported (its last line runs it): a page importing another
    drew that page above itself (the Export page showed the whole Model page on its first visit)."""
    import re

    pattern = re.compile(r"^\s*(from app\.views(\.\w+)? import|import app\.views)", re.M)
    found = [str(p.relative_to(ROOT)) for p in (ROOT / "app").rglob("*.py") if pattern.search(p.read_text())]
    assert not found, f"modules importing a page: {found}; move what they share into an app/ module"
