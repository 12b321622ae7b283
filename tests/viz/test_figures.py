"""Figures say what their colours mean and keep their labels on the chart."""
from __future__ import annotations

import pandas as pd

from core.viz.importance import criteria_grid_figure
from core.viz.style import KEPT, PRUNED
from core.viz.surgery import drop_one_figure


def test_the_criteria_grid_has_a_legend_for_kept_and_pruned():
    f = criteria_grid_figure(pd.DataFrame({"l1": [True, False], "taylor": [False, True]}), "grid")
    legend = {t.name: t.marker.color for t in f.data if t.type == "scatter"}
    assert legend == {"kept": KEPT, "pruned": PRUNED}


def test_drop_one_value_labels_have_room_above_100_percent():
    f = drop_one_figure(["layers.0", "layers.1"], [0.99, 0.5], 0.99)
    assert f.layout.yaxis.range[1] > 110 and f.data[0].cliponaxis is False


def _every_figure():
    import numpy as np

    from core.viz.explain import (
        activation_figure,
        attribution_figure,
        confusion_delta_figure,
        confusion_figure,
        coupled_group_figure,
        divergence_figure,
    )
    from core.viz.figures import overview_figure, pareto_figure, per_class_figure, weight_histogram_figure
    from core.viz.histograms import Histogram
    from core.viz.importance import importance_histogram_figure, jaccard_heatmap_figure, ratio_bars_figure
    from core.viz.sensitivity import amounts_figure
    from core.viz.surgery import block_sequence_figure, cka_heatmap, heal_figure, influence_figure

    hist = Histogram(np.linspace(-1, 1, 5), np.array([1, 2, 3, 4]), 10, "w")
    blocks = [{"name": f"layers.{i}", "out_shape": [8, 4, 4], "params": 100, "adapter": False} for i in range(2)]
    img = [[0.0, 0.5], [1.0, 0.2]]
    return {
        "overview": overview_figure(["a", "b"], [0.1, 0.5], [10, 20], selected="a"),
        "weights": weight_histogram_figure(hist, 0.3, title="Weights of a long layer name.0.conv"),
        "per class": per_class_figure(["0", "1"], [0.9, 0.8], [0.7, 0.9]),
        "pareto": pareto_figure([1, 2], [0.9, 0.8], ["p", "q"], x_title="params", current=0, title="Pareto"),
        "importance": importance_histogram_figure(np.arange(10.0), 3.0, np.arange(10) < 3, title="Scores"),
        "jaccard": jaccard_heatmap_figure(pd.DataFrame([[1, 0.5], [0.5, 1]], ["l1", "l2"], ["l1", "l2"]), "J"),
        "grid": criteria_grid_figure(pd.DataFrame({"l1": [True, False], "taylor": [False, True]}), "grid"),
        "ratios": ratio_bars_figure(2.0, 1.5, title="Speed"),
        "blocks": block_sequence_figure(blocks, blocks[:1]),
        "cka": cka_heatmap(["a", "b"], [[1, 0.5], [0.5, 1]]),
        "influence": influence_figure(["a", "b"], [0.1, None]),
        "drop one": drop_one_figure(["a", "b"], [0.9, 0.5], 0.95),
        "heal": heal_figure([1.0, 0.5], {"loss": 1.0, "accuracy": 0.5}, {"loss": 0.4, "accuracy": 0.9}),
        "confusion": confusion_figure([[3, 1], [0, 4]], ["0", "1"]),
        "confusion delta": confusion_delta_figure([[1, -1], [0, 0]], ["0", "1"]),
        "divergence": divergence_figure([{"layer": "a", "cka": 1.0}, {"layer": "b", "cka": 0.5}]),
        "attribution": attribution_figure(img, img, img, ["x", "base", "current"], title="Grad-CAM"),
        "activation": activation_figure([0.1, 0.2, 0.4], title="Activation of channel 0"),
        "group": coupled_group_figure(*_cnn_group()),
        "amounts": amounts_figure(["a", "b"], {"a": 0.5}),
    }


def _cnn_group():
    """A conv's channel, removed with its BatchNorm's entries and the next layer's input:
    the layers in order and the group, as the Explain page gets them."""
    order = [{"layer": n, "type": t} for n, t in (("features.0.0", "Conv2d"), ("features.0.1", "BatchNorm2d"),
                                                   ("features.1.0", "Conv2d"), ("features.1.1", "BatchNorm2d"),
                                                   ("head.2", "Linear"))]
    members = [("features.0.0", "Conv2d", "out"), ("features.0.1", "BatchNorm2d", "out"),
               ("features.1.0", "Conv2d", "in")]
    group = {"group": "features.0.0", "granularity": "channel", "unit": 0,
             "layers": [{"layer": n, "type": t, "role": r, "indices": [0]} for n, t, r in members]}
    return order, group


def test_nothing_sits_under_the_plotly_toolbar():
    """The toolbar has the top band to itself: the title starts below it at the left, the
    legend on its own line on the left below the title, and the top margin holds all three."""
    from core.viz.style import LEGEND_BAND, MODEBAR_BAND, TITLE_BAND

    for name, f in _every_figure().items():
        lay = f.layout
        title = bool(lay.title.text)
        legend = lay.showlegend if lay.showlegend is not None else sum(t.showlegend is not False for t in f.data) > 1
        assert lay.margin.t >= MODEBAR_BAND + TITLE_BAND * title + LEGEND_BAND * legend, name
        if title:
            assert (lay.title.x, lay.title.xanchor, lay.title.yref, lay.title.yanchor) == (0, "left", "container",
                                                                                       "top"), name
            assert lay.title.pad.t >= MODEBAR_BAND, name  # below the toolbar's band, not beside it
        assert (lay.legend.x, lay.legend.xanchor, lay.legend.yanchor) == (0, "left", "bottom"), name
        assert "lasso2d" in lay.modebar.remove, name


def test_charts_set_by_a_control_take_no_drag():
    """A drag on the Prune page's histograms or overview zoomed the chart (and a click did
    nothing): charts whose amount moves with a slider take no drag and offer no zoom."""
    figs = _every_figure()
    for name in ("overview", "weights", "importance", "activation", "amounts", "group"):
        lay = figs[name].layout
        assert lay.dragmode is False, name
        assert lay.xaxis.fixedrange and lay.yaxis.fixedrange, name
        assert {"zoom2d", "pan2d"} <= set(lay.modebar.remove), name
    assert figs["overview"].layout.clickmode == "event+select"  # a click still picks a layer


def test_a_colour_bar_title_stands_beside_the_bar():
    """On top of the bar it covered the highest tick label."""
    bars = [(name, t) for name, f in _every_figure().items() for t in f.data
            if t.type == "heatmap" and t.showscale is not False]
    assert len(bars) >= 5
    for name, t in bars:
        assert t.colorbar.title.side == "right", name


def test_no_colour_is_one_streamlit_repaints():
    """Streamlit's chart theme replaces "#000001".."#000010" anywhere in a figure with its
    own categorical colours: Inferno's "#000004" at 0 turned Grad-CAM's zero pink."""
    import re

    for name, f in _every_figure().items():
        assert not re.search(r"#0000(0[1-9]|10)\b", f.to_json(), re.I), name


def test_attribution_maps_start_from_a_neutral_colour():
    from plotly.colors import hex_to_rgb

    from core.viz.style import ATTRIBUTION_SCALE

    f = _every_figure()["attribution"]
    for t in f.data[1:]:
        pos, colour = t.colorscale[0]
        r, g, b = hex_to_rgb(colour)
        assert pos == 0 and max(r, g, b) - min(r, g, b) <= 8 and (max(r, g, b) <= 40 or min(r, g, b) >= 240)
        assert [list(c) for c in t.colorscale] == [list(c) for c in ATTRIBUTION_SCALE]


def test_the_group_legend_names_exactly_the_colours_drawn():
    """The legend showed "norm / other" in blue while the norms were drawn red (as losing
    output channels) and the unchanged layers grey with no legend entry."""
    from core.viz.explain import LOSSES, UNCHANGED

    f = _every_figure()["group"]
    boxes = next(t for t in f.data if t.mode == "markers+text")
    legend = {t.name: t.marker.color for t in f.data if t.showlegend is not False and t.x == (None,)}
    assert set(legend.values()) == set(boxes.marker.color)
    colour = dict(zip([r["layer"] for r in _cnn_group()[0]], boxes.marker.color))
    assert colour["features.0.1"] == LOSSES["entries"][1] == legend["norm / other: loses per-channel entries"]
    assert colour["features.0.0"] == LOSSES["out"][1] and colour["features.1.0"] == LOSSES["in"][1]
    assert colour["features.1.1"] == colour["head.2"] == UNCHANGED == legend["unchanged"]
    assert "loses entries 0" in boxes.text[1] and "loses output channels 0" in boxes.text[0]


def test_the_heal_labels_stand_clear_of_the_y_axis():
    """"before 10.2%" was centred on step 0, on the y axis itself."""
    f = _every_figure()["heal"]
    marks = f.data[1]
    assert tuple(marks.textposition) == ("top right", "top left")
    assert f.layout.xaxis.range[0] < 0 < 2 < f.layout.xaxis.range[1]


def test_the_overview_shortens_long_layer_names_and_grows_to_keep_its_bars():
    """A transformer's layer names ("hf.encoder.layer.0.attention.self.query") slanted under 18
    bars squeezed the bars and pushed the title onto the legend."""
    from core.viz.figures import overview_figure, tick_names

    names = [f"hf.encoder.layer.{i // 6}.attention.self.{k}" for i, k in
             enumerate(["query", "key", "value", "dense", "inter", "out"] * 3)]
    fig = overview_figure(names, [0.3] * 18, [100] * 18)
    assert all(len(t) <= 18 for t in fig.layout.xaxis.ticktext) and list(fig.layout.xaxis.tickvals) == names
    assert fig.layout.height > overview_figure(["a", "b"], [0.1, 0.2], [1, 2]).layout.height
    assert tick_names(["m.features.0", "m.features.1"]) == ["m.features.0", "m.features.1"]  # short: as they are
    assert tick_names(["model.backbone.features.0", "model.backbone.features.1"]) == ["features.0", "features.1"]
    assert tick_names(["ab.cdefgh.query", "ab.cdefgi.query"], width=6) == ["ab.cdefgh.query", "ab.cdefgi.query"]
