"""Export page (AppTest): formats, verification table, downloads, recipe, errors, Netron."""
from pathlib import Path

import pytest

from core.io import EXPORTERS
from core.plan import Plan
from core.prune import Prune
from tests.helpers.app import new_app, workspace
from tests.helpers.app import ok as _ok


def _export_page(model: str, plan: Plan | None = None):
    at = new_app(model)
    if plan is not None:
        workspace(at).set_plan(plan)
    at.switch_page("views/export.py").run()
    _ok(at)
    return at


def _downloads(at) -> list[str]:
    return [el.proto.label for el in at.get("download_button") if not el.proto.label.startswith("Download ")]


def test_export_page_exports_and_verifies_the_current_plan():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    at.switch_page("views/export.py").run()
    _ok(at)
    assert [c.label for c in at.checkbox if c.key.startswith("fmt_")] == list(EXPORTERS.names())
    at.checkbox(key="fmt_pt2").uncheck()
    at.button(key="export_btn").click().run()
    _ok(at)
    name, key, results = at.session_state["export_results"]
    assert name == "digits_mlp" and key == workspace(at).plan.key()
    assert [r.format for r in results] == ["safetensors", "onnx", "torchscript"]
    assert all(r.verified and Path(r.path).exists() for r in results)
    df = at.dataframe[0].value
    assert list(df["format"]) == ["safetensors", "onnx", "torchscript"]
    assert list(df["verified"]) == ["yes"] * 3 and list(df["agreement"]) == ["100.0%"] * 3
    assert {"size", "vs base", "max |diff|", "seconds", "error / note"} <= set(df.columns)
    assert _downloads(at) == ["safetensors", "onnx", "torchscript", "recipe"]  # labelled by what they hold
    helps = [el.proto.help for el in at.get("download_button") if not el.proto.label.startswith("Download ")]
    for f, h in zip(["digits_mlp.safetensors", "digits_mlp.onnx", "digits_mlp.pt", "digits_mlp.plan.json"], helps):
        assert h.startswith(f + ", ")
    assert Plan.load(Path(results[0].recipe)) == workspace(at).plan
    assert any('"prunescope.plan/1"' in c.value for c in at.code)  # the recipe is shown


def test_a_structurally_pruned_model_exports_smaller_than_the_base():
    at = _export_page("digits_cnn", Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.5),)))
    for n in ("onnx", "pt2", "torchscript"):
        at.checkbox(key=f"fmt_{n}").uncheck()
    at.button(key="export_btn").click().run()
    _ok(at)
    (r,) = at.session_state["export_results"][2]
    assert r.verified and float(at.dataframe[0].value["vs base"][0].rstrip("×")) < 0.5


def test_a_failing_format_shows_its_reason_and_the_others_still_export(monkeypatch):
    from tests.helpers.exports import HalfWrite

    monkeypatch.setitem(EXPORTERS._items, "torchscript", HalfWrite())
    at = _export_page("digits_mlp")
    for n in ("onnx", "pt2"):
        at.checkbox(key=f"fmt_{n}").uncheck()
    at.button(key="export_btn").click().run()
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df["verified"]) == ["yes", "no"]
    assert "No space left on device" in df["error / note"][1]
    assert any("torchscript failed" in w.value for w in at.warning)
    assert _downloads(at) == ["safetensors", "recipe"]


def test_bad_file_name_is_a_clear_error_and_keeps_the_plan():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.3).run()
    at.switch_page("views/export.py").run()
    at.text_input(key="export_stem").input("../evil").run()
    at.button(key="export_btn").click().run()
    assert not at.exception
    assert any("not allowed" in e.value for e in at.error)
    assert "export_results" not in at.session_state
    assert workspace(at).plan.steps[-1].sparsity == 0.3


def test_results_of_an_earlier_plan_are_marked_stale():
    at = _export_page("digits_mlp")
    for n in ("onnx", "pt2", "torchscript"):
        at.checkbox(key=f"fmt_{n}").uncheck()
    at.button(key="export_btn").click().run()
    _ok(at)
    workspace(at).add_step(Prune(sparsity=0.2))
    at.run()
    assert any("earlier plan" in w.value for w in at.warning)


def _view_file(page: str, name: str) -> Path:
    """The model file of the Netron view whose page is ``page`` (relative to the site)."""
    from core.io import netron as netron_view

    (view,) = [v for v in netron_view.views() if v.page == page]
    return netron_view.site() / "data" / view.token / name


def test_view_graph_shows_the_exported_onnx_with_netron():
    from core.io import netron as netron_view

    at = _export_page("digits_mlp")
    for n in ("safetensors", "pt2", "torchscript"):
        at.checkbox(key=f"fmt_{n}").uncheck()
    at.button(key="export_btn").click().run()
    _ok(at)
    at.button(key="export_graph_btn").click().run()
    _ok(at)
    page, _ = at.session_state["export_graph_url"]
    # served by the app's own server (a relative URL), so it works wherever the page works
    assert any(f"(component/app.netron_ui.netron/{page})" in m.value for m in at.markdown)
    assert _view_file(page, "digits_mlp.onnx").read_bytes() == \
        Path(at.session_state["export_results"][2][0].path).read_bytes()
    netron_view.drop(at.session_state["_netron_owner"])
    at.run()
    assert "export_graph_url" not in at.session_state  # a removed view is not embedded any more


@pytest.mark.slow
def test_the_model_page_shows_the_current_and_the_base_graph():
    import onnx

    at = new_app("digits_cnn")
    ws = workspace(at)
    ws.set_plan(Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.5),)))
    at.switch_page("views/model.py").run()
    _ok(at)
    at.button(key="model_graph_btn").click().run()
    at.button(key="model_graph_current_btn").click().run()
    _ok(at)
    widths = {}
    for key in ("model_graph", "model_graph_current"):
        page, _ = at.session_state[f"{key}_url"]
        graph = onnx.load(str(_view_file(page, f"{key}.onnx"))).graph
        widths[key] = [i.dims[0] for i in graph.initializer if len(i.dims) == 4]
    assert widths["model_graph"] == [32, 64, 64]
    assert sum(widths["model_graph_current"]) < 32 + 64 + 64  # channels really removed
    ws.set_plan(Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.3),)))
    at.run()
    assert "model_graph_current_url" not in at.session_state  # out of step with the plan: hidden
    assert "model_graph_url" in at.session_state  # the base did not change


@pytest.mark.slow
def test_a_quantised_plan_exports_onnx_and_compares_int8_with_float():
    from core.recover import Quantize
    from tests.helpers.app import new_app, ok, workspace

    at = new_app("digits_cnn")
    workspace(at).add_step(Quantize())
    at.switch_page("views/export.py").run()
    ok(at)
    assert [c.key for c in at.checkbox if c.value] == ["fmt_onnx_q"]  # int8 exports as ONNX only
    at.button(key="export_btn").click().run()
    ok(at)
    at.button(key="export_int8_cmp").click().run()
    ok(at)
    table = at.dataframe[-1].value
    assert list(table["model"]) == ["float (ONNX)", "int8 (ONNX)"]
    assert table["agreement with float"][1].endswith("of 450")
    assert any("the float file; int8 runs" in c.value for c in at.caption)


def test_the_export_page_offers_the_plan_report_beside_the_recipe():
    at = _export_page("digits_cnn", Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.4),)))
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[-2:] == ["Download plan.json", "Download the plan report (HTML)"]
    report = next(b for b in at.get("download_button") if b.proto.label == "Download the plan report (HTML)")
    assert "prunescope diff" in report.proto.help
