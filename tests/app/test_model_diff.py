"""Model page, tab "Diff (base → current)" (AppTest): counts, graph, table, the node under a
click, the latency profile and the report download."""
from core.plan import Plan
from core.prune import Prune
from tests.helpers.app import new_app, ok, workspace

DIFF_TAB = "Diff (base → current)"


def _diff_tab(model: str, plan: Plan | None = None):
    at = new_app(model)
    if plan is not None:
        workspace(at).set_plan(plan)
    at.switch_page("views/model.py")
    at.session_state["model_tabs"] = DIFF_TAB  # the tab is lazy: shown only when picked
    at.run()
    ok(at)
    return at


def _counts(at) -> dict[str, int]:
    return {m.label.removesuffix(" modules"): int(m.value) for m in at.metric if m.label.endswith(" modules")}


def test_an_empty_plan_says_there_is_nothing_to_compare():
    at = _diff_tab("digits_mlp")
    assert any("no steps yet" in i.value for i in at.info)
    assert not _counts(at)


def test_a_channel_prune_shows_narrowed_modules_in_counts_graph_and_table():
    at = _diff_tab("digits_cnn", Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.4),)))
    diff = at.session_state["model_diff"][1]
    counts = _counts(at)
    assert counts == diff.counts() and counts["narrowed"] > 0 and counts["removed"] == 0  # no container changed
    df = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert len(df) == len(diff.nodes) and df["status"].iloc[0] == "narrowed"  # changed first
    assert set(df["module"]) == {n.name for n in diff.nodes}
    at.multiselect(key="diff_statuses").set_value(["kept"]).run()
    ok(at)
    df = next(d.value for d in at.dataframe if "status" in d.value.columns)
    assert set(df["status"]) == {"kept"} and len(df) == counts["kept"]
    assert any(b.proto.label == "Download the plan report (HTML)" for b in at.get("download_button"))


def test_a_clicked_node_shows_its_figures_before_and_after():
    at = _diff_tab("digits_cnn", Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.4),)))
    diff = at.session_state["model_diff"][1]
    node = next(n for n in diff.nodes if n.status == "narrowed" and n.before.params)
    at.session_state["diff_node"] = node.name  # what a click on the graph sets (clicks: tests/e2e)
    at.run()
    ok(at)
    assert any(node.name in m.value and "narrowed" in m.value for m in at.markdown)
    table = next(d.value for d in at.dataframe if list(d.value.columns) == ["base", "current"])
    assert table.loc["parameters", "base"] == f"{node.before.params:,}"
    assert table.loc["parameters", "current"] == f"{node.after.params:,}"


def test_the_profile_button_draws_where_the_time_went():
    at = _diff_tab("digits_cnn", Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.4),)))
    assert not at.session_state["model_diff"][1].profiled
    assert any("Not profiled yet" in c.value for c in at.caption)
    at.button(key="diff_profile").click().run()
    ok(at)
    diff = at.session_state["model_diff"][1]
    assert diff.profiled and diff.profile_note
    assert any(c.value.startswith("How: ") and diff.profile_note in c.value for c in at.caption)
    assert {"diff_graph", "diff_latency"} <= {c.key for c in at.get("plotly_chart")}  # graph and overlay
    assert "64" in diff.profile_note  # at the page's latency batch (default 64)
