"""Every page on a torchvision detector (issue 24): the cards say what a detector is judged by
(the base's boxes found again, at its score threshold) and no page fails."""
import pytest

from core.plan import Plan
from core.prune import Prune
from tests.helpers.app import ok, workspace

PAGES = ["views/model.py", "views/prune.py", "views/sensitivity.py", "views/surgery.py", "views/explain.py",
         "views/export.py", "views/history.py"]


@pytest.fixture(scope="module")
def detector():
    from core.sources.entries import register
    from core.sources.models import MODELS

    spec = register("app_det", torchvision="fasterrcnn_mobilenet_v3_large_320_fpn",
                    kwargs={"num_classes": 3, "min_size": 96, "max_size": 96}, input_shape=(3, 64, 64),
                    score_threshold=0.05, data={"kind": "synthetic", "n": 24}, save=False)
    yield spec.name
    MODELS.unregister(spec.name)


def _app(name: str):
    """The app on ``name``, latency timed on batches of 4 images (a detector at 64 a batch is slow here)."""
    from streamlit.testing.v1 import AppTest

    from tests.helpers.app import APP

    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model_name"] = name
    at.session_state["latency_batch"] = 4
    at.run()
    ok(at)
    return at


def test_the_prune_page_of_a_detector_reads_box_recall_and_precision_and_fine_tunes_on_boxes(detector):
    """The cards say what a detector is judged by; its Recover panel trains on box targets (the base's
    boxes here: it has no labels), in batches of a few images, and the results say what its loss is."""
    from core.recover import Finetune

    at = _app(detector)
    learn = [s for s in at.selectbox if s.label == "Learn from"]
    assert learn and learn[0].options == ["the base's boxes"] and "scored at least 0.05" in learn[0].help
    assert not [n for n in at.number_input if n.label == "Temperature"]
    assert "batch of 4 examples" in next(n for n in at.number_input if n.label == "Steps").help
    prune = Prune(granularity="channel", sparsity=0.3)
    workspace(at).set_plan(Plan(detector, (prune,)))
    at.run()
    ok(at)
    cards = {m.label: m for m in at.metric}
    assert {"Box recall", "Box precision", "Boxes unmatched (1 − F1)"} <= set(cards) and "Accuracy" not in cards
    assert cards["Box recall"].value != "100.0%" and cards["Box recall"].delta.startswith("-")
    assert "scored 0.05 or more" in cards["Box recall"].help and "IoU >= 0.5" in cards["Box recall"].help
    workspace(at).set_plan(Plan(detector, (prune, Finetune(steps=2, loss="predictions", batch_size=2))))
    at.run()
    ok(at)
    said = [m.value for m in at.markdown if "Last fine-tune" in m.value]
    assert said and "box recall against the base" in said[0] and "boxes unmatched (1 − F1)" in said[0]


def test_every_page_of_a_detector_opens(detector):
    at = _app(detector)
    workspace(at).set_plan(Plan(detector, (Prune(sparsity=0.5),)))  # the Explain page compares base and current
    for page in PAGES:
        at.switch_page(page).run()
        ok(at)
    at.switch_page("views/model.py").run()
    assert any(m.label == "Boxes / image (base, quick)" for m in at.metric)


def test_a_detector_with_labelled_boxes_reads_map_on_the_prune_and_model_pages(own_home, tmp_path):
    from core.sources.describe import data_from_path
    from core.sources.entries import register
    from tests.helpers.data import box_folder

    spec = register("app_boxes", factory="tests.helpers.detectors:fixed_boxes", save=False,
                    data=data_from_path(str(box_folder(tmp_path / "shapes")), size=(24, 24)))
    own_home.append(spec.name)
    at = _app(spec.name)
    cards = {m.label: m.value for m in at.metric}
    assert cards["mAP@0.5:0.95"] == "100.0%" and cards["mAP@0.5"] == "100.0%" and cards["Box recall"] == "100.0%"
    at.switch_page("views/model.py").run()
    ok(at)
    assert next(m.value for m in at.metric if m.label == "mAP (base, quick)") == "100.0%"

