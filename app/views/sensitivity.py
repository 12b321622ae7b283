"""Sensitivity: which layers can be pruned, and by how much. A sweep prunes each layer
alone over a list of amounts (in the background, with Cancel); criteria are compared by
what a global amount does; an automatic plan picks per-layer amounts to meet a target."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from app.jobs import job_ui, start_job, start_sweep
from app.messages import run_action, show_flashes
from app.session import get_workspace
from core.ground import formatting as fmt
from core.prune.criteria import criteria_for
from core.recover import Finetune
from core.sensitivity import DEFAULT_AMOUNTS, sweep_bound, sweep_budget
from core.viz.sensitivity import (
    amounts_figure,
    class_heatmap,
    criteria_curves_figure,
    sensitivity_curves,
    sensitivity_heatmap,
)

AMOUNT_CHOICES = (0.05,) + DEFAULT_AMOUNTS + (0.95,)
TARGETS = {"max_drop": "accuracy drop at most (points)", "max_macs": "MACs at most (fraction of the base)",
           "max_params": "non-zero parameters at most (fraction of the base)",
           "max_latency": "latency at most (fraction of the base; timed, noisy)"}


def _partial(ws) -> dict:
    """Stopped sweeps of this session (finished ones live in ``ws.sweeps``)."""
    return st.session_state.setdefault("_sens_partial", {}).setdefault(ws.name, {})


def _sweep_key(plan_key: str, crit, gran, amounts, subset) -> tuple:
    return (plan_key, crit, gran, tuple(sorted(amounts)), subset)


def _found(ws, crit, gran, amounts, subset):
    """The sweep of the current plan with these settings: finished, else a stopped one."""
    done = ws.finished_sweep(crit, gran, amounts, subset)
    return done if done is not None else _partial(ws).get(_sweep_key(ws.plan.key(), crit, gran, amounts, subset))


def controls_ui(ws) -> tuple[str, str, list[float], str]:
    grans = ws.granularities()
    c = st.columns([1, 1, 3, 1.3])
    gran = c[0].selectbox("Granularity", grans, key="sens_gran",
                          help="weight: single weights masked; neuron / channel / head: whole units removed with "
                               "everything coupled to them (one coupled group is one row).")
    crits = criteria_for(gran)
    crit = c[1].selectbox("Criterion", crits, key="sens_crit", index=crits.index("l1") if "l1" in crits else 0,
                          help="Which units of a layer go first (see `prunescope criteria`).")
    amounts = c[2].multiselect("Amounts", AMOUNT_CHOICES, default=list(DEFAULT_AMOUNTS), key="sens_amounts",
                               format_func=lambda a: f"{100 * a:g}%",
                               help="Fractions of each layer's units pruned, one layer at a time.")
    subset = c[3].radio("Examples", ["quick", "full"], key="sens_subset", horizontal=True,
                        format_func=lambda s: f"quick ({len(ws.evalset.quick_index)})" if s == "quick"
                        else f"full ({len(ws.evalset.y)})")
    return crit, gran, sorted(amounts), subset


def _planned_from(ws, crit: str, gran: str, amounts: list[float], subset: str):
    """The sweep the last automatic plan was built from, while the current plan is that
    automatic plan (or goes on from it, as its fine-tune does) and has no sweep of its own with
    these settings; else None."""
    got = st.session_state.get(f"sens_auto_{ws.name}")
    if got is None or _found(ws, crit, gran, amounts, subset) is not None:
        return None
    r, _, sens = got
    n = len(r.plan.steps)
    if r.step is None or not r.met or ws.plan.steps[:n] != r.plan.steps:
        return None
    same = (sens.criterion, sens.granularity, sens.amounts, sens.subset) == (crit, gran, tuple(amounts), subset)
    return sens if same else None


def quality_of(ws) -> str:
    """What the sweep's "accuracy" is for this model: "accuracy", "agreement with the base", or
    an embedding's "neighbour recall@k" (``Metrics.quality_name``)."""
    return ws.base_metrics("quick", latency=False).quality_name(ws.spec.task)


def source_caption(sens, crit: str, subset: str, what: str = "Source", quality: str = "accuracy") -> None:
    steps = f"the plan's model ({sens.plan_steps} step(s))" if sens.plan_steps else "the base model"
    st.caption(f"{what}: {steps}, {quality} {fmt.pct(sens.source['accuracy'])} on {sens.n} {subset} examples. "
               f"Each point prunes one layer alone by {crit}; drop = source {quality} minus that model's, in points. "
               + ("" if sens.complete else f"**Stopped early: {len(sens.layers)} layers finished.** ")
               + f"{sens.seconds:.1f} s, executor {sens.executor}.")


def sweep_ui(ws, crit: str, gran: str, amounts: list[float], subset: str, new_plan: bool = False):
    """The sweep button (its progress while it runs) and the current plan's sweep, or None.
    ``new_plan``: the plan just became an automatic plan; the button offers to sweep it."""
    job_key = f"sens_job_{ws.name}"
    running = job_ui(job_key)
    sens = _found(ws, crit, gran, amounts, subset)
    n_layers = len(ws.layer_names(gran)) if gran in ws.granularities() else 0
    if not running:
        label = ("Run the sweep again" if sens is not None and not sens.complete else
                 "Swept: kept for this plan" if sens is not None else
                 "Sweep the new plan" if new_plan else "Run the sweep")
        disabled = not amounts or (sens is not None and sens.complete)
        if st.button(label, key="sens_run", type="primary", disabled=disabled, icon=":material/play_arrow:",
                     help="Prunes every layer alone at every amount and evaluates each model, in the background "
                          "(the rest of the app stays usable; Cancel keeps the layers finished)."):
            spec = run_action(ws.sensitivity_spec, crit, gran, amounts, subset)

            def done(result):
                if result.complete:
                    ws.keep_sweep(spec.key, result)  # published in one step, for the plan it started on
                    ws.notify()  # saved with the session
                    return "success", (f"Sensitivity: {len(result.layers)} layers × {len(result.amounts)} amounts "
                                       f"evaluated in {result.seconds:.1f} s.")
                _partial(ws)[_sweep_key(spec.plan, crit, gran, amounts, subset)] = result
                return "info", (f"Sweep stopped: {len(result.layers)} of {n_layers} layers finished; they are "
                                "shown, the others are not.")

            if spec is not None:
                start_sweep(job_key, ws, spec, f"Sensitivity of {n_layers} layers × {len(amounts)} amounts", done)
            st.rerun()
    if sens is None and new_plan:
        return None
    if sens is None:
        if ws.finished_sweep(crit, gran, amounts, subset, for_drop=0.0) is None:  # (else that one is shown)
            st.info(f"No sweep of the current plan with these settings yet: {n_layers} layers × {len(amounts)} "
                    f"amounts = {n_layers * len(amounts)} models, each evaluated on the {subset} subset.")
        return None
    source_caption(sens, crit, subset, quality=quality_of(ws))
    return sens


def views_ui(ws, sens) -> None:
    quality = quality_of(ws)
    embedding = ws.evaluator.output == "embedding"  # features, not classes: no per-class view
    tabs = st.tabs(["Heatmap", "Curves"] + ([] if embedding else ["Per class"]))
    with tabs[0]:
        st.plotly_chart(sensitivity_heatmap(sens, quality=quality), width="stretch", key="sens_heatmap")
        worst = sorted(((max(sens.drop(n)), n) for n in sens.layers), reverse=True)[:3]
        if worst:
            st.caption("Most sensitive: " + ", ".join(f"{n} (up to {d:.1f} points)" for d, n in worst)
                       + f". Red: {quality} drops; blue: it rises; white: no change.")
    layers = list(sens.layers)
    with tabs[1]:
        hi = st.selectbox("Highlight a layer", ["none"] + layers, key="sens_highlight")
        st.plotly_chart(sensitivity_curves(sens, highlight=None if hi == "none" else hi, quality=quality),
                        width="stretch", key="sens_curves")
    if embedding:
        return
    with tabs[2]:
        layer = st.selectbox("Layer", layers, key="sens_class_layer")
        st.plotly_chart(class_heatmap(sens, layer, ws.evalset.classes), width="stretch", key="sens_classes")
        src = sens.source["per_class_accuracy"]
        first = []
        for p in sens.layers[layer]:
            falls = [c for c, v in enumerate(p["per_class_accuracy"]) if src[c] - v >= 0.1]
            if falls:
                first = [(p["amount"], falls)]
                break
        if first:
            a, falls = first[0]
            st.caption(f"First to fall (10 points or more) at {100 * a:g}% of {layer}: class(es) "
                       f"{', '.join(ws.evalset.classes[c] for c in falls)}.")
        else:
            st.caption(f"No class loses 10 points at any swept amount of {layer}.")


def criteria_ui(ws, gran: str, amounts: list[float], subset: str) -> None:
    st.markdown("#### Criteria compared by outcome")
    crits = criteria_for(gran)
    pick = st.multiselect("Criteria", crits, default=[c for c in ("l1", "taylor", "wanda", "random") if c in crits],
                          key="sens_curve_crits",
                          help="Each criterion prunes every layer together at each amount (one global step).")
    job_key = f"sens_curves_job_{ws.name}"
    running = job_ui(job_key)
    spec = run_action(ws.curves_spec, pick, gran, amounts, subset, now=True) if pick and amounts else None
    curves = ws.sweeps.get(spec.key) if spec is not None else None
    if not running and st.button("Compare criteria", key="sens_curves_run", disabled=spec is None
                                 or curves is not None, icon=":material/compare_arrows:"):

        def done(result):
            if result.complete:
                ws.keep_sweep(spec.key, result)  # published in one step, for the plan it started on
                return "success", f"Criteria compared: {len(result.curves)} × {len(result.amounts)} models evaluated."
            return "info", "Comparison stopped; run it again to finish."

        start_sweep(job_key, ws, spec, f"{len(pick)} criteria × {len(amounts)} global amounts", done)
        st.rerun()
    if curves is not None:
        quality = quality_of(ws)
        st.plotly_chart(criteria_curves_figure(curves, quality=quality), width="stretch", key="sens_criteria")
        st.caption(f"{quality[0].upper()}{quality[1:]} on the {subset} subset after pruning {gran}s of every layer "
                   f"by each criterion; the higher curve keeps more {quality} at the same amount.")


def _budget_of(sens) -> float | None:
    """The largest accuracy drop (points) a sweep stopped at a budget can plan for (None: a full sweep)."""
    return None if sens.stop_harm is None else sweep_budget(sens.stop_harm)


def _points(v: float) -> str:
    return f"{v:g} point{'' if v == 1 else 's'}"


def budget_sweep_ui(ws, crit: str, gran: str, amounts: list[float], subset: str, value: float) -> None:
    """The button that sweeps only what an accuracy budget of ``value`` points can use."""
    pts = _points(value)
    if st.button(f"Sweep for a drop of {pts}", key="sens_run_budget", disabled=not amounts,
                 icon=":material/play_arrow:",
                 help=f"Sweeps each layer from its smallest amount and stops it past {sweep_bound(value):g} points "
                      "of changed predictions: its larger amounts cannot fit the budget. "
                      "Fewer models than the full sweep; in the background, with Cancel."):
        spec = run_action(ws.sensitivity_spec, crit, gran, amounts, subset, stop_harm=sweep_bound(value))

        def done(result):
            if not result.complete:
                return "info", "Sweep for the budget stopped: nothing is kept; run it again to plan."
            ws.keep_sweep(spec.key, result)
            ws.notify()
            n = sum(len(p) for p in result.layers.values())
            return "success", (f"Swept for a drop of {pts}: {n} of {len(result.layers) * len(amounts)} "
                               f"models evaluated in {result.seconds:.1f} s.")

        if spec is not None:
            start_sweep(f"sens_job_{ws.name}", ws, spec, f"Sensitivity for a drop of {pts}", done)
        st.rerun()


def autoplan_ui(ws, sens, crit: str, gran: str, amounts: list[float], subset: str) -> None:
    st.markdown("#### Automatic plan")
    if sens is None or not sens.complete:
        st.caption("Run the sweep above for any target, or sweep only what an accuracy budget can use: each layer "
                   f"stops at its first amount that changes more than {sweep_bound(1):g} points of predictions for a "
                   f"budget of 1 point ({sweep_bound(2):g} for 2).")
        value = st.number_input("Accuracy drop at most (points)", 0.0, 100.0, 1.0, 0.5, key="sens_value_drop")
        budget_sweep_ui(ws, crit, gran, amounts, subset, float(value))
        autoplan_result_ui(ws)
        return
    budget = _budget_of(sens)
    kinds = [k for k in TARGETS if (gran != "weight" or k in ("max_drop", "max_params"))
             and (budget is None or k == "max_drop")]
    c = st.columns([2, 1, 1])
    quality = quality_of(ws)
    kind = c[0].selectbox("Target", kinds, format_func=lambda k: TARGETS[k].replace("accuracy", quality),
                          key="sens_target",
                          help="Masks leave the dense MACs and time unchanged, so weight granularity offers only "
                               "accuracy and parameter targets.")
    if kind == "max_drop":
        value = c[1].number_input("Points", 0.0, 100.0, 1.0, 0.5, key="sens_value_drop")
    else:
        value = c[1].number_input("Fraction of the base", 0.01, 1.0, 0.5, 0.05, key=f"sens_value_{kind}")
    ft = c[2].number_input("Then fine-tune (steps; 0: no)", 0, 5000, 0, 50, key="sens_finetune",
                           help="Runs a fine-tune (labels and distillation) after the plan, in the background.")
    if budget is not None and value > budget + 1e-9:
        st.caption(f"This sweep stopped each layer for a drop of at most {_points(budget)}; sweep for "
                   f"{_points(value)} to plan for it.")
        budget_sweep_ui(ws, crit, gran, amounts, subset, float(value))
        autoplan_result_ui(ws)
        return
    ss = st.session_state
    res_key = f"sens_auto_{ws.name}"
    if st.button("Build the plan", key="sens_build", type="primary", icon=":material/auto_fix_high:",
                 help="Chooses per-layer amounts (greedy: most saving per point of predicted harm), builds one prune "
                      "step with per-layer overrides, measures it, then refines it with measured tries: grows the "
                      "amounts while the measured drop is below the target, backs off when above."):
        bar = st.progress(0.0, text="Automatic plan: choosing the amounts of the first try…")

        def shown(done: int, total: int, what: str) -> None:  # each try measured on the subset: seconds on a real model
            bar.progress(min(1.0, done / max(1, total)), text=f"Automatic plan: {what}")

        r = run_action(ws.autoplan, criterion=crit, granularity=gran, sens=sens, subset=sens.subset,
                       progress=shown, now=True, **{kind: float(value)})
        bar.empty()
        if r is not None:
            ss[res_key] = (r, list(sens.layers), sens)  # and the sweep it was planned from
            if r.step is not None and r.met and run_action(ws.set_plan, r.plan, now=True) is not None:
                if ft:
                    loss = "distill" if ws.spec.task == "fidelity" else "both"
                    start_job(f"sens_ft_{ws.name}", ws, Finetune(steps=int(ft), loss=loss,
                                                                 threads=torch.get_num_threads()), "Fine-tune")
                st.rerun()
    autoplan_result_ui(ws)


def autoplan_result_ui(ws) -> None:
    """The last automatic plan of this model: the reason, predicted against measured, the
    amounts, every try; and the fine-tune that follows it, while it runs."""
    job_ui(f"sens_ft_{ws.name}")
    got = st.session_state.get(f"sens_auto_{ws.name}")
    if got is None:
        return
    r, layers, _ = got
    applied = r.step is not None and r.met and ws.plan.key() == r.plan.key()
    (st.success if r.met else st.warning)(r.reason)
    if r.metrics is not None:
        cost = "MACs" if r.cost == "macs" else "non-zero parameters"
        cols = st.columns(4)
        q = r.metrics.quality_name(ws.spec.task)
        cols[0].metric(f"Predicted {q}", fmt.pct(r.predicted_accuracy),
                       help=f"Source {q} minus the sum of the chosen layers' drops in the sweep.")
        cols[1].metric(f"Measured {q}", fmt.pct(r.metrics.accuracy),
                       delta=f"{100 * (r.metrics.accuracy - r.predicted_accuracy):+.2f} points vs predicted")
        cols[2].metric(f"Predicted {cost}", f"{r.predicted_cost:.1%} of base")
        cols[3].metric(f"Measured {cost}", f"{r.measured_cost:.1%} of base")
        st.plotly_chart(amounts_figure(layers, r.amounts), width="stretch", key="sens_amounts_fig")
    if r.tries:
        st.dataframe(pd.DataFrame([{"try": i + 1, "move": t.get("move", ""), "budget": t["budget"],
                                    "layers pruned": t["layers"],
                                    "predicted accuracy": 100 * t["predicted_accuracy"],
                                    "measured accuracy": 100 * t["accuracy"], "cost (× base)": t["cost"],
                                    "target figure": t["measured"], "met": t["met"]} for i, t in enumerate(r.tries)]),
                     hide_index=True, width="stretch", column_config={
                         "predicted accuracy": st.column_config.NumberColumn(format="%.2f%%"),
                         "measured accuracy": st.column_config.NumberColumn(format="%.2f%%"),
                         "cost (× base)": st.column_config.NumberColumn(format="%.3f"),
                         "budget": st.column_config.NumberColumn(format="%.3g",
                                                                 help="points of harm, or fraction of the base"),
                         "target figure": st.column_config.NumberColumn(format="%.3f"),
                         "move": st.column_config.TextColumn(help="how the try was placed: first (the harm budget), "
                                                             "grow, bisect, back off, grow others (a layer held)")})
    if applied:
        st.caption("The plan's last step is this ordinary prune step with per-layer overrides: drag it on the "
                   "Prune page, undo it, or export it.")
    elif r.step is not None and r.met and ws.plan.steps[:len(r.plan.steps)] == r.plan.steps:
        st.caption(f"The current plan goes on from this automatic plan (its step {len(r.plan.steps)}) with "
                   f"{len(ws.plan.steps) - len(r.plan.steps)} more step(s).")
    elif r.step is not None and r.met:
        st.caption("This automatic plan is no longer the current plan (undone or edited since).")


def after_autoplan_ui(ws, before, crit: str, gran: str, amounts: list[float], subset: str) -> None:
    """The current plan is the automatic plan just built: its result first, then the sweep it
    was planned from (a sweep of the plan before it, labelled so) and the way to sweep the new plan."""
    st.markdown("#### Automatic plan")
    autoplan_result_ui(ws)
    st.markdown("#### The sweep it was planned from")
    st.caption("A sweep of the plan before the automatic plan, not of the current plan. To see the current "
               "plan's sensitivities, or to plan further from it, sweep the new plan.")
    sweep_ui(ws, crit, gran, amounts, subset, new_plan=True)
    source_caption(before, crit, subset, "Swept before the automatic plan", quality_of(ws))
    if before.stop_harm is not None:
        st.caption(f"Swept for a drop of at most {_points(_budget_of(before))}: each layer stopped at its first "
                   f"amount that changed more than {before.stop_harm:g}% of the predictions (no cell past it).")
    if before.layers:
        views_ui(ws, before)


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### Sensitivity · {ws.name}")
    st.caption(f"Which layers of the current model ({len(ws.plan.steps)} plan step(s)) can be pruned, and by how much.")
    if getattr(ws.model, "final", False):
        st.info("The plan ends in a quantize step; sweeps prune float models. Remove the quantize step to sweep "
                "(it is one history entry: Undo on the Prune page brings it back), then quantize again after.")
        st.button("Remove the quantize step", key="sens_drop_quantize", icon=":material/undo:",
                  on_click=run_action, args=(ws.remove_step, len(ws.plan.steps) - 1),
                  kwargs={"success": "Removed the quantize step: the plan's model is float again."})
        return
    crit, gran, amounts, subset = controls_ui(ws)
    before = _planned_from(ws, crit, gran, amounts, subset)
    if before is not None:
        after_autoplan_ui(ws, before, crit, gran, amounts, subset)
        criteria_ui(ws, gran, amounts, subset)
        return
    sens = sweep_ui(ws, crit, gran, amounts, subset)
    if sens is None or not sens.complete:  # a sweep for an accuracy budget, kept, stands in for the full one
        budget = ws.finished_sweep(crit, gran, amounts, subset, for_drop=0.0)
        if budget is not None:
            st.caption(f"**Swept for a drop of at most {_points(_budget_of(budget))}:** each layer stopped at its "
                       f"first amount that changed more than {budget.stop_harm:g}% of the predictions; the amounts "
                       "past it were not run (no cell).")
            source_caption(budget, crit, subset, quality=quality_of(ws))
            sens = budget
    if sens is not None and sens.layers:
        views_ui(ws, sens)
    autoplan_ui(ws, sens, crit, gran, amounts, subset)
    criteria_ui(ws, gran, amounts, subset)


page()
