"""Readouts of a model whose output is not one (N, K) tensor (issue 24): a dense class map
("dense", a segmenter's) or any nest of outputs ("nest"), judged leaf by leaf against the base's
(``core.metrics.nest``); a segmenter with label masks by its mean IoU and pixel accuracy
(``core.metrics.segmentation``)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.ground import formatting as fmt
from core.metrics import Metrics


def nest_quality_cards(cols, m: Metrics, base: Metrics, task: str) -> None:
    """The first three quality cards of a "dense" / "nest" model: its headline, the output
    cosine (or the worst leaf's), the relative output error."""
    over = f"the {m.n} examples of the {m.subset} eval subset"
    leaves = list(m.leaf_figures or {})
    if m.class_iou is not None:  # label masks (task segmentation)
        present = sum(v is not None for v in m.class_iou)
        cols[0].metric("Mean IoU", fmt.pct(m.accuracy), fmt.delta(m.accuracy, base.accuracy, "pp"),
                       help=f"Intersection over union of the predicted and labelled pixels of each class (argmax of "
                            f"the class map), mean over the {present} classes labelled or predicted among the "
                            f"pixels of {over} (pixels labelled 255 left out; torchmetrics' confusion matrix).")
        cols[1].metric("Pixel accuracy", fmt.pct(m.pixel_accuracy), fmt.delta(m.pixel_accuracy, base.pixel_accuracy,
                                                                              "pp"),
                       help=f"Share of the labelled pixels of {over} whose most likely class is their label.")
    elif m.output == "dense":
        cols[0].metric("Pixel agreement", fmt.pct(m.accuracy), fmt.delta(m.accuracy, base.accuracy, "pp"),
                       help=f"Share of pixels whose most likely class equals the base model's, on the class map "
                            f"of this segmenter's output, mean over {over}.")
        cols[1].metric("Output cosine", f"{m.output_cosine:.4f}", fmt.delta(m.output_cosine, base.output_cosine, "num"),
                       help=f"Cosine between each output leaf ({', '.join(leaves)}) and the base's same leaf, per "
                            f"example, mean over the leaves and over {over} (1 = the same direction).")
    else:
        cols[0].metric(f"Output cosine ({len(leaves)} leaves)", f"{m.accuracy:.4f}",
                       fmt.delta(m.accuracy, base.accuracy, "num"),
                       help=f"{m.quality_name(task)}: per example the cosine between each output leaf and the base "
                            f"model's same leaf, mean over the leaves and over {over}. The headline automatic plans "
                            "and sensitivity read (in points: 0.01 of cosine = 1 point).")
        worst = min(leaves, key=lambda k: m.leaf_figures[k]["cosine"]) if leaves else None
        if worst is not None:
            w, bw = m.leaf_figures[worst]["cosine"], (base.leaf_figures or {}).get(worst, {}).get("cosine")
            cols[1].metric(f"Worst leaf: {worst}", f"{w:.4f}", fmt.delta(w, bw, "num") if bw is not None else None,
                           help="The output leaf whose cosine with the base's moved most (all leaves: the table "
                                "below).")
    cols[2].metric("Output error", fmt.pct(m.output_error), fmt.delta(m.output_error, base.output_error, "pp"),
                   delta_color="inverse", help=f"Relative error ‖current − base‖ / ‖base‖ per example and leaf, mean "
                                               f"over the leaves and over {over}.")


def leaf_table_ui(m: Metrics, base: Metrics) -> None:
    """Every judged output leaf, its figures now and the base's."""
    if not m.leaf_figures:
        return
    rows = []
    for k, f in m.leaf_figures.items():
        row = {"leaf": k, "cosine with the base": round(f["cosine"], 4),
               "relative error": fmt.pct(f["relative_error"])}
        if "pixel_agreement" in f:
            row["pixel agreement (class map)"] = fmt.pct(f["pixel_agreement"])
        rows.append(row)
    with st.expander(f"Output leaves judged ({len(rows)})", expanded=False):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption(f"Each leaf of the model's output against the base's same leaf, per example (flattened), mean over "
                   f"the {m.n} examples of the {m.subset} subset. The base against itself: cosine 1, error 0%.")


def own_metric_ui(ws, m: Metrics, base: Metrics) -> None:
    """The person's own metric (``prunescope register --metric``): each figure it returned, now
    and the base's, on the same subset."""
    own, was = m.extra.get("own"), base.extra.get("own") or {}
    if not own:
        return
    path = ws.evaluator.metric
    targets = "the labels" if ws.spec.task != "fidelity" else "the base model's outputs"
    cols = st.columns(min(4, len(own)))
    for i, (k, v) in enumerate(own.items()):
        cols[i % len(cols)].metric(k, f"{v:.4g}", fmt.delta(v, was[k], "num") if k in was else None,
                                   delta_color="off",
                                   help=f"Your metric {path}(outputs, targets) on the {m.n} examples of the {m.subset} "
                                        f"subset, targets {targets}; the change is against the base's figure.")
    st.caption(f"Your metric: `{path}` (from your environment), on the same examples as the figures above.")


def nest_full_row(model: str, m: Metrics, task: str) -> dict:
    """One row of the full-set table for a "dense" / "nest" model."""
    head = fmt.pct(m.accuracy) if m.output == "dense" else f"{m.accuracy:.4f}"
    row = {"model": model, m.quality_name(task): head}
    if m.pixel_accuracy is not None:
        row["pixel accuracy"] = fmt.pct(m.pixel_accuracy)
    return {**row, "output cosine": f"{m.output_cosine:.4f}", "relative output error": fmt.pct(m.output_error),
            "examples": m.n}


__all__ = ["nest_quality_cards", "leaf_table_ui", "nest_full_row", "own_metric_ui"]
