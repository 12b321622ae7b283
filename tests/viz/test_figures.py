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
