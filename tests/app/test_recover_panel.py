"""The Recover panel: fine-tuning after a channel prune is a plan step, the metrics show
the recovered model at once, with before / after figures (AppTest)."""
from __future__ import annotations

from core.prune import Prune
from core.recover import Finetune
from tests.app.conftest import metric, new_app, workspace, ok as _ok


def _pct(text: str) -> float:
    return float(text.rstrip("%"))


def test_fine_tune_after_a_channel_prune_recovers_and_shows_before_and_after():
    at = new_app("digits_cnn")
    ws = workspace(at)
    ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    at.run()
    hurt = _pct(metric(at, "Accuracy"))
    at.number_input(key="prune_ft_steps").set_value(80).run()
    at.button(key="prune_ft_start").click().run()
    _ok(at)
    step = ws.plan.steps[-1]
    assert isinstance(step, Finetune) and step.steps == 80 and step.loss == "both"
    assert _pct(metric(at, "Accuracy")) > hurt + 30  # drawn after the training, in the same click
    assert any(s.value.startswith("Fine-tuned ") for s in at.success)
    assert any(m.value.startswith("**Last fine-tune**") for m in at.markdown)
    at.button(key="prune_undo").click().run()
    _ok(at)
    assert not isinstance(ws.plan.steps[-1], Finetune)


def test_a_model_without_labels_offers_distillation_only():
    from core.models import register_factory

    register_factory("demo_models.nets:digits_mlp", weights=None, dataset="digits", input_shape=(1, 8, 8),
                     name="fidelity_mlp_app", task="fidelity")
    at = new_app("fidelity_mlp_app")
    _ok(at)
    assert at.selectbox(key="prune_ft_loss").options == ["distillation from the base"]
