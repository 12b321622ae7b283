"""Issue 23 (12): the Model page after a switch of model, and its example images."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from core.ground import formatting as fmt
from tests.helpers.app import metric, new_app, ok, workspace

PAGE = "views/model.py"


def test_after_a_switch_every_figure_on_the_model_page_is_the_new_models():
    at = new_app("digits_cnn")
    at.switch_page(PAGE).run()
    ok(at)
    old = {m.label: m.value for m in at.metric}
    at.selectbox(key="model_name").set_value("digits_mlp").run()
    ok(at)
    ws = workspace(at)
    assert ws.name == "digits_mlp" and any("Model · digits_mlp" in m.value for m in at.markdown)
    base = ws.base_metrics("quick")
    assert metric(at, "Parameters (base)") == fmt.count(base.params) != old["Parameters (base)"]
    assert metric(at, "MACs / example (base)") == fmt.count(base.macs)
    assert metric(at, "Accuracy (base, quick)") == fmt.pct(base.accuracy)


def test_the_model_page_draws_the_digits_as_their_values():
    """The demo digits: the pixel is p/16 of white (ink light on dark, as on the Explain page)."""
    at = new_app("digits_cnn")
    at.switch_page(PAGE).run()
    ok(at)
    (chart,) = [c for c in at.get("plotly_chart") if '"type":"image"' in c.proto.spec.replace(" ", "")]
    traces = json.loads(chart.proto.spec)["data"]
    ev = workspace(at).evalset
    y = ev.y.cpu().numpy()
    for t in traces[:3]:
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(t["source"].split(",", 1)[1]))).convert("L"))
        c = traces.index(t)
        x = ev.x[int(np.nonzero(y == c)[0][0]), 0].cpu().numpy()
        assert np.abs(got.astype(int) - np.rint((x * 0.5 + 0.5) * 255).astype(int)).max() <= 1
