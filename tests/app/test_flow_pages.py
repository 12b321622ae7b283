"""Every page on an optical-flow model (issue 24): torchvision's RAFT, an example the two images
stacked, its flow judged against the base's; the Explain page draws the examples whose flow moved
most, and its unit view folds the encoder's two images of each pair back into one example."""
from core.plan import Plan
from core.prune import Prune
from tests.helpers.app import ok, workspace

PAGES = ["views/model.py", "views/prune.py", "views/sensitivity.py", "views/surgery.py", "views/explain.py",
         "views/export.py", "views/history.py"]


def test_every_page_of_an_optical_flow_model_opens(own_home):
    from streamlit.testing.v1 import AppTest

    from core.sources.entries import register
    from tests.helpers.app import APP

    register("app_flow", torchvision="raft_small", kwargs={"num_flow_updates": 2}, input_shape=(2, 3, 128, 128),
             data={"kind": "synthetic", "n": 12}, save=False)
    own_home.append("app_flow")
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model_name"] = "app_flow"
    at.session_state["latency_batch"] = 2
    at.run()
    ok(at)
    workspace(at).set_plan(Plan("app_flow", (Prune(granularity="channel", sparsity=0.3),)))
    for page in PAGES:
        at.switch_page(page).run()
        ok(at)
        if page == "views/explain.py":  # the pair, and the flow of base and current (torchvision's colour wheel)
            heads = [m.value for m in at.markdown]
            assert "#### Examples whose flow changed most" in heads, heads
            assert any("end-point error" in c.value and "px" in c.value for c in at.caption)
            assert any("optical flow (`flow`)" in i.value for i in at.info)
    at.switch_page("views/prune.py").run()
    cards = {m.label: m.value for m in at.metric}
    assert "Worst leaf: flow" in cards and float(cards["Output cosine (1 leaf)"]) < 1  # the flow moved
    assert "Accuracy" not in cards
