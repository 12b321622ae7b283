from pathlib import Path

from tests.app.conftest import new_app


def test_export_page_exports_and_verifies_the_current_plan():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    at.switch_page("views/export.py").run()
    assert not at.exception
    at.checkbox(key="fmt_pt2").uncheck()
    at.button(key="export_btn").click().run()
    assert not at.exception, [e.value for e in at.exception]
    fmt, key, results = at.session_state["export_results"][0], at.session_state["export_results"][1], \
        at.session_state["export_results"][2]
    assert {r.format for r in results} == {"safetensors", "onnx", "torchscript"}
    assert all(r.verified for r in results)
    assert all(Path(r.path).exists() for r in results)
    df = at.dataframe[0].value
    assert list(df["verified"]) == ["yes"] * 3


def test_bad_file_name_is_a_clear_error_and_keeps_the_plan():
    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.3).run()
    at.switch_page("views/export.py").run()
    at.text_input(key="export_stem").input("../evil").run()
    at.button(key="export_btn").click().run()
    assert not at.exception
    assert any("not allowed" in e.value for e in at.error)
    ws = at.session_state["workspaces"]["digits_mlp"]
    assert ws.plan.steps[-1].sparsity == 0.3
