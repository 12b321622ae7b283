"""Widgets shared by the pages. UI functions are named *_ui and return plain values."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pandas as pd
import streamlit as st

from app.jobs import settle_jobs
from app.leaves_ui import leaf_table_ui, nest_full_row, nest_quality_cards, own_metric_ui
from app.messages import run_action
from app.session import model_names
from core.ground import formatting as fmt
from core.ground.outputs import NEST_KINDS
from core.metrics import Metrics
from core.metrics.cost import speed_verdict, timed_beside
from core.sources.models import get_spec
from core.viz.figures import per_class_figure
from core.workspace import Workspace


def model_picker_ui(where=st.sidebar) -> str:
    """Model selector (choices from the registry). Returns the selected name."""
    names = model_names()
    ss = st.session_state
    if ss.get("_open_model") in names:  # just opened on the Model page
        ss["model_name"] = ss.pop("_open_model")
    if ss.get("model_name") not in names:
        ss["model_name"] = "digits_cnn" if "digits_cnn" in names else names[0]

    def label(name: str) -> str:
        spec = get_spec(name)
        if spec.extra.get("source") != "user":
            return name
        from core.sources.entries import has_random_weights

        return f"{name} (yours, random weights)" if has_random_weights(spec) else f"{name} (yours)"

    return where.selectbox("Model", names, key="model_name", format_func=label,
                           help="The bundled demos (trained on scikit-learn's digits) and your own models (Model "
                                "page: Open your own model).")


class LatencyPending:
    """The places a page draws latency figures into, filled in once the current model is
    timed (:func:`latency_ui`): redrawn in place, so nothing reruns and no widget the person
    is moving is redrawn under them."""

    def __init__(self, slot) -> None:
        self.slot = slot  # the panel's latency place, which shows the progress bar
        self.redraws: list[Callable[[Metrics], None]] = []

    def add(self, draw: Callable[[Metrics], None]) -> None:
        self.redraws.append(draw)


def metrics_panel_ui(ws: Workspace, m: Metrics, base: Metrics) -> LatencyPending | None:
    """The live metrics with deltas against the base model (on the same subset). Returns the
    places to redraw while latency is not timed yet, or while ``m`` is a provisional readout
    (give them to :func:`refine_ui` and :func:`latency_ui`)."""
    quality_slot, note_slot = st.empty(), st.empty()

    def draw_quality(m: Metrics) -> None:
        with quality_slot.container():
            _quality_row(ws, m, _base_for(ws, m, base))
        if m.provisional:
            note_slot.caption(_provisional_note(ws, m))
        else:
            note_slot.empty()

    draw_quality(m)
    c = st.columns(4)
    c[0].metric("Non-zero params", fmt.count(m.nonzero_params), fmt.delta(m.nonzero_params, base.nonzero_params,
                "count"), delta_color="inverse", help=f"{m.nonzero_params:,} of {m.params:,} parameters.")
    c[1].metric("MACs / example", fmt.count(m.macs), fmt.delta(m.macs, base.macs, "ratio"), delta_color="inverse",
                help="Multiply-accumulates of one forward pass (dense count).")
    c[2].metric("Size", fmt.nbytes(m.size_bytes), fmt.delta(m.size_bytes, base.size_bytes, "bytes"),
                delta_color="inverse", help="State dict saved as safetensors (dense).")
    lat_slot, notes_slot = c[3].empty(), st.empty()

    def draw(m: Metrics) -> None:
        _latency_readouts(lat_slot, notes_slot, ws, m, _base_for(ws, m, base))

    draw(m)
    if m.latency is not None and not m.provisional:
        return None
    pending = LatencyPending(lat_slot)
    pending.add(draw_quality)
    pending.add(draw)
    return pending


def _base_for(ws: Workspace, m: Metrics, base: Metrics) -> Metrics:
    """The base's figures on ``m``'s subset (like with like: a provisional readout is compared
    with the base on the same examples)."""
    if m.subset == base.subset:
        return base
    return ws.base_first_readout() if m.subset == "glimpse" else ws.base_metrics(m.subset, latency=False)


def _provisional_note(ws: Workspace, m: Metrics) -> str:
    """What a provisional readout is: its examples and the 95% interval of its headline."""
    name = m.quality_name(ws.spec.task)
    ci = (f", 95% interval of {name} {fmt.pct(m.interval[0])}-{fmt.pct(m.interval[1])}"
          if m.interval is not None else "")
    return (f"**Provisional: {m.n} examples**{ci} (a stratified tenth of the quick subset); refining on the "
            f"quick subset ({len(ws.evalset.quick_index)} examples)…")


def _quality_row(ws: Workspace, m: Metrics, base: Metrics) -> None:
    """The quality cards (accuracy or its task's headline, loss, fidelity) and sparsity."""
    c = st.columns(4)
    if m.output in NEST_KINDS:  # a dense class map or a nest of outputs, judged leaf by leaf against the base
        nest_quality_cards(c, m, base, ws.spec.task)
    elif m.output == "embedding":  # features, not class scores: no argmax accuracy, no cross-entropy
        k, over = m.recall_k, f"the {m.n} examples of the {m.subset} eval subset"
        c[0].metric("Output cosine", f"{m.output_cosine:.4f}", fmt.delta(m.output_cosine, base.output_cosine, "num"),
                    help=f"Cosine between this model's embedding of an example and the base's embedding of the "
                         f"same example, mean over {over} (1 = the same direction).")
        c[1].metric(f"Neighbour recall@{k}", fmt.pct(m.neighbour_recall),
                    fmt.delta(m.neighbour_recall, base.neighbour_recall, "pp"),
                    help=f"For each example: its {k} nearest neighbours among the base's embeddings of {over} "
                         f"(cosine), and the share of them that are also among its {k} nearest by this model's "
                         "embeddings; mean over the examples. 100%: every neighbourhood of the base is kept.")
        c[2].metric("Output error", fmt.pct(m.output_error), fmt.delta(m.output_error, base.output_error, "pp"),
                    delta_color="inverse", help=f"Relative error of the embedding, ‖current − base‖ / ‖base‖ "
                                                f"per example, mean over {over}.")
    elif ws.spec.task == "language-model":  # the label of an example is its true next token
        c[0].metric("Next-token accuracy", fmt.pct(m.accuracy), fmt.delta(m.accuracy, base.accuracy, "pp"),
                    help=f"The most likely next token is the true one, after each window of the {m.subset} eval "
                         f"subset ({m.n} windows).")
        ppl, bppl = m.extra.get("perplexity"), base.extra.get("perplexity")
        c[1].metric("Perplexity", f"{ppl:.4g}" if ppl is not None else "–",
                    fmt.delta(ppl, bppl, "num") if ppl is not None and bppl is not None else None,
                    delta_color="inverse", help=f"exp(next-token loss); the loss (mean cross-entropy of the true next "
                                                f"token) is {m.loss:.3f} nats.")
    else:
        c[0].metric("Accuracy", fmt.pct(m.accuracy), fmt.delta(m.accuracy, base.accuracy, "pp"),
                    help=f"Top-1 on the {m.subset} eval subset ({m.n} examples).")
        c[1].metric("Loss", f"{m.loss:.3f}", fmt.delta(m.loss, base.loss, "num"), delta_color="inverse",
                    help="Mean cross-entropy.")
    if m.output == "logits":
        c[2].metric("Fidelity", fmt.pct(m.agreement), fmt.delta(m.agreement, base.agreement, "pp"),
                    help=f"Predictions equal to the base model's; output cosine {m.output_cosine:.3f}.")
    c[3].metric("Sparsity", fmt.pct(m.sparsity), fmt.delta(m.sparsity, base.sparsity, "pp"), delta_color="off",
                help="Zero weights among the Linear/Conv weights the model has now (units removed by "
                     "structured steps or cuts are not counted here: see 'removed' below).")
    leaf_table_ui(m, base)
    own_metric_ui(ws, m, base)


def _latency_readouts(lat_slot, notes_slot, ws: Workspace, m: Metrics, base: Metrics) -> None:
    """The latency metric and the panel's notes (what the figures are, the speed verdict)."""
    lat = m.latency
    blat = m.base_latency or base.latency  # the base timed together with this model, when shapes differ
    verdict = None
    if lat is not None:
        note = (" Weight-level sparsity leaves dense kernels as fast as before: latency changes only "
                "when shapes change (structured pruning, cuts).")
        beside = timed_beside(blat, lat)  # the two halves of one interleaved timing: only then a ratio
        verdict = speed_verdict(blat, lat) if beside and m.shapes_changed else None
        value, spread = fmt.ms_card(lat.median_ms, lat.iqr_ms)
        ratio = verdict in ("faster", "slower")  # the delta line: the speed-up when there is one, else the spread
        lat_slot.metric("Latency", value, fmt.delta(lat.median_ms, blat.median_ms, "ratio") if ratio else spread,
                        delta_color="inverse" if ratio else "off", delta_arrow="auto" if ratio else "off",
                        help=f"The current model: {lat.how()}."
                             + (f" The base, timed beside it in the same rounds: {fmt.ms(blat.median_ms, blat.iqr_ms)}."
                                if beside else " The base was not timed beside it: no speed comparison.")
                             + note)
    else:
        lat_slot.metric("Latency", "timing…", help="Timed after the page is drawn, interleaved with the base.")
    notes = [f"{len(ws.plan.steps)} step(s) in the plan; figures on the {m.subset} subset ({m.n} examples), "
             "deltas against the base model"]
    if m.precision != "fp32":
        notes.append(f"evaluated and timed under {m.precision} autocast, against the base's fp32 outputs "
                     "(the Model page states what the precision alone costs)")
    if m.peak_mem_bytes is not None:
        notes.append(f"peak GPU memory of this evaluation's forwards: {fmt.nbytes(m.peak_mem_bytes)} above what "
                     "was allocated before it")
    if m.shapes_changed and base.params and m.params != base.params:
        change = "removed" if m.params < base.params else "added"
        notes.append(f"parameters {change}: {fmt.pct(abs(1 - m.params / base.params))} of the base's "
                     f"({fmt.count(base.params)} → {fmt.count(m.params)}; structured steps, cuts and pastes)")
    if lat is not None and not m.shapes_changed and m.sparsity > 0:
        notes.append("latency: masks do not speed up dense kernels; only structural changes do")
    if ws.plan.steps and ws.plan.steps[-1].op == "quantize":
        notes.append("int8 model run by onnxruntime, the base by PyTorch: size is the int8 ONNX file, and the "
                     "latency ratio includes the change of runtime")
    if verdict == "within noise":
        notes.append(f"latency: base and current differ by less than their spread "
                     f"(IQR {fmt.spread(blat.spread)} and {fmt.spread(lat.spread)}): no speed conclusion")
    elif lat is not None and lat.noisy:
        notes.append(f"latency is noisy (IQR {fmt.spread(lat.spread)}): the machine was busy "
                     "while timing; time it again for a figure to rely on")
    with notes_slot.container():
        st.caption(" · ".join(notes) + ".")
        if lat is not None:  # any plan: a timing may be old, or made while the machine was busy
            st.button("Time latency again", key=f"retime_{ws.name}", icon=":material/timer:",
                      on_click=run_action, args=(ws.forget_latency,),
                      help=f"This timing was made {fmt.ago(time.time() - lat.timed_at)}. Drops it (and the base's "
                           "timed beside it) and times base and current again, interleaved, after the page is drawn.")


def per_class_ui(ws: Workspace, m: Metrics, base: Metrics) -> None:
    """Per-class accuracy, base against current; nothing for an embedding (it has no classes:
    the examples whose embedding moved most are under "Show which examples changed")."""
    if m.output == "embedding":
        return
    if m.class_iou is not None:  # label masks: IoU per class (a class absent from these pixels: no bar)
        st.plotly_chart(per_class_figure(ws.evalset.classes, base.class_iou, m.class_iou, title="Per-class IoU",
                                         what="IoU"), width="stretch", key=f"per_class_{ws.name}")
        return
    st.plotly_chart(per_class_figure(ws.evalset.classes, base.per_class_accuracy, m.per_class_accuracy),
                    width="stretch", key=f"per_class_{ws.name}")


def plan_ui(ws: Workspace, key: str) -> None:
    """The plan as a list of steps (each removable), with undo, redo and reset."""
    def after_jobs(fn, *args) -> None:  # a job that ended meanwhile adds its result first: one history
        settle_jobs()
        run_action(fn, *args)

    c = st.columns([1.3, 1.6, 1, 2.1])  # room for the shortcut beside Undo and Redo
    c[0].button("↶ Undo", key=f"{key}_undo", disabled=not ws.can_undo, width="stretch", on_click=after_jobs,
                args=(ws.undo,), shortcut="Mod+Z", help="Back one entry of the history (Ctrl+Z, ⌘Z on a Mac).")
    c[1].button("↷ Redo", key=f"{key}_redo", disabled=not ws.can_redo, width="stretch", on_click=after_jobs,
                args=(ws.redo,), shortcut="Mod+Shift+Z", help="Forward one entry (Ctrl+Shift+Z, ⌘⇧Z on a Mac).")
    c[2].button("Reset", key=f"{key}_reset", disabled=not ws.plan.steps, width="stretch",
                help="Back to the base model (can be undone).", on_click=after_jobs, args=(ws.reset,))
    c[3].caption(f"History {ws.pos + 1} / {len(ws.history)}")
    if not ws.plan.steps:
        st.caption("No steps yet: the model is the base model.")
    for i, text in enumerate(ws.plan.describe()):
        a, b = st.columns([8, 1])
        a.markdown(f"**{i + 1}.** {text}")
        b.button("✕", key=f"{key}_rm_{i}_{ws.plan.key()}", help="Remove this step",
                 on_click=after_jobs, args=(ws.remove_step, i))


def full_eval_ui(ws: Workspace, key: str) -> None:
    """'Evaluate on the full set' next to the quick figures."""
    if st.button("Evaluate on the full set", key=f"{key}_full",
                 help=f"The quick figures use {len(ws.evalset.quick_index)} fixed examples; "
                      f"the full test split has {len(ws.evalset.y)}."):
        with st.spinner("Evaluating on the full test split…"):
            full = run_action(ws.metrics, "full")
            base = run_action(ws.base_metrics, "full")
        if full is not None and base is not None:
            st.session_state[f"{key}_full_result"] = (ws.plan.key(), full, base)
    res = st.session_state.get(f"{key}_full_result")
    if res and res[0] == ws.plan.key():
        _, full, base = res
        st.dataframe(pd.DataFrame([_full_row("base", base, ws.spec.task), _full_row("current", full, ws.spec.task)]),
                     hide_index=True)


def _full_row(model: str, m: Metrics, task: str) -> dict:
    """One row of the full-set table, its columns named for what they measure."""
    if m.output in NEST_KINDS:
        return nest_full_row(model, m, task)
    if m.output == "embedding":
        return {"model": model, m.quality_name(task): fmt.pct(m.accuracy), "output cosine": f"{m.output_cosine:.4f}",
                "relative output error": fmt.pct(m.loss), "examples": m.n}
    return {"model": model, m.quality_name(task): fmt.pct(m.accuracy), "loss (cross-entropy)": f"{m.loss:.3f}",
            "fidelity (same prediction as the base)": fmt.pct(m.agreement), "examples": m.n}


def current_metrics(ws: Workspace, *, provisional: bool = False) -> tuple[Metrics, Metrics]:
    """(current, base) quick metrics; latency is timed after the page is drawn
    (:func:`latency_ui`), so a page is usable before that. With ``provisional``, when the quick
    figures are not cached and a quick forward is slow (``Workspace.quick_is_slow``), the first
    readout of both on the glimpse instead (refine it with :func:`refine_ui`)."""
    if provisional and ws.quick_is_slow():
        with st.spinner(f"First readout on {len(ws.evalset.glimpse()[1])} examples…"):
            got = run_action(ws.first_readout), run_action(ws.base_first_readout)
        if None not in got:
            return got
    with st.spinner(f"Evaluating on the quick subset ({len(ws.evalset.quick_index)} examples)…"):
        base = ws.base_metrics("quick", latency=False)
        m = ws.metrics("quick", latency=False)
    return m, base


def refine_ui(ws: Workspace, m: Metrics, base: Metrics,
              pending: LatencyPending | None) -> tuple[Metrics, Metrics]:
    """A provisional readout refined: the quick figures computed and drawn in place of it (as
    :func:`latency_ui` redraws latency). Returns (current, base) quick figures; a readout that
    was not provisional is returned as it is."""
    if not m.provisional or pending is None:
        return m, base
    base = ws.base_metrics("quick", latency=False)
    got = run_action(ws.metrics, "quick", latency=False)
    if got is None:
        return m, base
    shown = dataclasses.replace(got, latency=None, base_latency=None)  # latency_ui draws the timed figures once
    for draw in pending.redraws:
        draw(shown)
    return got, base


def latency_ui(ws: Workspace, pending: LatencyPending | None) -> None:
    """Time the current model's latency interleaved with the base, with a progress bar in
    the panel's latency place, then redraw every latency figure of the page in place (no
    rerun: a widget the person is moving keeps its value and focus). Any widget touched
    meanwhile interrupts the timing (each progress update yields to Streamlit)."""
    if pending is None:
        return
    batch = ws.evaluator.latency_batch
    bar = pending.slot.progress(0.0, text="Latency: starting…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(1, total), text=f"Latency: round {done} of {total} (base and current "
                                                  f"interleaved, batch {batch})")

    got = run_action(ws.metrics, "quick", latency=True, progress=progress, now=True)
    if got is None or got.latency is None:
        pending.slot.metric("Latency", "–", help="Timing failed: see the message above.")
        return
    for draw in pending.redraws:
        draw(got)


__all__ = ["model_picker_ui", "metrics_panel_ui", "per_class_ui", "plan_ui", "full_eval_ui",
           "current_metrics", "refine_ui", "latency_ui", "LatencyPending"]
