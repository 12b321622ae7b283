"""The Recover panel (Prune and Surgery): fine-tune or distil the current model after an
edit, in the background with progress (step n of N, loss) and a Cancel that keeps the
steps done as a shorter step, and before / after figures (quick-subset accuracy and loss, per class, loss curve)."""
from __future__ import annotations

import streamlit as st
import torch
from streamlit.errors import StreamlitAPIException

from app.jobs import job_ui, start_job
from app.messages import flash, run_action
from app.session import round_to
from core.errors import PrunescopeError
from core.ground import formatting as fmt
from core.recover import Finetune, Quantize, cubic_schedule, gradual_steps
from core.sources.models import LABELLED_TASKS, get_spec
from core.viz.figures import per_class_figure
from core.viz.surgery import heal_figure
from core.workspace import Workspace

LOSS_LABELS = {"labels": "labels", "distill": "distillation from the base", "both": "labels + distillation"}
BOX_LOSS_LABELS = {"labels": "labelled boxes", "predictions": "the base's boxes"}  # a detector's targets
DETECTOR_BATCH = 4  # images a step when a detector trains (its losses on each image's proposals)
TRAIN_LABELS = {"all": "all parameters", "last": "the last k blocks and the head", "adapters": "surgery adapters",
                "adapters+neighbours": "surgery adapters and the blocks beside them"}


TARGET_SECONDS = 45  # what the default number of training steps should take here
ASSUMED_MACS_PER_S = 2e9  # a CPU's pace when nothing of this model was timed yet


def seconds_per_step(ws: Workspace, batch_size: int = 64) -> tuple[float, str]:
    """Estimated seconds of one training step on this machine (forward + backward + update,
    about 3 forward passes of ``batch_size`` examples), and what it is estimated from: the
    current model's timed latency, else the base's scaled by MACs, else an assumed pace."""
    m = ws.metrics("quick", latency=False)  # the page's metrics panel computed them already
    per = None
    if m.latency is not None:
        per, basis = m.latency.median_ms / 1000 / m.latency.batch_size, "this model's timed forward pass"
    elif m.base_latency is not None and m.base_latency.batch_size:
        base = ws.base_metrics("quick", latency=False)
        per = m.base_latency.median_ms / 1000 / m.base_latency.batch_size * m.macs / max(1, base.macs)
        basis = "the base's timed forward pass, scaled by MACs"
    if per is None:
        per, basis = m.macs / ASSUMED_MACS_PER_S, f"{fmt.count(m.macs)} MACs per example at an assumed 2 GMAC/s"
    return 3 * per * batch_size, basis


def steps_input_ui(where, ws: Workspace, key: str, fallback: int, most: int, what: str, batch_size: int = 64) -> int:
    """A number of training steps whose default fits about :data:`TARGET_SECONDS` on this
    machine for this model (at least 5, at most ``fallback``), until the person changes it."""
    ss, auto = st.session_state, f"{key}_auto"
    try:
        per, basis = seconds_per_step(ws, batch_size)
    except PrunescopeError:
        per, basis = None, ""
    fit = fallback if not per else int(min(fallback, max(5, 5 * round(TARGET_SECONDS / per / 5))))
    if ss.get(auto, True) or key not in ss:
        ss[key] = fit
    estimate = (f" The default ({fit}) takes about {TARGET_SECONDS} s or less here: about {per:.2g} s a step, "
                f"estimated from {basis}." if per else "")
    return int(where.number_input("Steps", 1, most, key=key, on_change=ss.__setitem__, args=(auto, False),
                                  help=what + estimate))


def _controls(ws: Workspace, key: str) -> Finetune:
    spec = get_spec(ws.name)
    labelled = spec.task in LABELLED_TASKS  # class labels, next tokens, label masks or labelled boxes
    boxes = spec.output == "detection"  # a detector learns from box targets (core/recover/boxes.py)
    batch = DETECTOR_BATCH if boxes else 64
    c = st.columns(4)
    steps = steps_input_ui(c[0], ws, f"{key}_ft_steps", 200, 5000,
                           f"Optimisation steps, each one batch of {batch} examples of the training split "
                           "(seeded order).", batch_size=batch)
    lr = c[1].number_input("Learning rate", 1e-5, 1.0, 2e-3, key=f"{key}_ft_lr", format="%.4f",
                           help="Adam's peak learning rate; the cosine schedule decays it to 0.")
    if boxes:
        losses, names = (["labels", "predictions"] if labelled else ["predictions"]), BOX_LOSS_LABELS
        why = (f"A detector trains on its own losses against box targets: labelled boxes, or the base's boxes "
               f"scored at least {spec.extra.get('score_threshold', 0.5):g} (the box score threshold).")
    else:
        losses, names = (list(LOSS_LABELS) if labelled else ["distill"]), LOSS_LABELS
        why = ("Labels of the training split, the base model's soft targets, or both."
               + ("" if labelled else " This model has no labels: distillation only."))
    if st.session_state.get(f"{key}_ft_loss") not in losses:
        st.session_state[f"{key}_ft_loss"] = losses[0] if boxes else "both" if labelled else "distill"
    loss = c[2].selectbox("Learn from", losses, key=f"{key}_ft_loss", format_func=names.get, help=why)
    train = c[3].selectbox("Train", list(TRAIN_LABELS), key=f"{key}_ft_train", format_func=TRAIN_LABELS.get,
                           help="Pruned weights stay zero and removed units stay removed whatever trains.")
    last, temperature = 1, 4.0
    if train == "last" or loss != "labels":
        c = st.columns(4)
        if train == "last":
            last = c[0].number_input("Blocks (k)", 1, 100, 1, key=f"{key}_ft_last")
        if loss not in ("labels", "predictions"):
            temperature = c[1].number_input("Temperature", 0.5, 20.0, 4.0, key=f"{key}_ft_temp",
                                            help="Softens the base's targets; the KL term is scaled by T².")
    return Finetune(steps=int(steps), lr=float(lr), train=train, last=int(last), loss=loss, batch_size=batch,
                    temperature=float(temperature), threads=torch.get_num_threads())


def recover_ui(ws: Workspace, key: str, criterion: str | None = None, granularity: str | None = None) -> None:
    """Fine-tune / distil panel. ``key`` namespaces the widgets (one panel per page). The
    training runs in the background (the page stays usable) with progress and Cancel.
    With ``criterion`` and ``granularity`` (the Prune page) it offers gradual pruning too."""
    step = _controls(ws, key)
    job_key = f"{key}_ft_job"
    running = job_ui(job_key)
    c = st.columns(2)
    c[0].button("Fine-tune", key=f"{key}_ft_start", type="primary", icon=":material/model_training:",
                disabled=running, on_click=start_job, args=(job_key, ws, step, "Fine-tuning"), width="stretch",
                help="Trains a copy of the current model; when it ends (or is cancelled) the steps done "
                     "become a plan step that you can undo.")
    if criterion is not None and granularity is not None:
        with c[1].popover("Gradual pruning…", icon=":material/stairs:", width="stretch", disabled=running):
            gradual_ui(ws, job_key, step, criterion, granularity)
    _results(ws)
    quantize_ui(ws, key)


def gradual_ui(ws: Workspace, job_key: str, finetune: Finetune, criterion: str, granularity: str) -> None:
    """Zhu and Gupta's schedule: prune to a target in k increments, fine-tuning after each."""
    st.markdown(f"Prune **{granularity}s by {criterion}** to a target in increments that shrink (cubic "
                f"schedule), fine-tuning after each with the settings beside ({finetune.steps} steps each).")
    target = st.slider("Target (fraction of the units there are now)", 0.05, 0.95, 0.5, 0.05, key="gradual_target")
    k = st.number_input("Increments", 1, 20, 4, key="gradual_k")
    try:
        steps = gradual_steps(criterion, granularity, float(target), int(k), finetune, round_to=round_to(granularity))
    except PrunescopeError as exc:
        st.error(str(exc))
        return
    st.caption("Cumulative amounts: " + ", ".join(fmt.pct(s) for s in cubic_schedule(float(target), int(k))))
    st.button(f"Run {len(steps)} steps", key="gradual_start", type="primary", on_click=start_job,
              args=(job_key, ws, steps, "Gradual pruning"))


def quantize_ui(ws: Workspace, key: str) -> None:
    """int8 quantisation of the current model (onnxruntime): a plan step, the last one."""
    st.markdown("**Quantise to int8** (onnxruntime: static with calibration for convolutional models, dynamic "
                "for MLPs and transformers). The metrics then show the int8 model as onnxruntime runs it; it must "
                "stay the plan's last step.")
    quantized = bool(ws.plan.steps) and isinstance(ws.plan.steps[-1], Quantize)
    if not st.button("Quantize int8", key=f"{key}_quantize", icon=":material/compress:", disabled=quantized,
                     help="Undo removes it again." if not quantized else "The model is quantised already."):
        return
    bar = st.progress(0.3, text="Quantize int8: exporting to ONNX, calibrating on the seeded training batch "
                                f"({len(ws.ctx.calibration(0)[0])} examples), quantising with onnxruntime…")
    ok = run_action(ws.add_step, Quantize(), now=True) is not None
    if ok:
        n = len(ws.evalset.quick_index)
        bar.progress(0.8, text=f"Quantize int8: evaluating on the quick subset ({n} examples)")
        run_action(ws.metrics, "quick", latency=False, now=True)
        flash("success", f"Quantised: {ws.reports[-1].summary}.")
    bar.empty()
    if ok:
        try:  # the metrics above were drawn before
            st.rerun(scope="fragment")
        except StreamlitAPIException:
            st.rerun()


def _results(ws: Workspace) -> None:
    """Before / after figures of the plan's last step when it is a fine-tune."""
    steps = ws.plan.steps
    if not steps or not isinstance(steps[-1], Finetune):
        return
    info = ws.reports[-1].info
    before = run_action(ws.evaluate_plan, ws.plan.prefix(len(steps) - 1), "quick", latency=False, now=True)
    after = ws.metrics("quick", latency=False)
    what = after.quality_name(ws.spec.task)
    if before is not None:
        st.markdown(f"**Last fine-tune** ({steps[-1].describe()}): quick-subset {what} "
                    f"{fmt.pct(before.accuracy)} → **{fmt.pct(after.accuracy)}**, {_loss_name(after)} "
                    f"{before.loss:.3f} → **{after.loss:.3f}** ({after.n} examples).")
    left, right = st.columns(2)
    left.plotly_chart(heal_figure(info["losses"], info["before"], info["after"], title="Fine-tune: training loss"),
                      width="stretch", key=f"ft_loss_{ws.plan.key()}")
    if before is not None and after.class_iou is not None:  # label masks: IoU per class
        right.plotly_chart(per_class_figure(ws.evalset.classes, before.class_iou, after.class_iou,
                                            title="Per-class IoU before and after", names=("before", "after"),
                                            what="IoU"), width="stretch", key=f"ft_per_class_{ws.plan.key()}")
    elif before is not None and after.per_class_accuracy:  # an embedding or a nest has no classes
        right.plotly_chart(per_class_figure(ws.evalset.classes, before.per_class_accuracy, after.per_class_accuracy,
                                            title="Per-class accuracy before and after",
                                            names=("before", "after")),
                           width="stretch", key=f"ft_per_class_{ws.plan.key()}")


def _loss_name(m) -> str:
    """What :attr:`Metrics.loss` is: the relative output error for features and nests, a detector's
    boxes unmatched against the base's (1 - F1), else cross-entropy."""
    if m.output == "detection":
        return "boxes unmatched (1 − F1)"
    return "relative output error" if m.output in ("embedding", "dense", "nest") else "loss"


__all__ = ["recover_ui"]
