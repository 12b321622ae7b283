"""A session of the app with the device set to cuda: the workspace, the live prune loop,
the latency readout and the precision choice all on the GPU."""
from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.helpers.cuda import CUDA, DEVICE, all_on_cuda, on_gpu

pytestmark = CUDA
APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _metric(at: AppTest, label: str):
    return next(m for m in at.metric if m.label == label)


def test_a_session_on_the_gpu_prunes_live_and_times_there():
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["device"] = DEVICE
    at.run()
    _ok(at)
    ws = at.session_state["workspaces"][at.session_state["model_name"]]
    assert ws.device.type == DEVICE and all_on_cuda(ws.base)
    with on_gpu("slider move"):
        at.slider(key="global_sparsity").set_value(0.6).run()
    _ok(at)
    assert _metric(at, "Sparsity").value.startswith("60") and all_on_cuda(ws.model)
    m = ws.metrics()
    assert m.latency is not None and m.latency.device.startswith(DEVICE)
    if DEVICE == "cuda":
        assert m.latency.method == "cuda events" and m.peak_mem_bytes is not None
        assert any("peak GPU memory" in c.value for c in at.caption), [c.value for c in at.caption]
    at.switch_page("views/model.py").run()
    _ok(at)
    assert at.selectbox(key="device_choice").value == DEVICE
    at.selectbox(key="precision_choice").set_value("bf16").run()
    _ok(at)
    assert ws.precision == "bf16"
    assert any("bf16 autocast" in i.value for i in at.info), [i.value for i in at.info]
