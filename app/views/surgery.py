"""Surgery: cut blocks out, paste blocks in (from this model or a donor), heal the seams.

Every operation is a step of the same workspace plan as the pruning steps, so undo,
redo, history and export see them all.
"""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st
import torch

from app.explain_ui import changes_panel_ui
from app.jobs import job_ui, start_job
from app.messages import flash, message_ui, run_action, show_flashes
from app.panels import current_metrics, latency_ui, metrics_panel_ui, plan_ui
from app.recover_ui import recover_ui, steps_input_ui
from app.session import get_workspace
from core.errors import PrunescopeError
from core.ground import formatting as fmt
from core.recover import Heal
from core.sources.bases import load_base
from core.sources.models import list_models
from core.surgery import (
    BRIDGES,
    HEAL_TRAIN,
    Cut,
    block_names,
    container_candidates,
    default_container,
    duplicate_steps,
    list_blocks,
    paste_steps,
)
from core.viz.surgery import (
    block_sequence_figure,
    cka_heatmap,
    drop_one_figure,
    heal_figure,
    influence_figure,
)
from core.workspace import Workspace

CLIP = "surgery_clipboard"  # session key: list of {"source": "self" | model name, "block": path}


# --- pure helpers (tested without a browser) ---------------------------------------

def blocks_of(ws: Workspace, container: str, which: str = "current") -> list[dict]:
    """Blocks of the current model (or of the base) as dicts, kept in the apply context's
    memo of that model (core's one cache of facts about a model)."""
    model = ws.float_model if which == "current" else ws.base
    memo, key = ws.ctx.memo(model), ("blocks", container)
    if key not in memo:
        try:
            with st.spinner(f"Tracing the blocks of {container or 'the model'} ({which} model) on the "
                            "calibration batch…"):
                memo[key] = [b.to_dict() for b in list_blocks(model, ws.ctx.calibration(0)[0], container, ws.name)]
        except PrunescopeError:
            memo[key] = []
    return memo[key]


def donor_blocks(name: str) -> list[str]:
    """Block paths of a registered model's default container."""
    base = load_base(name)
    return block_names(base, default_container(base, name))


def clipboard() -> list[dict]:
    return st.session_state.setdefault(CLIP, [])


def _add_steps(ws: Workspace, steps, progress=None) -> None:
    """All ``steps`` as one history entry (one undo)."""
    plan = ws.plan
    for s in steps:
        plan = plan.then(s)
    ws.set_plan(plan, progress=progress)


PENDING = "_surgery_edit"


def queue_edit(steps, label: str, success: str, after: Callable[[], None] | None = None) -> None:
    """Ask for an edit from a button's callback; :func:`pending_edit_ui` runs it where the
    page can draw its progress (a callback cannot draw)."""
    st.session_state[PENDING] = {"steps": list(steps), "label": label, "success": success, "after": after}


# --- UI -------------------------------------------------------------------------------

def pending_edit_ui(ws: Workspace) -> None:
    """Run the edit a button asked for, with a progress bar that says what it does (each
    step's build: clone, calibration pass, bridge fits; then the quick-subset evaluation),
    before the page draws the metrics of the result. Drawn in one container on every run,
    so the elements after it keep their places."""
    with st.container():
        _run_pending_edit(ws)


def _run_pending_edit(ws: Workspace) -> None:
    job = st.session_state.pop(PENDING, None)
    if not job:
        return
    label = job["label"]
    bar = st.progress(0.0, text=f"{label}: starting…")

    def progress(done: int, total: int, what: str) -> None:
        if done < total:  # (apply reports total of total when it is done)
            bar.progress(done / (total + 1), text=f"{label}: building plan step {done + 1} of {total} · {what}: "
                                                   "calibration pass, bridge fits")

    def edit() -> bool:
        _add_steps(ws, job["steps"], progress=progress)
        return True

    if not run_action(edit, now=True):
        bar.empty()
        return
    n = len(ws.plan.steps)
    bar.progress(n / (n + 1), text=f"{label}: evaluating the new model on the quick subset "
                                   f"({len(ws.evalset.quick_index)} examples)")
    run_action(ws.metrics, "quick", latency=False, now=True)
    bar.empty()
    if job["after"] is not None:
        job["after"]()
    message_ui("success", job["success"])


def container_ui(ws: Workspace) -> str:
    ss = st.session_state
    cands = container_candidates(ws.float_model)
    default = default_container(ws.float_model, ws.name)
    if default not in cands:
        cands = [default] + cands
    key = f"surgery_container_{ws.name}"
    if ss.get(key) not in cands:
        ss[key] = default
    return st.selectbox("Container", cands, key=key, format_func=lambda c: c or "(the model itself)",
                        help="The Sequential / ModuleList whose children are the blocks.")


def block_table_ui(blocks: list[dict], guides, where=None) -> None:
    """The blocks of the container; the guides' columns once they are computed."""
    rows = []
    at = {g.name: i for i, g in enumerate(guides.blocks)} if guides is not None else {}
    for pos, b in enumerate(blocks):
        row = {"#": pos, "block": b["name"], "kind": "adapter" if b["adapter"] else b["kind"],
               "in": "×".join(map(str, b["in_shape"])), "out": "×".join(map(str, b["out_shape"])),
               "params": b["params"], "MACs": b["macs"]}
        if guides is not None:
            row["influence"], row["drop-one acc"] = guide_cells(guides, at.get(b["name"]))
        rows.append(row)
    (where or st).dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "#": st.column_config.NumberColumn(help="Position: 'Paste at position' counts these rows, adapters "
                                                "included."),
        "influence": st.column_config.TextColumn(help="1 − cos(input, output) on the calibration batch; a dash "
                                                      "where the block changes the shape (no cosine)"),
        "drop-one acc": st.column_config.TextColumn(help="quick-subset accuracy with this block alone cut"),
        "MACs": st.column_config.NumberColumn(format="compact"),
    })


def guide_cells(guides, i: int | None) -> tuple[str, str]:
    """The influence and drop-one accuracy of block ``i`` as text: a dash and the reason
    where a figure does not exist (never a bare None)."""
    if i is None:
        return "– (not in the guides: recompute)", "–"
    infl = guides.influence[i]
    drop = guides.drop_one[i]
    return (f"{infl:.3f}" if infl is not None else "– (changes the shape)",
            fmt.pct(drop) if drop is not None else "– (cannot be cut alone)")


def operations_ui(ws: Workspace, container: str, names: list[str]) -> None:
    """Multi-select + Cut / Copy / Paste / Duplicate, bridge and position controls."""
    ss = st.session_state
    sel_key = "surgery_selected"
    ss[sel_key] = [n for n in ss.get(sel_key, []) if n in names]
    selected = st.multiselect("Selected blocks", names, key=sel_key,
                              help="Pick blocks to cut, copy or duplicate.")
    c = st.columns(2)
    bridge = c[0].radio("Bridge / adapter", BRIDGES, key="surgery_bridge", horizontal=True,
                        help="auto: identity where shapes match (same model), least squares elsewhere; "
                             "identity: shapes must match; lstsq: always a fitted adapter.")
    ss.setdefault("surgery_at", len(names))
    ss["surgery_at"] = min(int(ss["surgery_at"]), len(names))
    at = c[1].number_input("Paste at position", 0, len(names), key="surgery_at", step=1,
                           help="The # column of the block table: 0 = before the first block, "
                                f"{len(names)} = after the last. Adapters are rows and count. The clipboard's "
                                "blocks go in together, in the clipboard's order.")

    def do_cut():
        sel = list(ss.get(sel_key, []))
        if not sel:
            flash("warning", "Select one or more blocks to cut.")
            return
        base_names = {n for n, _ in ws.base.named_modules()}

        def after():  # once the cut is in the plan: the cut blocks on the clipboard
            clip = [{"source": "self", "block": n} for n in sel if n in base_names]
            if clip:
                ss[CLIP] = clip
            ss[sel_key] = []

        queue_edit([Cut(tuple(sel), bridge=bridge)], f"Cut {', '.join(sel)}", f"Cut {', '.join(sel)}.", after)

    def do_copy():
        sel = list(ss.get(sel_key, []))
        if not sel:
            flash("warning", "Select blocks to copy.")
            return
        ss[CLIP] = [{"source": "self", "block": n} for n in sel]
        flash("info", f"Copied {', '.join(sel)} to the clipboard.")

    def do_paste():
        entries = list(ss.get(CLIP, []))
        if not entries:
            flash("warning", "The clipboard is empty: copy or cut blocks, or add a donor block.")
            return
        pairs = [(e["source"], e["block"]) for e in entries]
        steps = run_action(paste_steps, ws.float_model, ws.base, ws.name, pairs, int(ss["surgery_at"]), bridge,
                           container)
        if steps:
            at = int(ss["surgery_at"])
            queue_edit(steps, f"Paste {len(steps)} block(s)", f"Pasted {len(steps)} block(s) at {at}.")

    def do_duplicate():
        sel = list(ss.get(sel_key, []))
        if not sel:
            flash("warning", "Select blocks to duplicate.")
            return
        queue_edit(duplicate_steps(names, sel), f"Duplicate {', '.join(sel)}", f"Duplicated {', '.join(sel)}.")

    b = st.columns(4)
    b[0].button("Cut", icon=":material/content_cut:", key="surgery_cut", on_click=do_cut, width="stretch",
                disabled=not selected, help="Remove the selected blocks (and keep them on the clipboard).")
    b[1].button("Copy", icon=":material/content_copy:", key="surgery_copy", on_click=do_copy, width="stretch",
                disabled=not selected)
    b[2].button("Paste", icon=":material/content_paste:", key="surgery_paste", on_click=do_paste, width="stretch",
                disabled=not clipboard(), help=f"Insert the clipboard's blocks at position {at}.")
    b[3].button("Duplicate", icon=":material/library_add:", key="surgery_duplicate", on_click=do_duplicate,
                width="stretch", disabled=not selected,
                help="A copy of each selected block right after it (depth up-scaling).")


def donor_ui(ws: Workspace) -> None:
    """Pick a block of any registered model and put it on the clipboard."""
    ss = st.session_state
    models = list_models()
    ss.setdefault("surgery_donor", ws.name if ws.name in models else models[0])
    donor = st.selectbox("Donor model", models, key="surgery_donor",
                         help="Any registered model; its pristine base is used (never modified).")
    try:
        with st.spinner(f"Loading {donor} and listing its blocks…"):
            dblocks = donor_blocks(donor)
    except PrunescopeError as exc:
        st.error(str(exc))
        return
    if ss.get("surgery_donor_block") not in dblocks:
        ss["surgery_donor_block"] = dblocks[0]
    block = st.selectbox("Donor block", dblocks, key="surgery_donor_block")

    def add():
        ss[CLIP] = clipboard() + [{"source": donor, "block": block}]

    st.button("Add to clipboard", key="surgery_add_donor", on_click=add)


def clipboard_ui() -> None:
    clip = clipboard()
    if not clip:
        st.caption("Clipboard: empty")
        return
    st.caption("Clipboard: " + ", ".join(e["block"] if e["source"] == "self" else f"{e['source']}:{e['block']}"
                                         for e in clip))
    st.button("Clear clipboard", key="surgery_clear_clip", on_click=lambda: st.session_state.__setitem__(CLIP, []))


def guides_button_ui(ws: Workspace, container: str, n_blocks: int):
    """Guides on request (they cost a cut and an evaluation per block), with a progress bar;
    kept for this plan once computed. Returns them, or None before the click."""
    st.markdown("**Guides**: influence, similarity (CKA) and drop-one accuracy of each block.")
    if not st.button(f"Compute guides ({n_blocks} blocks)", key="surgery_guides_btn", icon=":material/insights:",
                     help="One calibration pass, then for each block a cut and a quick-subset evaluation. "
                          "Kept for this plan."):
        return None
    bar = st.progress(0.0, text="Guides: starting…")

    def progress(done: int, total: int, what: str) -> None:
        bar.progress(done / max(1, total), text=f"Guides: {done} of {total} · {what}")

    guides = run_action(ws.guides, container, progress=progress)
    bar.empty()
    return guides


def guides_ui(ws: Workspace, container: str, guides) -> None:
    if guides is None:
        return
    names = [b.name for b in guides.blocks]
    ss = st.session_state
    k_max = sum(1 for i, b in enumerate(guides.blocks) if guides.drop_one[i] is not None and not b.adapter)
    sugg = None
    if k_max:
        ss.setdefault("surgery_k", 1)
        ss["surgery_k"] = max(1, min(int(ss["surgery_k"]), k_max))
        k = int(st.number_input("Blocks to cut (suggestion)", 1, k_max, key="surgery_k", step=1))
        sugg = guides.suggestion(k)  # kept with the guides: a revisit computes nothing
        if sugg is None:
            with st.spinner(f"Suggested cut of {k} block(s): cutting them together (bridge fits on the calibration "
                            f"batch) and evaluating on the quick subset ({len(ws.evalset.quick_index)} examples)…"):
                sugg = run_action(ws.suggest_cut, k, container)
    if sugg and sugg["expected_accuracy"] is not None:
        st.markdown(f"**Suggested cut:** {', '.join(sugg['blocks'])} → expected accuracy "
                    f"**{fmt.pct(sugg['expected_accuracy'])}** (now {fmt.pct(sugg['accuracy'])})")
        cut = ", ".join(sugg["blocks"])
        st.button("Apply suggested cut", key="surgery_apply_suggestion", on_click=queue_edit,
                  args=([Cut(tuple(sugg["blocks"]), bridge=sugg["bridge"])], f"Cut {cut}", f"Cut {cut}."))
    st.plotly_chart(drop_one_figure(names, guides.drop_one, guides.accuracy,
                                    sugg["blocks"] if sugg else ()), width="stretch", key="surgery_drop_one")
    st.plotly_chart(influence_figure(names, guides.influence), width="stretch", key="surgery_influence")
    st.plotly_chart(cka_heatmap(names, guides.cka), width="stretch", key="surgery_cka")


def heal_ui(ws: Workspace) -> None:
    """Train adapters (and neighbours) for N steps in the background, with progress and
    Cancel (the steps done become the plan's heal step). A heal is a preset of the
    fine-tune below: pruned weights stay zero whatever it trains."""
    c = st.columns(3)
    steps = steps_input_ui(c[0], ws, "heal_steps", 100, 2000, "Optimisation steps, each one batch of the "
                           "training split.")
    lr = c[1].number_input("Learning rate", 1e-5, 1.0, 1e-3, key="heal_lr", format="%.5f")
    train = c[2].radio("Train", HEAL_TRAIN, key="heal_train",
                       help="Pruned weights in the blocks beside an adapter stay zero.")
    step = Heal(steps=int(steps), lr=float(lr), train=train, threads=torch.get_num_threads())
    running = job_ui("heal_job")
    st.button("Heal", key="heal_start", type="primary", disabled=running, on_click=start_job,
              args=("heal_job", ws, step, "Healing"))
    steps = ws.plan.steps
    if steps and isinstance(steps[-1], Heal):  # the heal's own report: losses, before / after
        info = ws.reports[-1].info
        st.plotly_chart(heal_figure(info["losses"], info["before"], info["after"]), width="stretch",
                        key="heal_figure")


@st.fragment
def surgery_live_ui() -> None:
    show_flashes()
    ws = get_workspace()
    pending_edit_ui(ws)
    container = container_ui(ws)
    blocks = blocks_of(ws, container)
    names = [b["name"] for b in blocks]
    if not names:
        st.warning(f"Container {container or '(the model itself)'!r} has no blocks in the current model.")
    m, base = current_metrics(ws)
    pending = metrics_panel_ui(ws, m, base)
    guides = run_action(ws.cached_guides, container) if names else None

    left, right = st.columns([3, 2])
    with left:
        table = st.empty()
        block_table_ui(blocks, guides, table)
        operations_ui(ws, container, names)
        clipboard_ui()
        with st.expander("Blocks from a donor model"):
            donor_ui(ws)
        before = blocks_of(ws, container, "base")
        st.plotly_chart(block_sequence_figure(before, blocks), width="stretch", key="surgery_sequence")
    with right:
        if guides is None and names:
            guides = guides_button_ui(ws, container, len(names))
            if guides is not None:  # computed just now: the table above gets their columns
                block_table_ui(blocks, guides, table)
        guides_ui(ws, container, guides)
    changes_panel_ui(ws, "surgery")
    # keyed and tracked by the server: open stays open through the reruns of a job, a cancel or an edit
    with st.expander("Heal: train the adapters", key="surgery_heal_open", on_change="rerun"):
        heal_ui(ws)
    with st.expander("Recover accuracy: fine-tune or distil", key="surgery_recover_open", on_change="rerun"):
        recover_ui(ws, "surgery")
    with st.expander("Plan", expanded=True):
        plan_ui(ws, "surgery")
    latency_ui(ws, pending)


def page() -> None:
    ws = get_workspace()
    st.markdown(f"### Surgery · {ws.name}")
    st.caption("Cut blocks out or paste copies in (from this model or a donor). Seams get an identity or a "
               "least-squares adapter; heal trains the adapters. Every operation is a plan step.")
    surgery_live_ui()


page()
