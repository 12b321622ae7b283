import pytest
import torch

from core.ground.device import available_devices, pick_device


def test_auto_picks_the_best_available():
    assert pick_device("auto").type == available_devices()[0]
    assert available_devices()[-1] == "cpu"


def test_unavailable_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("cuda is available here")
    with pytest.raises(ValueError, match="device 'cuda' is not available; available: cpu"):
        pick_device("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_workspace_runs_on_cuda():
    from core.prune import Prune
    from core.workspace import Workspace

    ws = Workspace("digits_cnn", "cuda", latency_time=0.05)
    assert ws.evalset.x.is_cuda and next(ws.model.parameters()).is_cuda
    base = ws.metrics()
    ws.add_step(Prune(sparsity=0.5))
    m = ws.metrics()
    assert m.latency.device.startswith("cuda") and m.sparsity == pytest.approx(0.5, abs=0.02)
    assert base.accuracy > 0.9


def test_peak_memory_nests_without_going_negative(monkeypatch):
    """The peak statistics are faked here (no GPU): an inner block's reset must not hide
    what the outer block saw before it, and a block that frees memory reads 0, not less."""
    from core.ground import device as D

    state = {"now": 300, "peak": 300}

    def alloc(n):
        state["now"] += n
        state["peak"] = max(state["peak"], state["now"])

    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: state["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev=None: state["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev=None: state.update(peak=state["now"]))
    monkeypatch.setattr(D, "synchronize", lambda dev: None)
    with D.peak_memory("cuda") as outer:
        alloc(-256)  # frees what it held at the start
        with D.peak_memory("cuda") as inner:
            alloc(16)
            alloc(-16)
    assert inner["bytes"] == 16 and outer["bytes"] == 0
    with D.peak_memory("cuda") as outer:
        alloc(100)
        alloc(-100)
        with D.peak_memory("cuda") as inner:
            alloc(10)
            alloc(-10)
    assert inner["bytes"] == 10 and outer["bytes"] == 100
    with D.peak_memory("cpu") as off:
        pass
    assert off["bytes"] is None
