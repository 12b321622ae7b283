"""Issue 22: a bug in the engine is never shown as the person's mistake.

Each wrapper that turns a third-party failure (Torch-Pruning, an exporter, a file reader,
the person's own model) into a PrunescopeError is given a fault in *our own* code behind
it (monkeypatch), and the fault must come out as itself: exit 1 with a traceback in the
CLI, never exit 2 with one line; never "group left out"; never a skipped file.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import core.prune.structured.graph as G
import core.prune.structured.prune as SP
import core.prune.structured.select as SEL
from core.cli import main
from core.errors import FOREIGN_ERRORS, PrunescopeError
from core.plan import Plan, apply, apply_with_reports
from core.prune import Prune


class Boom(Exception):
    """A fault injected into our own code (not in FOREIGN_ERRORS' reach by accident)."""


def _zero_division(*a, **k):
    return 1 // 0


def test_foreign_errors_are_not_exception():
    assert Exception not in FOREIGN_ERRORS and not issubclass(Boom, FOREIGN_ERRORS)


# --- structured pruning (Torch-Pruning's graph, index mapping and pruning) ---

def test_a_zero_division_in_structured_selection_is_exit_1_with_a_traceback(capsys, monkeypatch):
    monkeypatch.setattr(SP, "units_to_remove", _zero_division)
    code = main(["prune", "digits_mlp", "--granularity", "neuron", "--sparsity", "0.3", "--no-latency",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" in err and "ZeroDivisionError" in err and "PlanError" not in err


def test_a_bug_inside_a_groups_pruning_is_not_a_group_left_out(monkeypatch):
    monkeypatch.setattr(SP, "_fix_widths", _zero_division)
    with pytest.raises(ZeroDivisionError):
        apply(Plan("digits_mlp", (Prune(granularity="neuron", sparsity=0.3),)))


def test_a_bug_in_our_group_search_is_not_a_group_left_out(monkeypatch):
    # our own code inside SafeGraph.get_pruning_group (around Torch-Pruning's index mapping)
    monkeypatch.setattr(G, "MAX_GROUP_INDICES", "not a number")
    with pytest.raises(TypeError):
        apply(Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.3),)))


def test_a_bug_before_tracing_is_not_the_models_failure(monkeypatch):
    monkeypatch.setattr(G, "opaque_pruners", lambda model: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        apply(Plan("digits_mlp", (Prune(granularity="neuron", sparsity=0.3),)))


def test_torch_prunings_own_failure_on_a_group_is_still_left_out_with_the_reason(monkeypatch):
    import torch_pruning as tp

    def prune(self, *a, **k):
        raise RuntimeError("cannot prune this")

    monkeypatch.setattr(tp.dependency.Group, "prune", prune)
    _, reports = apply_with_reports(Plan("digits_mlp", (Prune(granularity="neuron", sparsity=0.3),)))
    assert reports[-1].warnings and all("left out (pruning it raises RuntimeError: cannot prune this)" in w
                                        for w in reports[-1].warnings)


def test_a_model_that_does_not_run_on_the_example_is_a_model_error():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x):
            if x.shape[0] == 1:
                raise RuntimeError("needs a batch of two")
            return self.b(self.a(x))

    from tests.helpers.models import structured_prune

    with pytest.raises(PrunescopeError, match="does not run on the example batch") as info:
        structured_prune(Broken().eval(), torch.zeros(1, 4), granularity="neuron", sparsity=0.5)
    assert isinstance(info.value.__cause__, RuntimeError)  # chained


def test_selection_is_ours(monkeypatch):
    monkeypatch.setattr(SEL, "threshold_for_k", _zero_division)
    with pytest.raises(ZeroDivisionError):
        apply(Plan("digits_mlp", (Prune(granularity="neuron", sparsity=0.3),)))


# --- readers of a person's files ---

def test_a_fault_behind_the_tensors_reader_propagates(tmp_path, monkeypatch):
    import numpy as np

    from core.errors import FileError
    from core.sources.readers import read_tensors

    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((8, 3), np.float32))
    monkeypatch.setattr(np, "load", lambda *a, **k: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        read_tensors(p)
    monkeypatch.undo()
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(FileError, match="could not be read") as info:
        read_tensors(tmp_path / "bad.npz")
    assert info.value.__cause__ is not None  # chained


def test_a_fault_behind_the_csv_reader_propagates(tmp_path, monkeypatch):
    import pandas as pd

    from core.sources.readers import read_csv

    (tmp_path / "t.csv").write_text("a,b\n" + "1,2\n" * 10)
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        read_csv(tmp_path / "t.csv")


def test_a_fault_behind_torch_load_propagates(tmp_path, monkeypatch):
    from core.sources.weights import load_state_dict_file

    p = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, p)
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        load_state_dict_file(p)


# --- a person's own model ---

def test_a_bug_while_registering_a_model_propagates_and_registers_nothing(own_home, monkeypatch):
    import core.sources.entries as U
    import core.sources.models as M
    from core.sources.models import list_models

    monkeypatch.setattr(M, "build_model", lambda *a, **k: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        U.register("own_lin", factory="torch.nn:Linear", kwargs={"in_features": 4, "out_features": 2},
                   input_shape=(4,), data={"kind": "synthetic", "n": 16})
    assert "own_lin" not in list_models()


def test_a_persons_model_that_does_not_run_is_a_model_error_chained(own_home):
    from core.errors import ModelError
    from core.sources.entries import register

    with pytest.raises(ModelError, match="does not run on inputs of shape") as info:
        register("own_lin", factory="torch.nn:Linear", kwargs={"in_features": 5, "out_features": 2},
                 input_shape=(4,), data={"kind": "synthetic", "n": 16})
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_bug_while_loading_stored_models_is_not_a_skipped_entry(own_home, monkeypatch):
    import core.sources.entries as U

    U.register("own_lin", factory="torch.nn:Linear", kwargs={"in_features": 4, "out_features": 2},
               input_shape=(4,), data={"kind": "synthetic", "n": 16})
    own_home.append("own_lin")
    monkeypatch.setattr(U, "_spec_of", lambda *a, **k: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        U.load_user_models()


def test_a_factory_raising_an_unexpected_kind_of_error_is_not_a_model_error(monkeypatch):
    from core.errors import ModelError
    from core.sources.models import MODELS, ModelSpec, build_model

    def broken():
        raise RuntimeError("the person's bug")

    def ours():
        raise Boom("not a model's failure")

    monkeypatch.setitem(MODELS._items, "t_broken", ModelSpec(name="t_broken", factory=broken, input_shape=(4,),
                                                                  dataset="digits"))
    monkeypatch.setitem(MODELS._items, "t_ours", ModelSpec(name="t_ours", factory=ours, input_shape=(4,),
                                                                dataset="digits"))
    with pytest.raises(ModelError, match="raised RuntimeError") as info:
        build_model("t_broken")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(Boom):
        build_model("t_ours")


# --- block views: the model's forward under the MACs counter ---

def test_only_the_models_forward_is_caught_when_measuring_containers(monkeypatch):
    import core.surgery.choice as B

    class Fails(nn.Module):
        def __init__(self, exc):
            super().__init__()
            self.a, self.b, self.exc = nn.Linear(4, 4), nn.Linear(4, 4), exc

        def forward(self, x):
            raise self.exc

    assert B.container_macs(Fails(RuntimeError("shape")), torch.zeros(1, 4)) == ({}, 0)
    with pytest.raises(Boom):
        B.container_macs(Fails(Boom("ours")), torch.zeros(1, 4))
    monkeypatch.setattr(B, "join_path", lambda *a: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        B.container_macs(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), torch.zeros(1, 4))


# --- exports and the graph view ---

@pytest.fixture(scope="module")
def mlp():
    from core.workspace import Workspace

    ws = Workspace("digits_mlp", "cpu", latency_time=0.01)
    return ws.model, ws.plan, ws.evalset.quick()[0][:4]


def test_a_bug_in_export_verification_propagates_not_a_failed_format(mlp, tmp_path, monkeypatch):
    import core.io.export as E

    model, plan, x = mlp
    monkeypatch.setattr(E, "_tolerance", _zero_division)
    with pytest.raises(ZeroDivisionError):
        E.export_model(model, plan, "safetensors", tmp_path / "m.safetensors", x)
    assert [p.name for p in tmp_path.iterdir()] == []  # the temp files are gone all the same


def test_an_exporters_own_failure_is_a_failed_format_and_a_fault_behind_it_propagates(mlp, tmp_path, monkeypatch):
    import core.io.export as E
    from core.io.exporters import EXPORTERS

    model, plan, x = mlp
    exp = EXPORTERS.get("torchscript")
    monkeypatch.setattr(type(exp), "write", lambda self, *a: (_ for _ in ()).throw(RuntimeError("cannot trace")))
    r = E.export_model(model, plan, "torchscript", tmp_path / "m.pt", x)
    assert r.error == "RuntimeError: cannot trace" and r.path is None
    monkeypatch.setattr(type(exp), "write", lambda self, *a: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        E.export_model(model, plan, "torchscript", tmp_path / "m.pt", x)


def test_the_graph_view_chains_the_exporters_failure_and_lets_a_bug_through(mlp, tmp_path, monkeypatch):
    from core.io.exporters import EXPORTERS
    from core.io.netron import write_onnx_for_view

    model, _, x = mlp
    exp = type(EXPORTERS.get("onnx"))
    monkeypatch.setattr(exp, "write", lambda self, *a: (_ for _ in ()).throw(RuntimeError("unsupported op")))
    with pytest.raises(PrunescopeError, match="unsupported op") as info:
        write_onnx_for_view(model, x, tmp_path / "v.onnx")
    assert isinstance(info.value.__cause__, RuntimeError)
    monkeypatch.setattr(exp, "write", lambda self, *a: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        write_onnx_for_view(model, x, tmp_path / "v.onnx")


# --- the app ---

def test_the_explain_pages_text_view_lets_a_bug_through(monkeypatch):
    import app.explain_ui as X

    class WS:
        spec = type("S", (), {"extra": {"tokenizer": "folder"}})()
        evalset = type("E", (), {"kind": "text"})()

    monkeypatch.setattr(X, "_tokenizer", lambda folder: (_ for _ in ()).throw(PrunescopeError("no tokenizer")))
    assert X.example_text(WS(), torch.tensor([1, 2])) is None
    monkeypatch.setattr(X, "_tokenizer", lambda folder: (_ for _ in ()).throw(Boom("ours")))
    with pytest.raises(Boom):
        X.example_text(WS(), torch.tensor([1, 2]))


def test_the_sensitivity_page_shows_a_bug_in_listing_granularities(monkeypatch):
    """Which granularities a model has is decided in core (``granularities``): a model
    without units of one is a PrunescopeError and leaves it out; a bug reaches the page."""
    import importlib

    from streamlit.testing.v1 import AppTest

    from tests.helpers.app import APP

    # the module (the package exports a function of the same name)
    AN = importlib.import_module("core.prune.structured.analysis")

    def group_info(model, g, ctx):
        raise Boom("ours")

    monkeypatch.setattr(AN, "group_info", group_info)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["model_name"] = "digits_mlp"
    at.run()  # the Prune page's selector asks first
    assert at.exception and "Boom" in "".join(at.exception[0].stack_trace)
    at.switch_page("views/sensitivity.py").run()
    assert at.exception and "Boom" in "".join(at.exception[0].stack_trace)
