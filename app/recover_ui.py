"""The Recover panel (Prune and Surgery): fine-tune or distil the current model after an
edit, with progress (step n of N, loss), cancel that keeps the steps done as a shorter
step, and before / after figures (quick-subset accuracy and loss, per class, loss curve)."""
from __future__ import annotations

import dataclasses

import streamlit as st
import torch
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from core import formatting as fmt
from core.models import get_spec
from core.recover import Finetune
from core.viz.figures import per_class_figure
from core.viz.surgery import heal_figure
from core.workspace import Workspace

from app.components import run_action
from app.state import flash

LOSS_LABELS = {"labels": "labels", "distill": "distillation from the base", "both": "labels + distillation"}
TRAIN_LABELS = {"all": "all parameters", "last": "the last k blocks and the head", "adapters": "surgery adapters"}


def _controls(ws: Workspace, key: str) -> Finetune:
    labelled = get_spec(ws.name).task == "classification"
    c = st.columns(4)
    steps = c[0].number_input("Steps", 1, 5000, 200, key=f"{key}_ft_steps",
                              help="Optimisation steps, each one batch of the training split (seeded order).")
    lr = c[1].number_input("Learning rate", 1e-5, 1.0, 2e-3, key=f"{key}_ft_lr", format="%.4f",
                           help="Adam's peak learning rate; the cosine schedule decays it to 0.")
    losses = list(LOSS_LABELS) if labelled else ["distill"]
    if st.session_state.get(f"{key}_ft_loss") not in losses:
        st.session_state[f"{key}_ft_loss"] = "both" if labelled else "distill"
    loss = c[2].selectbox("Learn from", losses, key=f"{key}_ft_loss", format_func=LOSS_LABELS.get,
                          help="Labels of the training split, the base model's soft targets, or both."
                               + ("" if labelled else " This model has no labels: distillation only."))
    train = c[3].selectbox("Train", list(TRAIN_LABELS), key=f"{key}_ft_train", format_func=TRAIN_LABELS.get,
                           help="Pruned weights stay zero and removed units stay removed whatever trains.")
    last, temperature = 1, 4.0
    if train == "last" or loss != "labels":
        c = st.columns(4)
        if train == "last":
            last = c[0].number_input("Blocks (k)", 1, 100, 1, key=f"{key}_ft_last")
        if loss != "labels":
            temperature = c[1].number_input("Temperature", 0.5, 20.0, 4.0, key=f"{key}_ft_temp",
                                            help="Softens the base's targets; the KL term is scaled by T².")
    return Finetune(steps=int(steps), lr=float(lr), train=train, last=int(last), loss=loss,
                    temperature=float(temperature), threads=torch.get_num_threads())


def recover_ui(ws: Workspace, key: str) -> None:
    """Fine-tune / distil panel. ``key`` namespaces the widgets (one panel per page)."""
    step = _controls(ws, key)
    go_col, stop_col = st.columns(2)
    start = go_col.button("Fine-tune", key=f"{key}_ft_start", type="primary", width="stretch",
                          icon=":material/model_training:")
    # A click on Cancel reruns the page; the run in progress notices it at its next progress
    # update, keeps the steps it has done (a valid shorter step) and then lets the rerun go on.
    stop_col.button("Cancel", key=f"{key}_ft_cancel", width="stretch")
    if start:
        _run(ws, step)
    _results(ws)


def _run(ws: Workspace, step: Finetune) -> None:
    bar = st.progress(0.0, text=f"Fine-tuning: starting ({step.steps} steps)…")
    interrupted: list[BaseException] = []

    def progress(done: int, total: int, loss: float) -> None:
        if interrupted:
            return
        try:
            bar.progress(done / max(1, total), text=f"Fine-tuning: step {done} of {total} · batch loss {loss:.3f}")
        except (RerunException, StopException) as exc:  # Cancel (or any widget) was touched
            interrupted.append(exc)

    model = ws.model
    res = run_action(step.run, model, ws.ctx, progress=progress, should_stop=lambda: bool(interrupted), now=True)
    if res is not None:
        _, info = res
        done = dataclasses.replace(step, steps=info["steps_run"], horizon=step.steps)
        if info["steps_run"] and run_action(ws.add_step, done) is not None:  # replays from the memo
            a, b = info["before"], info["after"]
            what = (f"Stopped after {info['steps_run']} of {step.steps} steps; kept as a shorter step. "
                    if info["stopped"] else "")
            flash("success", f"{what}Fine-tuned {info['trained_params']:,} parameters: calibration accuracy "
                             f"{fmt.pct(a['accuracy'])} → {fmt.pct(b['accuracy'])}.")
        elif not info["steps_run"]:
            flash("info", "Fine-tuning cancelled before its first step; the plan is unchanged.")
    bar.empty()
    if interrupted:
        raise interrupted[0]  # the rerun the person asked for
    try:  # the metrics above were drawn before the training
        st.rerun(scope="fragment")
    except StreamlitAPIException:  # not inside a fragment's own run
        st.rerun()


def _results(ws: Workspace) -> None:
    """Before / after figures of the plan's last step when it is a fine-tune."""
    steps = ws.plan.steps
    if not steps or not isinstance(steps[-1], Finetune):
        return
    info = ws.reports[-1].info
    before = run_action(ws.evaluate_plan, ws.plan.prefix(len(steps) - 1), "quick", latency=False, now=True)
    after = ws.metrics("quick", latency=False)
    if before is not None:
        st.markdown(f"**Last fine-tune** ({steps[-1].describe()}): quick-subset accuracy "
                    f"{fmt.pct(before.accuracy)} → **{fmt.pct(after.accuracy)}**, loss {before.loss:.3f} → "
                    f"**{after.loss:.3f}** ({after.n} examples).")
    left, right = st.columns(2)
    left.plotly_chart(heal_figure(info["losses"], info["before"], info["after"], title="Fine-tune: training loss"),
                      width="stretch", key=f"ft_loss_{ws.plan.key()}")
    if before is not None:
        right.plotly_chart(per_class_figure(ws.evalset.classes, before.per_class_accuracy, after.per_class_accuracy,
                                            title="Per-class accuracy before and after",
                                            names=("before", "after")),
                           width="stretch", key=f"ft_per_class_{ws.plan.key()}")


__all__ = ["recover_ui"]
