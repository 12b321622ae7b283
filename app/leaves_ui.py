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
    if m.output == "detection":
        detection_cards(cols, m, base, over)
        return
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
        cols[0].metric(f"Output cosine ({len(leaves)} {'leaf' if len(leaves) == 1 else 'leaves'})", f"{m.accuracy:.4f}",
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


def _boxes_words(m: Metrics) -> str:
    return (f"a box scored {m.extra.get('score_threshold', 0.5):g} or more; found again: a box of the same label "
            f"with IoU >= {m.extra.get('iou', 0.5):g}, each matched once")


def detection_cards(cols, m: Metrics, base: Metrics, over: str) -> None:
    """A detector's cards: box recall (the headline), box precision, 1 - F1 (its output error); with
    labelled boxes, mAP@0.5:0.95 (the headline), mAP@0.5 and box recall."""
    f, bf = m.leaf_figures["detections"], (base.leaf_figures or {}).get("detections", {})
    recall, base_recall = f["box_recall"], bf.get("box_recall")
    if m.map50 is not None:  # labelled boxes: COCO's mAP
        coco = (f"COCO's average precision (torchmetrics on pycocotools) of every box the model gives, against the "
                f"labelled boxes of {over}")
        cols[0].metric("mAP@0.5:0.95", fmt.pct(m.accuracy), fmt.delta(m.accuracy, base.accuracy, "pp"),
                       help=f"{coco}: mean over IoU thresholds 0.5 to 0.95 and over the classes. The headline "
                            "automatic plans and sensitivity read.")
        cols[1].metric("mAP@0.5", fmt.pct(m.map50), fmt.delta(m.map50, base.map50, "pp"),
                       help=f"{coco}, at IoU 0.5.")
        cols[2].metric("Box recall", fmt.pct(recall), fmt.delta(recall, base_recall, "pp") if bf else None,
                       help=f"Share of the base model's boxes this model finds again ({_boxes_words(m)}), per image, "
                            f"mean over {over}. Box precision {fmt.pct(f['box_precision'])}.")
        return
    cols[0].metric("Box recall", fmt.pct(m.accuracy), fmt.delta(m.accuracy, base.accuracy, "pp"),
                   help=f"Share of the base model's boxes this model finds again ({_boxes_words(m)}), per image, mean "
                        f"over {over} (an image where the base finds nothing counts 100%). The headline automatic "
                        "plans and sensitivity read.")
    cols[1].metric("Box precision", fmt.pct(f["box_precision"]),
                   fmt.delta(f["box_precision"], bf.get("box_precision"), "pp") if bf else None,
                   help=f"Share of this model's boxes that match a box of the base ({_boxes_words(m)}), per image, "
                        f"mean over {over}. Boxes per image: {f['boxes']:.1f} now, {f['base_boxes']:.1f} the base's.")
    cols[2].metric("Boxes unmatched (1 − F1)", fmt.pct(m.output_error),
                   fmt.delta(m.output_error, base.output_error, "pp"), delta_color="inverse",
                   help=f"One minus the F1 of box recall and precision per image, mean over {over}: 0% is the base's "
                        "boxes exactly and no others.")


def leaf_table_ui(m: Metrics, base: Metrics) -> None:
    """Every judged output leaf, its figures now and the base's (a detector: its boxes)."""
    if not m.leaf_figures:
        return
    if m.output == "detection":
        f, bf = m.leaf_figures["detections"], (base.leaf_figures or {}).get("detections", {})
        rows = [{"model": "current", "boxes per image": round(f["boxes"], 1), "box recall": fmt.pct(f["box_recall"]),
                 "box precision": fmt.pct(f["box_precision"])},
                {"model": "base", "boxes per image": round(bf.get("base_boxes", f["base_boxes"]), 1),
                 "box recall": "100.0%", "box precision": "100.0%"}]
        with st.expander("Boxes against the base's", expanded=False):
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
            st.caption(f"Per image, mean over the {m.n} images of the {m.subset} subset; {_boxes_words(m)}.")
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
    """One row of the full-set table for a "dense" / "nest" / "detection" model."""
    if m.output == "detection":
        f = m.leaf_figures["detections"]
        labelled = {"mAP@0.5:0.95": fmt.pct(m.accuracy), "mAP@0.5": fmt.pct(m.map50)} if m.map50 is not None else {}
        return {"model": model, **labelled, "box recall against the base": fmt.pct(f["box_recall"]),
                "box precision": fmt.pct(f["box_precision"]), "boxes per image": round(f["boxes"], 1),
                "examples": m.n}
    head = fmt.pct(m.accuracy) if m.output == "dense" else f"{m.accuracy:.4f}"
    row = {"model": model, m.quality_name(task): head}
    if m.pixel_accuracy is not None:
        row["pixel accuracy"] = fmt.pct(m.pixel_accuracy)
    return {**row, "output cosine": f"{m.output_cosine:.4f}", "relative output error": fmt.pct(m.output_error),
            "examples": m.n}


__all__ = ["nest_quality_cards", "detection_cards", "leaf_table_ui", "nest_full_row", "own_metric_ui"]
