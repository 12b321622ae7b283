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

    from core.viz.figures import overview_figure, pareto_figure, per_class_figure, weight_histogram_figure
    from core.viz.histograms import Histogram
    from core.viz.importance import importance_histogram_figure, jaccard_heatmap_figure, ratio_bars_figure
    from core.viz.surgery import block_sequence_figure, cka_heatmap, heal_figure, influence_figure

    hist = Histogram(np.linspace(-1, 1, 5), np.array([1, 2, 3, 4]), 10, "w")
    blocks = [{"name": f"layers.{i}", "out_shape": [8, 4, 4], "params": 100, "adapter": False} for i in range(2)]
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
    }


def test_nothing_sits_under_the_plotly_toolbar():
    """The toolbar sits in the top right corner: titles go to the top left, legends on their
    own line on the left, and the top margin is at least the toolbar's height."""
    from core.viz.style import MODEBAR_BAND

    for name, f in _every_figure().items():
        lay = f.layout
        assert lay.margin.t >= MODEBAR_BAND, name
        if lay.title.text:
            assert (lay.title.x, lay.title.xanchor, lay.title.yref) == (0, "left", "container"), name
        assert (lay.legend.x, lay.legend.xanchor, lay.legend.yanchor) == (0, "left", "bottom"), name
        assert "lasso2d" in lay.modebar.remove, name
