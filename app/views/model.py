"""Model: the model card, its layers, the eval set, device and latency settings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.graph_diff_ui import current_diff
from app.messages import show_flashes
from app.netron_ui import netron_ui
from app.open_ui import open_model_ui, recent_work_ui
from app.session import get_workspace
from core.ground import formatting as fmt
from core.ground.device import PRECISIONS, available_devices
from core.metrics import leaf_rows
from core.sources.datasets import IGNORE, strata
from core.sources.entries import has_random_weights
from core.viz.graphdiff import (
    STATUS_ORDER,
    STATUS_STYLE,
    diff_rows,
    graph_diff_figure,
    latency_overlay_figure,
    status_counts,
)
from core.viz.report import workspace_report_html
from core.viz.samples import channel_range, sample_figure, to_pixels

LATENCY_BATCHES = [1, 8, 32, 64, 128, 256]
DIFF_TAB = "Diff (base → current)"


def settings_ui(dev_col, batch_col, prec_col) -> None:
    """Device, latency batch and evaluation precision. The choices live in session keys of
    their own ("device", "latency_batch", "precision"): a widget's own key is dropped when
    another page is shown."""
    ss = st.session_state

    def keep(src: str, dst: str):
        return lambda: ss.__setitem__(dst, ss[src])

    devices = available_devices()
    ss["device_choice"] = ss.get("device") if ss.get("device") in devices else devices[0]
    dev_col.selectbox("Device", devices, key="device_choice", on_change=keep("device_choice", "device"),
                      help="Where evaluation and latency run: cuda, else mps, else cpu.")
    ss["latency_batch_choice"] = ss.get("latency_batch", 64)
    batch_col.selectbox("Latency batch size", LATENCY_BATCHES, key="latency_batch_choice",
                        on_change=keep("latency_batch_choice", "latency_batch"),
                        help="Batch size of every latency measurement; base and current are timed at it.")
    ss["precision_choice"] = ss.get("precision", "fp32")
    prec_col.selectbox("Evaluation precision", list(PRECISIONS), key="precision_choice",
                       on_change=keep("precision_choice", "precision"),
                       help="fp32, or bf16 / fp16 autocast: every model is evaluated and timed under it and "
                            "compared with the base's fp32 outputs. The base's agreement below states what "
                            "the precision itself costs.")


def layers_ui(ws) -> None:
    """The current plan's model, one row per leaf module (counted once per model: the
    apply context's memo)."""
    cur = ws.float_model
    with st.spinner("Counting MACs per layer…"):
        rows = leaf_rows(ws.base, cur, ws.evalset.x[:1], memo=ws.ctx.memo(cur))
    st.caption(f"Leaf modules of the current plan's model ({len(ws.plan.steps)} step(s)); "
               "sparsity = zero parameters / parameters; base MACs for comparison.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "params": st.column_config.NumberColumn("params", format="%d"),
        "MACs": st.column_config.NumberColumn("MACs", format="%d"),
        "base MACs": st.column_config.NumberColumn("base MACs", format="%d"),
        "sparsity": st.column_config.ProgressColumn("sparsity", min_value=0.0, max_value=1.0, format="percent"),
    })


def body_ui(ws):
    """The page's one place below the title. Streamlit leaves a previous run's elements on
    screen until this run draws over them, so after a switch of model (or device) the place is
    first given a spinner, at once, while the new model's base figures are measured: the new
    title never stands above the previous model's figures. Returns the place to draw into."""
    ss = st.session_state
    body = st.empty()
    drawn_for = (ws.name, str(ws.device))
    if ss.get("_model_page_for") != drawn_for:
        # the spinner is an element put in the place itself: it takes the previous figures away at
        # once (a container put over the previous container would keep them until drawn over)
        with body, st.spinner(f"Loading {ws.name}: measuring its base figures…"):
            ws.base_metrics("quick")
        ss["_model_page_for"] = drawn_for
    return body.container()


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### Model · {ws.name}")
    with body_ui(ws):
        model_ui(ws)


def model_ui(ws) -> None:
    """Everything below the title: opening models, the base's figures, settings and tabs."""
    spec = ws.spec
    with st.expander("Open your own model", icon=":material/upload:"):
        open_model_ui()
    with st.expander("Recent work", icon=":material/history:"):
        recent_work_ui()
    if has_random_weights(spec):
        st.warning("This model has **random weights** (none were given): its accuracy and every figure below are "
                   "those of an untrained network.")
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    c1.markdown(spec.description or "")
    settings_ui(c2, c3, c4)
    m = ws.base_metrics("quick")
    st.caption("The base model, before any step (the layer table below shows the current plan's model).")
    if m.precision != "fp32":
        kept = (f"keeps {fmt.pct(m.accuracy)} of its fp32 nearest neighbours (recall@{m.recall_k})"
                if m.output == "embedding" else f"agrees with its own fp32 predictions on {fmt.pct(m.agreement)}")
        st.info(f"**Evaluation under {m.precision} autocast.** What the precision alone costs: the base run under "
                f"{m.precision} {kept} on the quick subset ({m.n} examples), output cosine {m.output_cosine:.4f}. "
                f"Every figure on every page is measured under {m.precision} and compared with the fp32 base.")
    k = st.columns(5)
    k[0].metric("Parameters (base)", fmt.count(m.params), help=f"{m.params:,} parameters")
    k[1].metric("MACs / example (base)", fmt.count(m.macs))
    k[2].metric("Size (base)", fmt.nbytes(m.size_bytes), help="State dict as safetensors.")
    headline_card(k[3], spec, m)
    if m.latency:
        value, spread = fmt.ms_card(m.latency.median_ms, m.latency.iqr_ms)
        k[4].metric("Latency (base)", value, spread, delta_color="off", delta_arrow="off",
                    help=f"{m.latency.how()} (beside a model of its architecture: the base the Prune page "
                         "compares weight-level plans with). Time it again from the Prune page.")

    tab_layers, tab_card, tab_data, tab_graph, tab_diff = st.tabs(
        ["Layers", "Card", "Eval set", "Graph (Netron)", DIFF_TAB], key="model_tabs", on_change="rerun")
    with tab_diff:
        if tab_diff.open:  # the diff is built only when its tab is shown
            diff_ui(ws)
    with tab_layers:
        layers_ui(ws)
    with tab_card:
        text = spec.card_text()
        st.markdown(text if text else "_This model has no card._")
    with tab_data:
        eval_set_ui(ws)
    with tab_graph:
        n = len(ws.plan.steps)
        st.caption(f"The current model is the plan's ({n} step(s)); the base is the model as loaded. "
                   "A graph shows the model as it was when you clicked; it hides when the plan changes.")
        cur, base = st.columns(2)
        with cur:
            netron_ui(ws.model, key="model_graph_current", label="View current model graph",
                      example=ws.evalset.x[:1], identity=f"plan:{ws.name}:{ws.plan.key()}",
                      help="The graph of the model after this plan's steps (removed units and cut blocks "
                           "are gone from it).")
        with base:
            netron_ui(ws.base, key="model_graph", label="View base model graph", example=ws.evalset.x[:1],
                      identity=f"base:{ws.name}")


def headline_card(col, spec, m) -> None:
    """The base's headline figure on the quick subset, named for what the model is judged by."""
    if m.output == "embedding":
        col.metric("Task", "embedding", help=f"Its output is an embedding: a pruned model is judged by its output "
                                             f"cosine with this base and the neighbour recall@{m.recall_k} of the "
                                             f"base's neighbours on the quick subset ({m.n} examples).")
    elif m.map50 is not None:
        col.metric("mAP (base, quick)", fmt.pct(m.accuracy),
                   help=f"COCO's mAP@0.5:0.95 against the labelled boxes of the quick subset ({m.n} images); "
                        f"mAP@0.5 {fmt.pct(m.map50)}.")
    elif m.output == "detection":
        f = m.leaf_figures["detections"]
        col.metric("Boxes / image (base, quick)", f"{f['base_boxes']:.1f}",
                   help=f"The base detector's boxes scored {m.extra['score_threshold']:g} or more, per image, mean "
                        f"over the quick subset ({m.n} images). A pruned detector is judged by the share of these "
                        f"it finds again (same label, IoU >= {m.extra['iou']:g}).")
    elif spec.task == "fidelity":
        col.metric("Task", "fidelity", help=f"No labels: a pruned model is judged by its agreement with this base's "
                                            f"predictions on the quick subset ({m.n} examples).")
    elif spec.task == "language-model":
        col.metric("Perplexity (base, quick)", f"{m.extra.get('perplexity', float('nan')):.4g}",
                   help=f"exp(next-token loss) on the quick subset ({m.n} windows); next-token accuracy "
                        f"{fmt.pct(m.accuracy)}.")
    elif m.class_iou is not None:
        col.metric("Mean IoU (base, quick)", fmt.pct(m.accuracy),
                   help=f"Of the class map against the label masks, over all the pixels of the quick subset "
                        f"({m.n} images); pixel accuracy {fmt.pct(m.pixel_accuracy)}.")
    else:
        col.metric("Accuracy (base, quick)", fmt.pct(m.accuracy),
                   help=f"Top-1 on the quick subset ({m.n} examples).")


def eval_set_ui(ws) -> None:
    """The eval set: its size, one image of each of the first classes, examples per class (for
    label masks: each image's main class, and the labelled pixels per class)."""
    ev = ws.evalset
    st.markdown(f"**{ev.name}**: {len(ev.y)} test examples ({len(ev.quick_index)} in the quick subset), "
                f"{ev.num_classes} classes, input {tuple(ev.x.shape[1:])}.")
    masks = ev.y.dim() > 1
    y = (strata(ev.y) if masks else ev.y).cpu().numpy()  # one class per example (a mask's main class)
    if ev.kind == "image" and ev.x.dim() == 4:
        first = [int(np.nonzero(y == c)[0][0]) for c in range(ev.num_classes) if (y == c).any()]
        first = first[:10]  # one image of each of the first ten classes
        pixels = to_pixels(ev.x[first].cpu().numpy(), *channel_range(ev.x))  # as the files show them
        titles = [ev.classes[int(c)] + (" (main)" if masks else "") for c in y[first]]
        st.plotly_chart(sample_figure(pixels, titles), width="stretch", key="samples",
                        config={"displayModeBar": False})  # over the labels
    rows = {"examples (by main class)" if masks else "examples": np.bincount(y, minlength=ev.num_classes)}
    if masks:
        labelled = ev.y[ev.y != IGNORE].long().cpu().numpy()
        rows["labelled pixels"] = np.bincount(labelled, minlength=ev.num_classes)
    st.dataframe(pd.DataFrame([r[:ev.num_classes] for r in rows.values()], columns=ev.classes, index=list(rows)),
                 width="stretch")


def diff_ui(ws) -> None:
    """The Model page's diff tab: status counts, the merged graph (click a module for its figures),
    the table of modules, the latency profile and the HTML report."""
    if not ws.plan.steps:
        st.info("The plan has no steps yet: the current model is the base, so there is nothing to compare. "
                "Add a step on the Prune or Surgery page and come back.")
        return
    diff = current_diff(ws)
    if diff is None:
        return
    counts = status_counts(diff)
    cols = st.columns(len(STATUS_ORDER))
    for col, status in zip(cols, STATUS_ORDER):
        col.metric(f"{status} modules", counts[status], help=f"Leaf modules {status}: {STATUS_STYLE[status][2]}.")
    edges = "a torch.fx trace" if diff.edges_from == "fx" else "the order a forward runs them"
    st.caption(f"{sum(counts.values())} leaf modules of base and current, one merged graph in execution order, grouped "
               f"by container (columns); edges from {edges}. Marker size grows with parameters. Click a module "
               "for its figures.")
    event = st.plotly_chart(graph_diff_figure(diff), width="stretch",
                            key="diff_graph", on_select="rerun", selection_mode="points")
    points = event.selection.points if event and event.selection else []
    if points and points[0].get("customdata"):
        st.session_state["diff_node"] = points[0]["customdata"]
    node_ui(diff, st.session_state.get("diff_node"))
    diff_table_ui(diff)
    profile_ui(ws, diff)
    st.download_button("Download the plan report (HTML)", data=lambda: workspace_report_html(ws, current_diff(ws)),
                       file_name=f"{ws.name}.report.html", mime="text/html", key="dl_report_model",
                       on_click="ignore", icon=":material/download:",
                       help="One self-contained page (no network): metrics before / after, this diff, the weight "
                            "histograms at their thresholds, the latency overlay when profiled, and the recipe.")


def node_ui(diff, name: str | None) -> None:
    """One module's figures, base and current, below the graph."""
    node = next((n for n in diff.nodes if n.name == name), None)
    if node is None:
        st.caption("Click a module in the graph for its figures before and after.")
        return
    b, a = node.before, node.after
    st.markdown(f"**{node.name or '(model)'}** · {node.kind} · **{node.status}**"
                + (f" by step {', '.join(str(s + 1) for s in node.steps)}" if node.steps else ""))
    rows = {"parameters": ("params", "{:,}"), "MACs / example": ("macs", "{:,}"),
            "sparsity (zero params)": ("sparsity", "{:.1%}"), "time / batch (ms)": ("latency_ms", "{:.3g}"),
            "share of module time": ("latency_share", "{:.1%}")}
    table = {what: [f.format(getattr(side, attr)) if side is not None and getattr(side, attr) is not None else "–"
                    for side in (b, a)] for what, (attr, f) in rows.items()}
    for dim, (w0, w1) in node.widths.items():
        table[dim] = [str(w0), str(w1)]
    if node.removed_importance is not None:
        table["importance of removed units (mean score)"] = [f"{node.removed_importance:.3g}", "–"]
    st.dataframe(pd.DataFrame(table, index=["base", "current"]).T, width="stretch")


def diff_table_ui(diff) -> None:
    """Every module, changed ones first, filtered by status."""
    shown = st.multiselect("Show statuses", list(STATUS_ORDER), default=list(STATUS_ORDER), key="diff_statuses")
    st.dataframe(pd.DataFrame(diff_rows(diff, shown)), hide_index=True, width="stretch", column_config={
        "sparsity before": st.column_config.NumberColumn(format="percent"),
        "sparsity after": st.column_config.NumberColumn(format="percent"),
        "ms before": st.column_config.NumberColumn("ms / batch before", format="%.3g"),
        "ms after": st.column_config.NumberColumn("ms / batch after", format="%.3g"),
    })


def profile_ui(ws, diff) -> None:
    """The latency profile of base and current per module: a button, then the overlay."""
    if st.button("Profile latency (base and current)", key="diff_profile", icon=":material/timer:",
                 help="Times every module of the base and of the current model with torch.profiler, on the same "
                      "batch and threads (the latency batch size above)."):
        diff = current_diff(ws, profile=True) or diff
    if diff.profiled:
        st.plotly_chart(latency_overlay_figure(diff), width="stretch", key="diff_latency")
        st.caption(f"How: {diff.profile_note}. A module's time is its own (children excluded); MACs that drop "
                   "without time dropping point at memory-bound or overhead-bound modules.")
    else:
        st.caption("Not profiled yet: the button times every module of the base and of the current model "
                   f"(batch {st.session_state.get('latency_batch', 64)}, this machine's threads).")


page()
