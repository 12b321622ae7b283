"""Explain views shared by pages: the gallery of changed predictions, the cache of
per-plan results, and the compact "what changed" panel of the Prune and Surgery pages."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app.messages import run_action
from core.errors import FOREIGN_ERRORS, PrunescopeError
from core.ground import formatting as fmt
from core.workspace import Workspace

CARDS = 24  # changed examples shown at once


def cached(fn, ws, *args, **kwargs):
    """``fn(ws, *args, **kwargs)`` (a function of the workspace, such as
    ``Workspace.changes``) computed once per plan: a click elsewhere on the page (a class
    filter, another unit) does not run the models again. Kept in the apply context's memo
    of the current plan's model (core's one cache of facts about a model), so it goes
    when that model does."""
    memo = ws.ctx.memo(ws.model)
    key = ("explain", fn.__name__, args, tuple(sorted(kwargs.items())))
    if key not in memo:
        memo[key] = fn(ws, *args, **kwargs)
    return memo[key]


def image(x, field: dict | None = None) -> np.ndarray | None:
    """An example as an 8-bit picture (grey or RGB), enlarged, or None when it is not one;
    with ``field`` (rows and columns of a receptive field) outlined in red."""
    a = x.detach().float().cpu().numpy()
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        return None
    a = (a - a.min()) / max(1e-8, float(a.max() - a.min()))
    a = (255 * a).astype(np.uint8)
    scale = max(1, 96 // a.shape[1])
    a = np.kron(a, np.ones((1, scale, scale), dtype=np.uint8))
    img = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    if not field or field.get("top") is None:
        return img
    rgb = np.stack([img] * 3, -1) if img.ndim == 2 else img.copy()
    t, b = field["top"] * scale, (field["bottom"] + 1) * scale - 1
    left, r = field["left"] * scale, (field["right"] + 1) * scale - 1
    red = np.array([228, 87, 46], dtype=np.uint8)
    for w in range(2):  # a 2-pixel outline
        rgb[t + w if t + w <= b else t, left:r + 1] = red
        rgb[max(t, b - w), left:r + 1] = red
        rgb[t:b + 1, left + w if left + w <= r else left] = red
        rgb[t:b + 1, max(left, r - w)] = red
    return rgb


def class_map_image(m, size: int = 144) -> np.ndarray:
    """A class map (H, W of class indices) as an RGB picture about ``size`` pixels wide: a colour
    per class (plotly's Alphabet palette, repeating past 26 classes), black where not judged."""
    from plotly.colors import qualitative

    from core.sources.datasets import IGNORE

    palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in qualitative.Alphabet], dtype=np.uint8)
    a = m.detach().cpu().numpy().astype(np.int64)
    rgb = palette[a % len(palette)]
    rgb[a == IGNORE] = 0
    scale = max(1, size // max(1, a.shape[1]))
    return np.kron(rgb, np.ones((scale, scale, 1), dtype=np.uint8))


@st.cache_resource(show_spinner=False, max_entries=4)
def _tokenizer(folder: str):
    from core.sources.hf import load_tokenizer

    return load_tokenizer(folder)


def example_text(ws, x) -> str | None:
    """A text example (token ids) as the line of text it was read from (as the person gave
    it); else (a language model's window) its tokens decoded with the model's tokenizer; None
    when the example is not text or neither is known."""
    folder = ws.spec.extra.get("tokenizer")
    if ws.evalset.kind != "text":
        return None
    from core.sources.hf import original_text

    line = original_text(x)
    if line is not None or not folder:
        return line
    try:
        return _tokenizer(folder).decode(x.tolist(), skip_special_tokens=True).strip()
    except (PrunescopeError, *FOREIGN_ERRORS):  # no readable tokenizer, or it cannot decode these ids:
        # a view, so the token ids are shown instead
        return None


def cards_ui(ws, cards: list[tuple[int, str, dict | None]], width: int = 96, per_row: int = 6) -> None:
    """Examples of the test split as cards, ``per_row`` a row: ``(index, caption, field)``;
    an image is drawn (with ``field``, a receptive field, outlined), a text example as its
    words, any other example as its caption and its first values (a row of a table)."""
    text_cards = ws.evalset.kind == "text"
    cols = st.columns(2 if text_cards else per_row)
    for i, (index, cap, field) in enumerate(cards):
        x = ws.evalset.x[index]
        img = image(x, field) if not text_cards else None
        text = example_text(ws, x) if text_cards else None
        with cols[i % len(cols)]:
            if text is not None:
                st.caption(f"{cap}\n\n“{text[:300]}{'…' if len(text) > 300 else ''}”")
            elif img is not None:
                st.image(img, caption=cap, width=width)
            else:
                vals = ", ".join(f"{v:.3g}" for v in x.flatten()[:6].tolist())
                st.caption(f"{cap}\n[{vals}{', …' if x.numel() > 6 else ''}]")


def dense_gallery_ui(ws, dc) -> None:
    """A segmenter's examples whose class map moved most: the input, the label mask (with
    masks), the base's and the current model's class maps side by side, a row each."""
    masks = dc.masks is not None
    st.markdown("#### Examples whose class map changed most")
    st.caption(f"{dc.changed} of the {dc.n} examples of the {dc.subset} subset have a pixel whose class changed; "
               f"the {len(dc.index)} below agree least with the base (pixel agreement of the class map `{dc.leaf}`, "
               "the argmax over classes). A colour per class" + (", black: pixels the mask does not judge" if masks
                                                                 else "") + ".")
    heads = ["input", *(["label mask"] if masks else []), "base", "current"]
    for r, i in enumerate(dc.index):
        cols = st.columns(len(heads) + 1)
        pics = [image(ws.evalset.x[i]), *([class_map_image(dc.masks[r])] if masks else []),
                class_map_image(dc.base_map[r]), class_map_image(dc.current_map[r])]
        for c, h, pic in zip(cols, heads, pics):
            if pic is not None:
                c.image(pic, caption=h if r == 0 else None, width=144)
            else:
                c.caption(f"{h}: not an image")
        acc = (f"Pixel accuracy on the mask: base {dc.base_accuracy[r]:.1%}, current {dc.current_accuracy[r]:.1%}"
               if masks else "")
        cols[-1].caption(f"example #{i}: {dc.agreement[r]:.1%} of its pixels keep the base's class. {acc}")


def flow_gallery_ui(ws, fc) -> None:
    """An optical-flow model's examples whose flow moved most: the pair's two images, the base's and
    the current model's flow (torchvision's colour wheel, one scale for both), a row each."""
    from torchvision.utils import flow_to_image

    st.markdown("#### Examples whose flow changed most")
    st.caption(f"{fc.changed} of the {fc.n} examples of the {fc.subset} subset have a flow that differs from the "
               f"base's (mean end-point error over the subset {fc.mean_epe:.3g} px); the {len(fc.index)} below "
               f"differ most. End-point error: the length of current minus base flow vector, averaged over the "
               f"pixels of the leaf `{fc.leaf}`. Flow drawn as colour: hue the direction, saturation the length, "
               "one scale for base and current of an example.")
    heads = ["image 1", "image 2", "base flow", "current flow"]
    for r, i in enumerate(fc.index):
        cols = st.columns(len(heads) + 1)
        pair = flow_to_image(torch.stack([fc.base_flow[r], fc.current_flow[r]]).float())
        pics = [image(ws.evalset.x[i][0]), image(ws.evalset.x[i][1]),
                pair[0].permute(1, 2, 0).numpy(), pair[1].permute(1, 2, 0).numpy()]
        for c, h, pic in zip(cols, heads, pics):
            if pic is not None:
                c.image(pic, caption=h if r == 0 else None, width=144)
            else:
                c.caption(f"{h}: not an image")
        cols[-1].caption(f"example #{i}: end-point error {fc.epe[r]:.3g} px; the base's flow is "
                         f"{fc.base_speed[r]:.3g} px long on average.")


def boxes_image(x, boxes, colour=(230, 30, 30), size: int = 192) -> np.ndarray | None:
    """An example with ``boxes`` (k x 5: x1, y1, x2, y2, label, in its pixels) outlined, enlarged
    to about ``size`` pixels wide, each box's label written at its corner; None: not an image."""
    from PIL import Image, ImageDraw

    pic = image(x)
    if pic is None:
        return None
    h, w = x.shape[-2:]
    im = Image.fromarray(pic).convert("RGB")
    scale = size / max(1, w)
    im = im.resize((round(w * scale), round(h * scale)), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(im)
    for b in boxes.tolist():
        x1, y1, x2, y2 = (v * scale for v in b[:4])
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        draw.text((x1 + 2, y1 + 1), str(int(b[4])), fill=colour)
    return np.asarray(im)


def boxes_gallery_ui(ws, bc) -> None:
    """A detector's images whose boxes moved most: the labelled boxes (with labels), the base's
    and the current model's boxes, a row each, with the image's box recall and precision."""
    labelled = bc.labelled is not None
    st.markdown("#### Images whose boxes changed most")
    st.caption(f"{bc.changed} of the {bc.n} images of the {bc.subset} subset have boxes that differ from the base's; "
               f"the {len(bc.index)} below differ most (lowest box recall, then precision). Boxes scored "
               f"{bc.score_threshold:g} or more, each with its label.")
    heads = [*(["labelled boxes"] if labelled else []), "base", "current"]
    for r, i in enumerate(bc.index):
        cols = st.columns(len(heads) + 1)
        sets = [*([bc.labelled[r]] if labelled else []), bc.base_boxes[r], bc.current_boxes[r]]
        colours = [*([(30, 160, 60)] if labelled else []), (40, 90, 220), (230, 30, 30)]
        for c, h, boxes, colour in zip(cols, heads, sets, colours):
            pic = boxes_image(ws.evalset.x[i], boxes, colour)
            if pic is not None:
                c.image(pic, caption=f"{h} ({len(boxes)})" if r == 0 else f"{len(boxes)}", width=192)
            else:
                c.caption(f"{h}: not an image")
        cols[-1].caption(f"image #{i}: finds {bc.recall[r]:.0%} of the base's boxes again; {bc.precision[r]:.0%} of "
                         "its boxes match one of the base's.")


def moved_ui(ws, ch, limit: int = CARDS, width: int = 96) -> None:
    """An embedding model's examples whose embedding moved most (lowest cosine with the base's first)."""
    rows = ch.moved(limit)
    low = sum(r["cosine"] < 0.999 for r in ch.moved())
    st.caption(f"**{low} of {len(ch.cosine)}** examples of the {ch.subset} subset have an embedding whose cosine "
               f"with the base's is below 0.999; the {len(rows)} that moved most, lowest cosine first (and the share "
               f"of their {ch.recall_k} nearest neighbours among the base's embeddings they keep):")
    cards_ui(ws, [(r["index"], f"#{r['index']} · cosine {r['cosine']:.4f} · keeps {fmt.pct(r['recall'], 0)} of "
                               f"its {ch.recall_k} neighbours", None) for r in rows], width=width)


def gallery_ui(ws, ch) -> None:
    if ch.output == "embedding":  # features: no labels and no predictions to change
        moved_ui(ws, ch)
        return
    classes = ch.classes
    rows_all = ch.changed()
    c1, c2 = st.columns([1, 3])
    pick = c1.selectbox("Class", ["all"] + classes, key="explain_class",
                        help="Examples whose label or either prediction is this class.")
    cls = None if pick == "all" else classes.index(pick)
    rows = ch.changed(cls=cls)
    c2.markdown(f"**{len(rows_all)} of {len(ch.pred)}** predictions changed on the {ch.subset} subset"
                + (f"; {len(rows)} involve class {pick}" if cls is not None else "")
                + ". Largest confidence drop first (the base's confidence in its prediction minus the current "
                  "model's in that class).")
    if not rows:
        st.info("No prediction changed: the current model predicts what the base does on every example here.")
        return
    what = "next token" if ws.spec.task == "language-model" else "label"
    cards_ui(ws, [(r["index"], f"#{r['index']} · {what} {classes[r['label']]}\nbase {classes[r['base_pred']]} "
                                f"({fmt.pct(r['base_conf'], 0)}) → {classes[r['pred']]} ({fmt.pct(r['conf'], 0)})",
                   None) for r in rows[:CARDS]])
    if len(rows) > CARDS:
        st.caption(f"{CARDS} of {len(rows)} shown; `prunescope explain --json` lists them all.")


def changes_panel_ui(ws, key: str) -> None:
    """A toggle that shows which quick-subset examples the plan changed (the first 12,
    largest confidence drop first) and links to the Explain page. Off by default: it runs
    the base and the current model once per plan."""
    # always drawn (disabled for an empty plan), so the elements after it keep their places
    on = st.toggle("Show which examples changed", key=f"{key}_changes", disabled=not ws.plan.steps,
                   help="The examples whose embedding moved most from the base's (lowest cosine), on the quick "
                        "subset." if ws.evaluator.output == "embedding" else
                   "The examples whose prediction differs from the base's, on the quick subset.")
    if not on or not ws.plan.steps:
        return
    ch = run_action(cached, Workspace.changes, ws, "quick", now=True)
    if ch is None:
        return
    if ch.output == "embedding":
        moved_ui(ws, ch, 12, width=72)
    else:
        rows = ch.changed()
        st.caption(f"**{len(rows)} of {len(ch.pred)}** quick-subset predictions differ from the base's"
                   + ("; largest confidence drop first:" if rows else "."))
        cards_ui(ws, [(r["index"], f"#{r['index']} {ch.classes[r['base_pred']]} → {ch.classes[r['pred']]} "
                                    f"({fmt.pct(r['conf'], 0)})", None) for r in rows[:12]], width=72)
    st.page_link("views/explain.py", label="More on the Explain page: confusion, divergence, units, attribution",
                 icon=":material/psychology:")
