"""One-shot pruning side by side (Prune page): magnitude, Wanda and the SparseGPT-style
reconstruction at one sparsity on the current model, each built as the step "Apply" would add
and measured on the quick subset; "Apply" adds the chosen one to the plan.

Every method touches the same layers (the Linear layers but the output layer) and prunes the
same fraction of each of them, so the rows differ only in which weights go (and, for the
reconstruction, in the update of the weights that stay). The measuring runs as a background
job (``app.jobs.CallJob``) on a snapshot: a copy of the current model, the quick subset, the
base's outputs and the calibration batch (``core.sensitivity.payload_for``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import streamlit as st
import torch

from app.jobs import CallJob, SessionJobs, job_ui
from app.messages import run_action
from core.ground import formatting as fmt
from core.metrics import quality_sums
from core.metrics.cost import nonzero_counts
from core.plan import ApplyContext, Step
from core.prune import LayerOverride, NMSparsity, Prune, Reconstruct
from core.prune.nm import eligible_layers
from core.sensitivity import payload_for
from core.workspace import Workspace

PATTERNS = ("unstructured", "2:4")
METHODS = ("magnitude", "wanda", "reconstruct")
LABELS = {"magnitude": "Magnitude |w|", "wanda": "Wanda |w|·‖x‖", "reconstruct": "Reconstruction (SparseGPT)"}
JOB, RESULTS = "oneshot_job", "oneshot_results"
BATCH = 1024  # examples per forward pass when measuring


@dataclass(frozen=True)
class Row:
    """One method measured: the step it adds, or why it cannot be measured."""

    method: str
    step: Step | None  # None: not available for this pattern (see ``reason``)
    reason: str = ""
    figures: dict | None = None  # quality_sums figures on the quick subset, plus "perplexity" for an LM
    sparsity: float | None = None  # zero weights among the Linear/Conv weights of the result
    seconds: float | None = None  # building the step (scores, masks, weight updates), not the evaluation


def candidate_steps(model: torch.nn.Module, sparsity: float, pattern: str) -> list[Row]:
    """The step each method adds at ``sparsity`` ("unstructured") or as a 2:4 pattern, on the
    layers the reconstruction touches: every Linear layer but the output layer.

    Raises:
        ValueError: an unknown pattern (the panel offers :data:`PATTERNS` only).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    m = 4 if pattern == "2:4" else 1
    touched = list(eligible_layers(model, m))
    if not touched:
        why = "the model has no Linear layer besides its output layer" + (
            " with an input width divisible by 4" if m > 1 else "")
        return [Row(k, None, why) for k in METHODS]
    if pattern == "2:4":
        return [Row("magnitude", NMSparsity(2, 4)),
                Row("wanda", None, "no 2:4 Wanda step: the N:M step scores by |w| only"),
                Row("reconstruct", Reconstruct(pattern=pattern))]
    layers = tuple(LayerOverride(n, sparsity=sparsity) for n in touched)
    return [Row("magnitude", Prune(criterion="l1", granularity="weight", layers=layers)),
            Row("wanda", Prune(criterion="wanda", granularity="weight", layers=layers)),
            Row("reconstruct", Reconstruct(sparsity=sparsity))]


def measure(payload, rows: list[Row], progress=None, should_stop=None) -> list[Row]:
    """Build each row's step on the payload's model (with the payload's calibration batch) and
    measure the result on its subset, as the evaluator does (``quality_sums``). Reads only
    ``payload`` and ``rows``: it runs in a background thread. Stops between rows when
    ``should_stop()`` says so (the rows not reached keep no figures)."""
    out, todo = [], [r for r in rows if r.step is not None]
    done = 0
    for r in rows:
        if r.step is None or (should_stop is not None and should_stop()):
            out.append(r)
            continue
        if progress is not None:
            progress(done, len(todo), LABELS[r.method])
        ctx = ApplyContext(payload.model_name, payload.x.device)
        ctx.use_calibration(payload.seed, payload.calibration)
        t0 = time.perf_counter()
        model, _ = r.step.build(payload.source, ctx)
        seconds = time.perf_counter() - t0
        with torch.inference_mode():
            y = torch.cat([model(payload.x[i:i + BATCH]).float() for i in range(0, len(payload.x), BATCH)])
        fig = quality_sums(y, payload.base_out, payload.y, payload.task, payload.num_classes,
                           payload.output).figures()
        if payload.task == "language-model":
            fig["perplexity"] = math.exp(min(fig["loss"], 700.0))
        out.append(Row(r.method, r.step, r.reason, fig, nonzero_counts(model)[2], seconds))
        done += 1
    if progress is not None:
        progress(done, len(todo), "done")
    return out


def table(rows: list[Row], quality: str, task: str) -> list[dict]:
    """The rows as a table: the headline figure (``quality``, what ``Metrics.quality_name``
    says), perplexity or loss, the share of zero weights and the build time, each with its unit."""
    lm = task == "language-model"
    second = "perplexity (exp loss)" if lm else "loss (cross-entropy, nats)"
    out = []
    for r in rows:
        f = r.figures
        out.append({"method": LABELS[r.method],
                    f"{quality}, quick subset": fmt.pct(f["accuracy"]) if f else "–",
                    second: (f"{f['perplexity']:.4g}" if lm else f"{f['loss']:.3f}") if f else "–",
                    "zero weights (% of Linear/Conv)": fmt.pct(r.sparsity) if r.sparsity is not None else "–",
                    "build time (s, one run)": f"{r.seconds:.2f}" if r.seconds is not None else "–"})
    return out


def _start(ws: Workspace, sparsity: float, pattern: str) -> None:
    """Take the snapshot here (the page's thread) and start measuring in the background."""
    key = (ws.name, ws.plan.key(), sparsity, pattern)
    payload = run_action(payload_for, ws.float_model, ws.evaluator, ws.ctx, "quick", 0)
    if payload is None:
        return
    rows = candidate_steps(payload.source, sparsity, pattern)

    def work(progress, should_stop):
        return measure(payload, rows, progress, should_stop)

    def done(result: list[Row]) -> tuple[str, str]:
        st.session_state[RESULTS] = (key, result)
        n = sum(r.figures is not None for r in result)
        return "success", f"One-shot pruning: {n} method(s) measured at {_amount(sparsity, pattern)}."

    st.session_state[JOB] = CallJob(work, f"One-shot pruning at {_amount(sparsity, pattern)}", done,
                                    SessionJobs.of_session())


def _amount(sparsity: float, pattern: str) -> str:
    return "a 2:4 pattern (50% of each group of 4)" if pattern == "2:4" else f"sparsity {fmt.pct(sparsity)}"


def oneshot_panel_ui(ws: Workspace) -> None:
    """The panel in its expander (the Prune page calls this)."""
    with st.expander("One-shot pruning: magnitude, Wanda and reconstruction side by side", key="oneshot_open",
                     on_change="rerun"):
        oneshot_ui(ws)


def oneshot_ui(ws: Workspace) -> None:
    """The panel: pattern and sparsity, "Measure" (a background job), the table of the last
    measurement on this plan, and an "Apply" per measured method."""
    ss = st.session_state
    st.caption("Magnitude, Wanda and the SparseGPT-style reconstruction at one sparsity on the current model: each "
               "prunes the same fraction of every Linear layer but the output layer, measured on the quick subset. "
               "Apply adds that step to the plan.")
    c = st.columns([1, 2, 1], vertical_alignment="bottom")
    pattern = c[0].radio("Pattern", PATTERNS, key="oneshot_pattern", horizontal=True,
                         help="unstructured: any weights; 2:4: two of every four consecutive input weights.")
    sparsity = c[1].slider("Sparsity (fraction of each layer's weights pruned)", 0.05, 0.95, 0.5, 0.05,
                           key="oneshot_sparsity", format="%.2f", disabled=pattern == "2:4")
    sparsity = 0.5 if pattern == "2:4" else float(sparsity)
    offered = candidate_steps(ws.float_model, sparsity, pattern)
    if not any(r.step is not None for r in offered):
        st.info(f"Nothing to compare on this model: {offered[0].reason}.")
        return
    running = job_ui(JOB)
    c[2].button("Measure", key="oneshot_measure", disabled=running, width="stretch", on_click=_start,
                args=(ws, sparsity, pattern), help="Builds each method's step and evaluates it (in the background).")
    got = ss.get(RESULTS)
    if got is None or running:
        return
    (name, plan, s, p), rows = got
    if (name, plan) != (ws.name, ws.plan.key()):
        st.caption("The last measurement was on another plan; measure again.")
        return
    quality = ws.metrics("quick", latency=False).quality_name(ws.spec.task)
    st.markdown(f"**Measured at {_amount(s, p)}** on the current plan's model")
    st.dataframe(table(rows, quality, ws.spec.task), hide_index=True, width="stretch")
    for r in rows:
        st.caption(f"**{LABELS[r.method]}**: " + (f"not measured: {r.reason}." if r.figures is None else
                                                  f"{r.step.describe()}."))
    cols = st.columns(len(rows))
    for col, r in zip(cols, rows):
        col.button(f"Apply {r.method}", key=f"oneshot_apply_{r.method}", disabled=r.figures is None,
                   on_click=_apply, args=(ws, r.step), width="stretch",
                   help="Adds this method's step (described above) to the plan; undo takes it away.")


def _apply(ws: Workspace, step: Step | None) -> None:
    """Add ``step``; a Prune step's criterion becomes the page's, so the page's controls edit it
    as it is (else the page would switch it to the criterion shown)."""
    if step is None:
        return
    if isinstance(step, Prune):
        st.session_state["prune_granularity"], st.session_state["prune_criterion"] = step.granularity, step.criterion
    run_action(ws.add_step, step, success=f"Added: {step.describe()}.")
