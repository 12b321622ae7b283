import pytest
import torch

from core.device import available_devices, pick_device


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
