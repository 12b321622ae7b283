"""Data a person brings: an image folder (or a zip of one), a CSV with a label column;
models by name from torchvision / timm. Hostile and broken files are refused with a
message that names the file, what was wrong and what is accepted."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import FileError, PrunescopeError
from core.prune import Prune
from core.sources.entries import data_from_path, list_user_models, register
from core.sources.models import MODELS
from core.sources.readers import read_csv, read_image_folder, safe_unzip
from core.workspace import Workspace
from tests.helpers.data import image_folder, zip_of


def test_an_uploaded_image_zip_is_a_classification_task_with_named_classes(own_home, tmp_path):
    own_home.append("own_images")
    z = zip_of(image_folder(tmp_path / "pets"), tmp_path / "pets.zip")
    spec = register("own_images", factory="demo_models.nets:DigitsCNN", data=data_from_path(str(z)),
                    input_shape=(1, 8, 8))
    assert spec.task == "classification" and spec.input_shape == (1, 8, 8)
    entry = list_user_models()[0]
    assert entry.data["size"] == [8, 8] and entry.data["channels"] == 1
    assert "uploads" in entry.data["path"] and not entry.data["path"].endswith(".zip")  # unpacked once, kept
    ws = Workspace("own_images", "cpu")
    assert ws.evalset.classes == ["cat", "dog", "fox"] and ws.evalset.kind == "image"
    assert tuple(ws.evalset.x.shape[1:]) == (1, 8, 8) and torch.bincount(ws.evalset.y).tolist() == [2, 2, 2]
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    assert ws.metrics(latency=False).params < ws.base_metrics(latency=False).params


def test_image_reading_resizes_and_normalises_as_stated(tmp_path):
    image_folder(tmp_path / "f", per_class=2, size=(5, 7))
    x, y, classes = read_image_folder(tmp_path / "f", (4, 6), 3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert x.shape == (6, 3, 4, 6) and y.tolist() == [0, 0, 1, 1, 2, 2] and classes == ["cat", "dog", "fox"]
    raw = np.asarray(Image.open(tmp_path / "f" / "dog" / "0.png").convert("RGB").resize((6, 4), Image.BILINEAR))
    assert torch.allclose(x[2], (torch.from_numpy(raw / 255.0).permute(2, 0, 1).float() - 0.5) / 0.25, atol=1e-5)


@pytest.mark.parametrize("member, why", [("../evil.png", "outside"), ("/abs/evil.png", "outside")])
def test_a_zip_that_escapes_its_folder_is_refused(tmp_path, member, why):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok/a.png", b"x")
        zf.writestr(member, b"x")
    with pytest.raises(FileError, match=why) as e:
        safe_unzip(z, tmp_path / "out")
    assert "bad.zip" in str(e.value)
    assert not (tmp_path / "evil.png").exists()


def test_a_zip_with_a_link_is_refused(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("cls/a.png")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(FileError, match="symbolic link"):
        safe_unzip(z, tmp_path / "out")


def test_broken_image_folders_say_what_is_wrong(tmp_path):
    image_folder(tmp_path / "f", per_class=2)
    (tmp_path / "f" / "dog" / "1.png").write_bytes(b"not a png")
    with pytest.raises(FileError, match=r"image dog/1.png could not be decoded"):
        read_image_folder(tmp_path / "f", (8, 8))
    (tmp_path / "f" / "dog" / "1.png").unlink()
    (tmp_path / "f" / "empty").mkdir()
    with pytest.raises(FileError, match="empty hold no images"):
        read_image_folder(tmp_path / "f", (8, 8))
    image_folder(tmp_path / "one", classes=("only",), per_class=2)
    with pytest.raises(FileError, match="1 class folder"):
        read_image_folder(tmp_path / "one", (8, 8))
    with pytest.raises(FileError, match="not a readable zip"):
        (tmp_path / "fake.zip").write_bytes(b"PK nonsense")
        safe_unzip(tmp_path / "fake.zip", tmp_path / "o")


def test_a_csv_with_named_labels(own_home, tmp_path):
    own_home.append("own_csv")
    rng = np.random.RandomState(0)
    x = rng.randn(40, 4)
    rows = ["a,b,c,d,species"] + [",".join(f"{v:.4f}" for v in r) + f",{'setosa' if r[0] > 0 else 'virginica'}"
                                  for r in x]
    (tmp_path / "t.csv").write_text("\n".join(rows))
    spec = register("own_csv", factory="torch.nn:Linear", kwargs={"in_features": 4, "out_features": 2},
                    data=data_from_path(str(tmp_path / "t.csv"), label_column="species"))
    assert spec.task == "classification" and spec.input_shape == (4,)
    ws = Workspace("own_csv", "cpu")
    assert ws.evalset.classes == ["setosa", "virginica"] and ws.evalset.kind == "tabular"
    xs, y, _ = read_csv(tmp_path / "t.csv", "species")
    assert torch.allclose(xs, torch.tensor(x, dtype=torch.float32), atol=1e-4) and y.tolist() == [
        0 if r[0] > 0 else 1 for r in x]
    with pytest.raises(FileError, match=r"no column 'label'; its columns: a, b, c, d, species"):
        read_csv(tmp_path / "t.csv", "label")
    with pytest.raises(FileError, match=r"column\(s\) species are not numbers"):
        read_csv(tmp_path / "t.csv")


def test_a_model_with_fewer_outputs_than_classes_is_refused_and_nothing_is_kept(own_home, tmp_path):
    image_folder(tmp_path / "f", per_class=2)
    with pytest.raises(PrunescopeError, match="returns 2 scores per example but the data has 3 classes"):
        register("own_small", factory="torch.nn:Flatten", data=data_from_path(str(tmp_path / "f")),
                 input_shape=(1, 1, 2))  # one grey 1x2 image flattened: 2 scores
    assert "own_small" not in MODELS.names() and list_user_models() == []


def test_data_paths_of_another_kind_are_refused(tmp_path):
    with pytest.raises(PrunescopeError, match="accepted are an .npz or .safetensors file"):
        data_from_path(str(tmp_path / "notes.docx"))


def test_exactly_one_source_of_model(own_home):
    with pytest.raises(PrunescopeError, match="exactly one of factory"):
        register("x", factory="torch.nn:Linear", torchvision="resnet18")
    with pytest.raises(PrunescopeError, match="exactly one of factory"):
        register("x")


def test_torchvision_missing_says_how_to_install(own_home, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    with pytest.raises(PrunescopeError, match=r"prunescope\[vision\]"):
        register("tv", torchvision="resnet18")


@pytest.mark.slow
def test_a_torchvision_model_by_name(own_home):
    pytest.importorskip("torchvision")
    own_home.append("own_tv")
    spec = register("own_tv", torchvision="mobilenet_v3_small", kwargs={"num_classes": 5},
                    data={"kind": "synthetic", "n": 16})
    assert spec.input_shape == (3, 224, 224) and spec.task == "fidelity"
    assert "torchvision.models:get_model(name=mobilenet_v3_small" in spec.description
    with pytest.raises(PrunescopeError, match="no model 'resnet_9000' that prunescope opens; classification: alexnet"):
        register("own_tv2", torchvision="resnet_9000")
    ws = Workspace("own_tv", "cpu")
    assert ws.metrics(latency=False).agreement == 1.0


@pytest.mark.slow
def test_a_timm_model_by_name(own_home):
    pytest.importorskip("timm")
    own_home.append("own_timm")
    spec = register("own_timm", timm="resnet10t", kwargs={"num_classes": 3}, data={"kind": "synthetic", "n": 16},
                    input_shape=(3, 64, 64))
    assert spec.input_shape == (3, 64, 64)
    assert Workspace("own_timm", "cpu").metrics(latency=False).agreement == 1.0


def test_the_store_keeps_paths_not_uploads_of_code(own_home, tmp_path):
    own_home.append("own_images2")
    image_folder(tmp_path / "f", per_class=2)
    register("own_images2", factory="demo_models.nets:DigitsCNN", data=data_from_path(str(tmp_path / "f")),
             input_shape=(1, 8, 8))
    from core.sources.entries import home

    stored = (home() / "user_models.json").read_text()
    assert str(tmp_path / "f") in stored and os.path.exists(tmp_path / "f")


def test_cli_register_with_an_image_zip_then_prune(own_home, capsys, tmp_path):
    import json

    from tests.helpers.cli import run

    own_home.append("cli_pets")
    z = zip_of(image_folder(tmp_path / "pets"), tmp_path / "pets.zip")
    code, out, err = run(capsys, "register", "cli_pets", "--factory", "demo_models.nets:DigitsCNN", "--data", str(z),
                         "--input-shape", "1,8,8", "--mean", "0.5", "--std", "0.25", "--json")
    assert code == 0, err
    assert json.loads(out)["task"] == "classification"
    assert list_user_models()[0].data["mean"] == [0.5]
    code, out, err = run(capsys, "prune", "cli_pets", "--granularity", "channel", "--sparsity", "0.5", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["per_class_accuracy"] and len(m["per_class_accuracy"]) == 3
    code, out, err = run(capsys, "register", "cli_bad", "--factory", "demo_models.nets:DigitsCNN", "--data",
                         str(tmp_path / "pets"), "--image-size", "8,8,8")
    assert code != 0 and "data.size must be 2 positive whole numbers, height and width" in err
    code, out, err = run(capsys, "register", "cli_bad", "--factory", "demo_models.nets:DigitsCNN", "--data",
                         str(tmp_path / "pets"), "--mean", "a,b")
    assert code != 0 and "--mean must be numbers" in err
