"""A person's own models and data: registered from a factory with synthetic data, a
tensors file with or without labels; remembered across processes; bad input refused with
what is accepted; the CLI's register / models / unregister."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.errors import PrunescopeError
from core.prune import Prune
from core.sources.entries import list_user_models, register
from core.workspace import Workspace
from tests.helpers.cli import run


def test_a_factory_with_synthetic_data_is_judged_by_fidelity_and_remembered(own_home, tmp_path):
    own_home.append("own_cnn")
    spec = register("own_cnn", factory="demo_models.nets:DigitsCNN", data={"kind": "synthetic", "n": 120},
                    input_shape=(1, 8, 8))
    assert spec.task == "fidelity" and "random weights" in spec.description
    ws = Workspace("own_cnn", "cpu")
    assert len(ws.evalset.y) == 30 and ws.metrics(latency=False).agreement == 1.0
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    m = ws.metrics(latency=False)
    assert m.params < ws.base_metrics(latency=False).params and 0 <= m.agreement <= 1
    assert [e.name for e in list_user_models()] == ["own_cnn"]
    # another process (a restart) finds it, and evaluates it the same way
    code = ("from core import Workspace; ws = Workspace('own_cnn', 'cpu'); "
            "print(ws.spec.task, len(ws.evalset.y), ws.metrics(latency=False).agreement)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PRUNESCOPE_HOME": os.environ["PRUNESCOPE_HOME"]})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["fidelity", "30", "1.0"]


def test_a_tensors_file_with_labels_is_a_classification_task(own_home, tmp_path):
    own_home += ["own_tab", "own_unlabelled"]
    rng = np.random.RandomState(0)
    x = rng.randn(120, 16).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    np.savez(tmp_path / "tab.npz", x=x, y=y)
    spec = register("own_tab", factory="torch.nn:Linear", kwargs={"in_features": 16, "out_features": 2},
                    data={"kind": "tensors", "path": str(tmp_path / "tab.npz")})
    assert spec.task == "classification" and spec.input_shape == (16,)
    ws = Workspace("own_tab", "cpu")
    assert ws.evalset.classes == ["0", "1"] and ws.evalset.kind == "tabular"
    want = [round(0.25 * int((y == c).sum())) for c in (0, 1)]  # a stratified 75/25 split
    assert torch.bincount(ws.evalset.y).tolist() == want
    from safetensors.torch import save_file

    save_file({"x": torch.from_numpy(x)}, str(tmp_path / "nolabels.safetensors"))
    spec = register("own_unlabelled", factory="torch.nn:Linear", kwargs={"in_features": 16, "out_features": 4},
                    data={"kind": "tensors", "path": str(tmp_path / "nolabels.safetensors")})
    assert spec.task == "fidelity" and Workspace("own_unlabelled", "cpu").evalset.classes == ["0", "1", "2", "3"]


def _bad(tmp_path, name, **arrays):
    p = tmp_path / name
    if name.endswith(".npz"):
        np.savez(p, **arrays)
    else:
        p.write_bytes(b"not a data file")
    return {"kind": "tensors", "path": str(p)}


def test_bad_input_is_refused_with_what_is_accepted(own_home, tmp_path):
    lin = {"factory": "torch.nn:Linear", "kwargs": {"in_features": 16, "out_features": 2}}
    cases = [
        (dict(name="../x", data={"kind": "synthetic", "n": 20}, input_shape=(16,), **lin),
         "entry.name must be 1 to 64 letters"),
        (dict(name="ok", factory="os.system", data={"kind": "synthetic", "n": 20}, input_shape=(16,)),
         "entry.factory must be an importable"),
        (dict(name="digits_cnn", data={"kind": "synthetic", "n": 20}, input_shape=(16,), **lin), "bundled model"),
        (dict(name="ok", data={"kind": "synthetic", "n": 2}, input_shape=(16,), **lin),
         r"data.n must be an integer in \[8, 100000\], got 2"),
        (dict(name="ok", data={"kind": "url", "path": "http://x"}, **lin), "data.kind must be one of dataset, "),
        (dict(name="ok", data=_bad(tmp_path, "noxs.npz", a=np.zeros((10, 16))), **lin), "needs an array named x"),
        (dict(name="ok", data=_bad(tmp_path, "obj.npz", x=np.array([object()] * 10)), **lin), "could not be read"),
        (dict(name="ok", data=_bad(tmp_path, "y.npz", x=np.zeros((10, 16), "float32"), y=np.zeros(9, "int64")), **lin),
         "one whole-number label per example"),
        (dict(name="ok", data=_bad(tmp_path, "gap.npz", x=np.zeros((10, 16), "float32"),
                                   y=np.array([0, 2] * 5, "int64")), **lin), "labels must be 0..K-1"),
        (dict(name="ok", data=_bad(tmp_path, "junk.csv"), **lin), "accepted are .npz and .safetensors"),
        (dict(name="ok", data={"kind": "synthetic", "n": 20}, input_shape=(3, 8, 8), **lin), "does not run on inputs"),
        (dict(name="ok", data={"kind": "synthetic", "n": 20}, input_shape=(16,), weights=str(tmp_path / "none.pt"),
              **lin), "does not exist"),
    ]
    for kwargs, match in cases:
        with pytest.raises(PrunescopeError, match=match):
            register(**kwargs)
    assert list_user_models() == []  # nothing half-registered was stored
    from core.sources.models import list_models

    assert "ok" not in list_models()


def test_a_pickled_checkpoint_is_refused_as_weights(own_home, tmp_path):
    torch.save({"weight": torch.zeros(2, 16), "bias": torch.zeros(2), "evil": object()}, tmp_path / "full.pt")
    with pytest.raises(PrunescopeError, match="not a weights-only torch file"):
        register("ok2", factory="torch.nn:Linear", kwargs={"in_features": 16, "out_features": 2},
                 data={"kind": "synthetic", "n": 20}, input_shape=(16,), weights=str(tmp_path / "full.pt"))


def test_a_damaged_store_loads_nothing_and_says_so(own_home):
    from core.sources.entries import home as home_dir
    from core.sources.entries import load_user_models

    home_dir().mkdir(parents=True, exist_ok=True)
    (home_dir() / "user_models.json").write_text("{not json")
    with pytest.warns(UserWarning, match="could not be read"):
        assert load_user_models() == []


def test_cli_register_models_unregister(own_home, capsys, tmp_path):
    own_home.append("cli_own")
    code, out, err = run(capsys, "register", "cli_own", "--factory", "demo_models.nets:DigitsViT",
                         "--kwargs", '{"depth": 1}', "--synthetic", "64", "--input-shape", "1,8,8", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["task"] == "fidelity" and d["input_shape"] == [1, 8, 8] and "random weights" in d["source"]
    code, out, _ = run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["cli_own"]["source"] == "user" and rows["digits_cnn"]["source"] == "plugin"
    code, out, err = run(capsys, "evaluate", "cli_own", "--no-latency", "--json")
    assert code == 0 and json.loads(out)["agreement"] == 1.0
    code, out, err = run(capsys, "register", "x", "--factory", "torch.nn:Linear", "--kwargs", "[1]",
                         "--synthetic", "20")
    assert code == 2 and "--kwargs must be a JSON object" in err
    code, out, err = run(capsys, "unregister", "cli_own", "--json")
    assert code == 0 and json.loads(out) == {"unregistered": "cli_own"}
    code, out, err = run(capsys, "unregister", "cli_own")
    assert code == 2 and "not one of your models" in err


def test_full_pickles_load_only_with_the_trust_flag(own_home, tmp_path, monkeypatch, capsys):
    from core.sources.weights import load_state_dict_file

    lin = torch.nn.Linear(16, 2)
    torch.save(lin, tmp_path / "module.pt")  # a whole pickled module
    torch.jit.save(torch.jit.script(lin), tmp_path / "scripted.pt")
    for f in ("module.pt", "scripted.pt"):
        with pytest.raises(PrunescopeError, match="--trust-pickles"):
            load_state_dict_file(tmp_path / f)
    monkeypatch.setenv("PRUNESCOPE_TRUST_PICKLES", "1")
    for f in ("module.pt", "scripted.pt"):
        sd = load_state_dict_file(tmp_path / f)
        assert torch.equal(sd["weight"], lin.weight.detach())
    monkeypatch.delenv("PRUNESCOPE_TRUST_PICKLES")
    own_home.append("trusted")
    code, out, err = run(capsys, "register", "trusted", "--factory", "torch.nn:Linear", "--kwargs",
                         '{"in_features": 16, "out_features": 2}', "--weights", str(tmp_path / "module.pt"),
                         "--synthetic", "20", "--input-shape", "16")
    assert code == 2 and "--trust-pickles" in err
    code, out, err = run(capsys, "--trust-pickles", "register", "trusted", "--factory", "torch.nn:Linear",
                         "--kwargs", '{"in_features": 16, "out_features": 2}', "--weights",
                         str(tmp_path / "module.pt"), "--synthetic", "20", "--input-shape", "16", "--json")
    assert code == 0, err
    monkeypatch.delenv("PRUNESCOPE_TRUST_PICKLES")  # main() set it for the process


def test_a_store_written_before_the_hugging_face_reader_moved_still_opens(own_home):
    """The Hugging Face factory moved from core.hf to core.sources.hf: a user_models.json
    written before names the old path, and must read as the new one."""
    import json

    from core.sources.describe import HF_FACTORY
    from core.sources.entries import STORE_NAME, home, list_user_models

    (home() / STORE_NAME).parent.mkdir(parents=True, exist_ok=True)
    (home() / STORE_NAME).write_text(json.dumps({"models": [{"name": "old_bert", "factory": "core.hf:hf_model",
                                                              "kwargs": {"path": "/nowhere"},
                                                              "input_shape": [64]}]}))
    assert [e.factory for e in list_user_models()] == [HF_FACTORY]


def _entry_fields():
    """(class, good keyword arguments, field) for every field of an entry and of every kind of data."""
    from core.sources.describe import DATA_SOURCES
    from core.sources.user_entry import UserEntry

    good = {"dataset": {"name": "digits"}, "tensors": {"path": "x.npz"}, "images": {"path": "f"},
            "csv": {"path": "t.csv"}, "text": {"path": "t.txt"}, "synthetic": {"n": 20}}
    assert set(good) == set(DATA_SOURCES)  # a new kind joins this test
    out = [(UserEntry, {"name": "ok", "factory": "torch.nn:Linear", "input_shape": (16,)}, f)
           for f in UserEntry.constraints]
    out += [(cls, good[kind], f) for kind, cls in DATA_SOURCES.items() for f in cls.constraints]
    return out


@pytest.mark.parametrize("cls, good, field", _entry_fields(),
                         ids=[f"{c.__name__}.{f}" for c, _, f in _entry_fields()])
def test_every_field_of_an_entry_and_its_data_refuses_bad_values(cls, good, field):
    """The declared constraints check each field: every bad value a constraint gives is
    refused with a message that names the field, what is accepted and what it got."""
    cls(**good)  # the good values pass
    c = cls.constraints[field]
    owner = "entry" if cls.__name__ == "UserEntry" else "data"
    for bad in c.bad_values():
        with pytest.raises(PrunescopeError, match=f"^{owner}.{field} must be ") as e:
            cls(**{**good, field: bad})
        assert c.describe() in str(e.value) and "got " in str(e.value)


def test_data_descriptions_read_from_their_dicts_and_refuse_unknown_kinds_and_keys():
    from core.sources.describe import ImagesSource, SyntheticSource, data_source

    stored = {"kind": "images", "path": "/p", "size": [8, 8], "channels": 1, "mean": [0.5], "std": [0.25]}
    src = data_source(stored)
    assert src == ImagesSource("/p", (8, 8), 1, (0.5,), (0.25,)) and src.to_dict() == stored  # the stored form
    assert data_source({"kind": "synthetic", "n": 20}) == SyntheticSource(20)
    with pytest.raises(PrunescopeError, match=r"synthetic data takes the keys n, vocab, seq_len; unknown: \['path'\]"):
        data_source({"kind": "synthetic", "n": 20, "path": "x"})
    with pytest.raises(PrunescopeError, match=r"data.kind must be one of .* got 'url'"):
        data_source({"kind": "url"})
    with pytest.raises(PrunescopeError, match=r"data.path must be the path of a file or folder .* got None"):
        data_source({"kind": "tensors"})
    with pytest.raises(PrunescopeError, match=r"data must be a dict with a kind, .* got 5"):
        data_source(5)


def test_register_refuses_bad_arguments_before_anything_is_kept(own_home):
    lin = {"factory": "torch.nn:Linear", "kwargs": {"in_features": 16, "out_features": 2}}
    cases = [
        (dict(lin, kwargs=[1], data={"kind": "synthetic", "n": 20}, input_shape=(16,)), "register: kwargs must be"),
        (dict(lin, data=5, input_shape=(16,)), "data must be a dict with a kind"),
        (dict(lin, data={"kind": "synthetic", "n": 20, "exec": "x"}, input_shape=(16,)), "unknown: ['exec']"),
        (dict(lin, data={"kind": "synthetic", "n": 20}, input_shape="16"), "entry.input_shape must be"),
        (dict(lin, data={"kind": "synthetic", "n": 20}), "synthetic data needs the model's input shape"),
        (dict(lin, data={"kind": "synthetic", "n": 20}, input_shape=(16,), task="regression"), "entry.task must be"),
        (dict(lin, data={"kind": "synthetic", "n": 20}, input_shape=(16,), weights=3), "entry.weights must be"),
    ]
    for kwargs, match in cases:
        with pytest.raises(PrunescopeError) as e:
            register("ok", **kwargs)
        assert match in str(e.value), (match, str(e.value))
    assert list_user_models() == []


def test_a_stored_entry_that_no_longer_checks_is_left_out_but_kept(own_home):
    """One bad entry in the store (edited by hand) is left out with a warning; the others
    load, and saving the store again keeps it as it was."""
    from core.sources.entries import STORE_NAME, home, load_user_models, unregister

    good = {"name": "own_kept", "factory": "torch.nn:Linear", "kwargs": {"in_features": 16, "out_features": 2},
            "weights": None, "data": {"kind": "synthetic", "n": 20}, "input_shape": [16], "task": "fidelity"}
    bad = {**good, "name": "own_bad", "data": {"kind": "synthetic", "n": 2}}
    gone = {**good, "name": "own_gone"}
    own_home += ["own_kept", "own_gone"]
    (home() / STORE_NAME).parent.mkdir(parents=True, exist_ok=True)
    (home() / STORE_NAME).write_text(json.dumps({"models": [good, bad, gone]}))
    with pytest.warns(UserWarning, match=r"'own_bad' was not loaded: data.n must be an integer in \[8, 100000\]"):
        assert load_user_models() == ["own_kept", "own_gone"]
    unregister("own_gone")
    assert [e["name"] for e in json.loads((home() / STORE_NAME).read_text())["models"]] == ["own_kept", "own_bad"]
