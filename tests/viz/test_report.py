"""The plan report: one self-contained HTML page (parses, names every module, loads nothing from
the network, keeps the recipe as it was)."""
import json
from html.parser import HTMLParser

import pytest
import torch

from core import Plan, Prune, Workspace
from core.viz.report import plan_report_html, recipe_of, report_histograms, workspace_report_html
from tests.helpers.diffs import hand_diff


class _Page(HTMLParser):
    """Tags, script sources and text of a page; fails on unbalanced tags."""

    def __init__(self):
        super().__init__()
        self.stack, self.scripts, self.sources, self.text = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br", "hr", "img", "input", "link"):
            self.stack.append(tag)
        if tag == "script":
            self.scripts += 1
            self.sources += [v for k, v in attrs if k == "src"]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def pruned_ws():
    ws = Workspace("digits_cnn", "cpu", latency_time=0.01)
    ws.set_plan(Plan("digits_cnn", (Prune(sparsity=0.4),)))
    return ws


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    assert p.stack == []
    return p


def test_the_report_is_one_self_contained_page(pruned_ws):
    diff = hand_diff(pruned_ws.base, pruned_ws.evalset.x[:1], "digits_cnn", mask="features", profiled=True)
    page = workspace_report_html(pruned_ws, diff)
    p = _parse(page)
    assert p.sources == []  # every script inline: nothing from the network
    assert "<script src=" not in page and 'src="http' not in page
    assert page.count("plotly.js v") <= 2 and page.count("window.PlotlyConfig") == 1  # plotly.js inlined once
    text = "".join(p.text)
    for n in diff.nodes:
        assert n.name in text  # in the module table
    assert "digits_cnn" in text and "Where the time went" in text
    assert recipe_of(page) == json.loads(pruned_ws.plan.to_json())
    assert Plan.from_json(json.dumps(recipe_of(page))) == pruned_ws.plan


def test_metrics_before_and_after_are_the_workspace_figures(pruned_ws):
    page = workspace_report_html(pruned_ws)
    b, c = pruned_ws.base_metrics(), pruned_ws.metrics()
    assert f"<td>{b.params:,}</td><td>{c.params:,}</td>" in page
    assert f"{c.nonzero_params:,}" in page and c.nonzero_params < b.nonzero_params
    assert "Graph diff" not in page  # no diff given: no graph section


def test_histograms_carry_the_prune_steps_thresholds(pruned_ws):
    r = pruned_ws.reports[0]
    hists, lines = report_histograms(pruned_ws.model_before(0), r.thresholds, r.global_threshold)
    assert set(hists) == set(lines) and len(hists) >= 2
    for name, t in lines.items():
        if name != "(global)":
            assert t == r.thresholds.get(name, r.global_threshold)
    page = workspace_report_html(pruned_ws)
    assert "thresholds on |w|" in page


def test_a_recipe_with_a_closing_script_tag_stays_inside_its_block():
    class M:
        accuracy, params, nonzero_params, sparsity, macs, size_bytes = 0.5, 10, 5, 0.5, 100, 40
        latency, subset, n = None, "quick", 8

    recipe = '{"model": "x</script><script>alert(1)</script>"}'
    page = plan_report_html(model="x", recipe=recipe, base=M(), current=M())
    p = _parse(page)
    assert recipe_of(page) == {"model": "x</script><script>alert(1)</script>"}
    assert p.scripts == 1  # the recipe's block alone: its text opened no script


def test_many_layers_show_the_largest_and_a_global_histogram():
    model = torch.nn.Sequential(*[torch.nn.Linear(4 + i, 5 + i) for i in range(8)])
    hists, lines = report_histograms(model, {}, 0.1)
    assert list(hists)[0] == "(global)" and len(hists) == 5
    assert hists["(global)"].total == sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    assert "7" in hists and "0" not in hists  # the largest layers
    assert all(t == 0.1 for t in lines.values())


def test_cli_diff_html_writes_the_report(capsys, tmp_path):
    from tests.helpers.cli import run

    plan = tmp_path / "plan.json"
    Plan("digits_cnn", (Prune(granularity="channel", sparsity=0.4),)).save(plan)
    out = tmp_path / "report.html"
    code, text, err = run(capsys, "diff", "digits_cnn", "--plan", str(plan), "--html", str(out), "--device", "cpu")
    assert code == 0, err
    assert f"HTML report: {out}" in text
    page = out.read_text(encoding="utf-8")
    p = _parse(page)
    assert p.sources == [] and "features.1.0" in "".join(p.text)
    assert Plan.from_json(json.dumps(recipe_of(page))) == Plan.load(plan)


def test_cli_diff_html_to_an_unwritable_place_is_a_one_line_error(capsys, tmp_path):
    from tests.helpers.cli import run

    plan = tmp_path / "plan.json"
    Plan("digits_mlp", (Prune(sparsity=0.3),)).save(plan)
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "diff", "digits_mlp", "--plan", str(plan), "--html", str(tmp_path / "file" / "r.html"),
                       "--device", "cpu")
    assert code == 2 and "--html" in err and "Traceback" not in err
