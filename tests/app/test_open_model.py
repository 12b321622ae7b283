"""The Model page's "Open your own model" panel (AppTest): a factory with synthetic data
or an uploaded tensors file becomes a model of the picker, labelled as the person's; a bad
factory is a message and the app keeps running."""
from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.app import new_app, ok, workspace

PAGE = "views/model.py"


def _fill(at, name: str, factory: str, kwargs: str = "{}") -> None:
    at.text_input(key="open_name").set_value(name)
    at.text_input(key="open_factory").set_value(factory)
    at.text_input(key="open_kwargs").set_value(kwargs)


def test_a_factory_with_synthetic_data_opens_and_can_be_pruned(own_home):
    own_home.append("app_own")
    at = new_app()
    at.switch_page(PAGE).run()
    ok(at)
    _fill(at, "app_own", "demo_models.nets:DigitsViT", '{"depth": 1}')
    at.text_input(key="open_shape").set_value("1,8,8")
    at.number_input(key="open_n").set_value(96)
    at.button(key="open_go").click().run()
    ok(at)
    assert at.session_state["model_name"] == "app_own"
    ws = workspace(at)
    assert ws.spec.task == "fidelity" and len(ws.base.blocks) == 1
    assert any("random weights" in w.value for w in at.warning)
    assert at.sidebar.selectbox(key="model_name").format_func("app_own") == "app_own (yours, random weights)"
    assert any("app_own" in c.value and "random weights" in c.value for c in at.caption)
    from core.prune import Prune

    ws.add_step(Prune(sparsity=0.5))
    at.switch_page("views/prune.py").run()
    ok(at)


def test_a_bad_factory_is_a_message_and_nothing_is_registered(own_home):
    at = new_app()
    at.switch_page(PAGE).run()
    _fill(at, "app_bad", "demo_models.nets:no_such_factory")
    at.text_input(key="open_shape").set_value("1,8,8")
    at.button(key="open_go").click().run()
    assert not at.exception
    assert any("no_such_factory" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["model_name"] == "digits_cnn"
    _fill(at, "app_bad", "demo_models.nets:DigitsCNN", "[1, 2]")
    at.button(key="open_go").click().run()
    assert any("must be a JSON object" in e.value for e in at.error)


def test_an_uploaded_tensors_file_with_labels_is_a_classification_model(own_home, tmp_path):
    own_home.append("app_tab")
    rng = np.random.RandomState(0)
    x = rng.randn(80, 1, 8, 8).astype("float32")
    y = np.arange(80) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y)
    at = new_app()
    at.switch_page(PAGE).run()
    _fill(at, "app_tab", "demo_models.nets:DigitsCNN")
    at.radio(key="open_dkind").set_value("local path").run()
    at.text_input(key="open_dpath").set_value(str(tmp_path / "d.npz"))
    at.button(key="open_go").click().run()
    ok(at)
    ws = workspace(at)
    assert ws.name == "app_tab" and ws.spec.task == "classification"
    assert ws.evalset.classes == [str(i) for i in range(10)]


@pytest.mark.slow
def test_an_uploaded_image_zip_opens_prunes_and_survives_a_reload(own_home, tmp_path):
    """The issue's path: a factory with an uploaded image-folder zip, its resize and
    normalisation settings shown; prune; a reload (the same ?session=) finds the plan."""
    from streamlit.testing.v1 import AppTest

    from core.prune import Prune
    from tests.helpers.app import APP
    from tests.helpers.data import image_folder, zip_of

    own_home.append("app_pets")
    z = zip_of(image_folder(tmp_path / "pets"), tmp_path / "pets.zip")
    at = new_app()
    at.switch_page(PAGE).run()
    _fill(at, "app_pets", "demo_models.nets:DigitsCNN")
    at.radio(key="open_dkind").set_value("upload").run()
    at.file_uploader(key="open_dfile").set_value(("pets.zip", z.read_bytes(), "application/zip")).run()
    ok(at)
    assert "ImageNet's (RGB 0.485,0.456,0.406" in " ".join(c.value for c in at.caption)  # shown, editable
    at.text_input(key="open_mean").set_value("0.5")
    at.text_input(key="open_std").set_value("0.5")
    at.text_input(key="open_shape").set_value("1,8,8")
    at.button(key="open_go").click().run()
    ok(at)
    ws = workspace(at)
    assert ws.name == "app_pets" and ws.spec.task == "classification"
    assert ws.evalset.classes == ["cat", "dog", "fox"] and tuple(ws.evalset.x.shape[1:]) == (1, 8, 8)
    from core.sources.entries import list_user_models

    assert list_user_models()[0].data["mean"] == [0.5] and list_user_models()[0].data["std"] == [0.5]
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    at.switch_page("views/prune.py").run()
    ok(at)
    sid = at.session_state["session_id"]
    again = AppTest.from_file(APP, default_timeout=180)
    again.query_params["session"] = sid
    again.run()
    ok(again)
    assert again.session_state["model_name"] == "app_pets"
    assert workspace(again).plan == ws.plan and workspace(again).evalset.classes == ["cat", "dog", "fox"]


def test_a_broken_upload_is_a_message_and_the_open_model_stays(own_home, tmp_path):
    at = new_app("digits_mlp")
    workspace(at).add_step(__import__("core.prune", fromlist=["Prune"]).Prune(sparsity=0.3))
    at.switch_page(PAGE).run()
    _fill(at, "app_broken", "demo_models.nets:DigitsCNN")
    at.radio(key="open_dkind").set_value("upload").run()
    at.file_uploader(key="open_dfile").set_value(("pets.zip", b"PK not really a zip", "application/zip")).run()
    at.button(key="open_go").click().run()
    assert not at.exception
    assert any("pets.zip" in e.value and "not a readable zip" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state["model_name"] == "digits_mlp" and len(workspace(at).plan.steps) == 1


@pytest.mark.slow
def test_a_hugging_face_folder_with_a_text_file(own_home, tmp_path):
    """A local transformers folder (a tiny Llama, built here) and a text file: judged as a
    language model, the figures labelled so."""
    import pytest

    pytest.importorskip("transformers")
    from tests.helpers.hf import build, save, sentences, tokenizer

    own_home.append("app_llama")
    folder = save(tmp_path / "llama", build("llama"), tokenizer("lm"))
    (tmp_path / "lm.txt").write_text("\n".join(sentences(150, 3)))
    at = new_app()
    at.switch_page(PAGE).run()
    at.text_input(key="open_name").set_value("app_llama")
    at.radio(key="open_source").set_value("hf").run()
    at.text_input(key="open_hf").set_value(str(folder))
    at.radio(key="open_dkind").set_value("local path").run()
    at.text_input(key="open_dpath").set_value(str(tmp_path / "lm.txt")).run()
    at.number_input(key="open_seq").set_value(16)
    at.button(key="open_go").click().run()
    ok(at)
    ws = workspace(at)
    assert ws.name == "app_llama" and ws.spec.task == "language-model" and ws.evalset.kind == "text"
    assert at.sidebar.selectbox(key="model_name").format_func("app_llama") == "app_llama (yours)"  # folder weights
    assert not any("random weights" in w.value for w in at.warning)
    from core.prune import Prune

    ws.add_step(Prune(criterion="l1", granularity="head", sparsity=0.5))
    at.switch_page("views/prune.py").run()
    ok(at)
    labels = [m.label for m in at.metric]
    assert "Next-token accuracy" in labels and "Perplexity" in labels and "Accuracy" not in labels
    for page in ("views/explain.py", "views/surgery.py", "views/sensitivity.py", "views/export.py",
                 "views/history.py", "views/model.py"):
        at.switch_page(page).run()
        ok(at)  # every page opens on a language model (views that need images or gradients say so)
        if page == "views/explain.py":  # changed predictions show the text itself, decoded by the tokenizer
            texts = [c.value for c in at.caption if "“" in c.value]
            assert texts and all(w in " ".join(texts) for w in ("“", "label"))
            assert any("token ids, which have none" in c.value for c in at.caption)


def test_the_hugging_face_form_asks_for_tokens_not_an_image_shape(own_home, tmp_path):
    """It asked a folder that reads token ids for an "Input shape 3,224,224"; now tokens per
    example, for synthetic data only (a file's examples give their own length), and the
    number becomes the examples' length."""
    pytest.importorskip("transformers")
    from tests.helpers.hf import build, save, tokenizer

    own_home.append("app_hf_tokens")
    at = new_app()
    at.switch_page(PAGE).run()
    assert "open_shape" in [t.key for t in at.text_input]  # a factory is asked for its input shape
    at.radio(key="open_source").set_value("hf").run()
    ok(at)
    assert "open_shape" not in [t.key for t in at.text_input]
    assert not any("3,224,224" in (t.placeholder or "") for t in at.text_input)
    assert at.number_input(key="open_hf_tokens").label == "Tokens per example"
    at.radio(key="open_dkind").set_value("local path").run()
    assert "open_hf_tokens" not in [n.key for n in at.number_input]
    assert any("token ids, as many per example as the data gives" in c.value for c in at.caption)
    at.radio(key="open_dkind").set_value("synthetic").run()
    at.text_input(key="open_name").set_value("app_hf_tokens")
    at.text_input(key="open_hf").set_value(str(save(tmp_path / "llama", build("llama"), tokenizer("lm"))))
    at.number_input(key="open_hf_tokens").set_value(12)
    at.number_input(key="open_n").set_value(32)
    at.button(key="open_go").click().run()
    ok(at)
    assert tuple(workspace(at).evalset.x.shape[1:]) == (12,)
