"""Exports that are killed, or fail half way, leave neither a partial target nor temp
files after the next start; an earlier good export survives until the new pair is
complete; two sessions export into folders of their own."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.ground.files import SessionFolder, sweep_dead_folders, sweep_stale
from core.io import export_model, recipe_path
from core.prune import Prune
from core.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws():
    w = Workspace("digits_mlp", "cpu", latency_time=0.01)
    w.add_step(Prune(sparsity=0.5))
    return w


def _example(ws):
    return ws.evalset.quick()[0][:16]


def _writer(out: Path, fmt: str, delay: float) -> subprocess.Popen:
    """A separate process that exports, sleeping ``delay`` s inside the write (to be killed there)."""
    code = textwrap.dedent(f"""
        import time
        from core import Prune, Workspace, export_model  # the notebook API: an entry point
        from core.io import exporters
        ws = Workspace("digits_mlp", "cpu", latency_time=0.01)
        ws.add_step(Prune(sparsity=0.5))
        exp = exporters.EXPORTERS.get({fmt!r})
        write = exp.write
        def slow_write(model, x, path, plan):
            note = write(model, x, path, plan)
            print("WRITTEN", flush=True)
            time.sleep({delay})
            return note
        exp.write = slow_write
        export_model(ws.model, ws.plan, {fmt!r}, {str(out)!r}, ws.evalset.quick()[0][:16])
        print("DONE", flush=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
def test_a_killed_export_leaves_no_partial_file_and_its_temp_files_are_swept(tmp_path, fmt):
    out = tmp_path / f"model{'.safetensors' if fmt == 'safetensors' else '.onnx'}"
    proc = _writer(out, fmt, delay=30)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITTEN", line
        left = [p.name for p in tmp_path.iterdir()]
        assert left and all(n.startswith(f".{out.name}.{proc.pid}.") for n in left), left  # only its temp file
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert not out.exists() and not recipe_path(out).exists()
    assert sweep_stale(tmp_path)  # the next start removes what the dead writer left
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_kill_before_anything_is_written_or_after_it_is_done_leaves_a_whole_pair(tmp_path):
    out = tmp_path / "model.safetensors"
    proc = _writer(out, "safetensors", delay=0)
    assert proc.stdout.readline().strip() == "WRITTEN"
    assert proc.stdout.readline().strip() == "DONE"
    proc.wait(30)
    assert out.exists() and recipe_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.plan.json", "model.safetensors"]


def test_a_failing_recipe_write_keeps_the_previous_good_pair(ws, tmp_path, monkeypatch):
    out = tmp_path / "m.safetensors"
    first = export_model(ws.model, ws.plan, "safetensors", out, _example(ws))
    assert first.error is None
    old_file, old_recipe = out.read_bytes(), recipe_path(out).read_text()
    ws2 = Workspace("digits_mlp", "cpu", latency_time=0.01)
    ws2.add_step(Prune(sparsity=0.8))

    real = Path.write_text

    def broken(self, *a, **k):  # the disk fills up while the new recipe is written
        if self.name.startswith(".m.plan.json."):
            raise OSError(28, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", broken)
    r = export_model(ws2.model, ws2.plan, "safetensors", out, _example(ws2))
    monkeypatch.undo()
    assert r.error and "No space left" in r.error
    assert out.read_bytes() == old_file and recipe_path(out).read_text() == old_recipe
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.plan.json", "m.safetensors"]


def test_session_folders_go_with_their_session_and_after_a_kill(tmp_path):
    a, b = SessionFolder("export"), SessionFolder("export")
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    (a.path / "x.onnx").write_bytes(b"a")
    pa = a.path
    del a
    gc.collect()
    assert not pa.exists() and b.path.exists()
    dead = tmp_path / "prunescope-export-999999999-abc"
    dead.mkdir()
    alive = tmp_path / f"prunescope-export-{os.getpid()}-abc"
    alive.mkdir()
    assert sweep_dead_folders("export", tmp_path) == [dead]
    assert alive.exists() and not dead.exists()
    b.remove()
    assert not b.path.exists()


def test_two_app_sessions_export_into_their_own_folders():
    from tests.helpers.app import new_app

    one, two = new_app("digits_mlp"), new_app("digits_cnn")
    paths = []
    for at in (one, two):
        at.switch_page("views/export.py").run()
        at.button(key="export_btn").click().run()
        assert not at.exception
        paths.append(Path(at.session_state["export_dir"]))
    assert paths[0] != paths[1]
    assert {p.suffix for p in paths[0].iterdir()} >= {".safetensors", ".onnx"}
    assert all(f.name.startswith("digits_mlp") for f in paths[0].iterdir())
    assert all(f.name.startswith("digits_cnn") for f in paths[1].iterdir())


def test_a_recipe_that_cannot_be_put_in_place_leaves_the_previous_pair_and_reports_it(ws, tmp_path, monkeypatch):
    """Issue 22: a folder at x.plan.json was moved aside, the new x.onnx put in place, and
    the export then reported "no file written". Now nothing moves, and the result says so."""
    import core.io.export as E

    out = tmp_path / "x.onnx"
    first = export_model(ws.model, ws.plan, "onnx", out, _example(ws))
    assert first.error is None
    before, recipe = out.read_bytes(), recipe_path(out)
    recipe.unlink()
    recipe.mkdir()  # appears after the up-front check (a race with another program)
    monkeypatch.setattr(E, "_check_writable", lambda out: None)
    r = export_model(ws.model, ws.plan.then(Prune(sparsity=0.8)), "onnx", out, _example(ws))
    assert r.error and r.path is None and "not a regular file" in r.error
    assert out.read_bytes() == before and recipe.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx", "x.plan.json"]  # no temp files left


def test_export_model_refuses_a_plan_made_for_another_model(ws, tmp_path):
    """Issue 22: from Python, a plan for another model was accepted and its recipe named the wrong model."""
    from core.errors import PrunescopeError
    from core.plan import Plan

    with pytest.raises(PrunescopeError, match="the plan is for model 'digits_cnn'.*'digits_mlp'"):
        export_model(ws.model, Plan("digits_cnn", (Prune(sparsity=0.5),)), "safetensors",
                     tmp_path / "m.safetensors", _example(ws))
    assert list(tmp_path.iterdir()) == []
