"""History: every evaluated plan, its figures, and the Pareto front; restore any plan."""
from __future__ import annotations

import datetime as dt
import time

import pandas as pd
import streamlit as st

from app.messages import run_action, show_flashes
from app.session import get_workspace
from core.ground import formatting as fmt
from core.metrics.cost import timed_beside
from core.viz.figures import pareto_figure


def _latency_cells(m, now: float) -> dict:
    """How fast, and how it was timed: a ratio to the base only for the two halves of one
    interleaved timing (the base timed beside this plan's model)."""
    lat, blat = m.latency, m.base_latency
    if lat is None:
        return {"latency": "not timed", "latency ms": None, "× base": None, "latency noisy": False,
                "latency timed": "not timed"}
    beside = timed_beside(blat, lat) and blat.median_ms > 0
    noisy = lat.noisy or (beside and blat.noisy)
    how = f"beside the base, {lat.runs} runs" if beside else f"not beside the base, {lat.runs} runs"
    return {"latency": fmt.ms(lat.median_ms, lat.iqr_ms), "latency ms": lat.median_ms,
            "× base": lat.median_ms / blat.median_ms if beside else None, "latency noisy": noisy,
            "latency timed": f"{how}{', noisy' if noisy else ''}, {fmt.ago(now - lat.timed_at)}"}


def history_frame(ws) -> pd.DataFrame:
    rows, now = [], time.time()
    for i, e in enumerate(ws.log):
        m = e.metrics
        rows.append({
            "#": i, "time": dt.datetime.fromtimestamp(e.time).strftime("%H:%M:%S"),
            "steps": "; ".join(e.plan.describe()) or "(base)", "subset": m.subset,
            "accuracy": m.accuracy, "sparsity": m.sparsity, "params": m.params,
            "nonzero params": m.nonzero_params, "MACs": m.macs, **_latency_cells(m, now),
        })
    return pd.DataFrame(rows)


def _latency_chart(ws, quick: pd.DataFrame):
    """Accuracy against latency relative to the base timed beside each plan (timings of
    different moments are not compared in milliseconds); noisy timings hollow and off the
    front; plans without such a timing listed under the chart. Returns (event, plotted rows)."""
    lat = quick[quick["× base"].notna()]
    name = ws.metrics("quick").quality_name(ws.spec.task)  # what the "accuracy" figure is for this model
    ev = st.plotly_chart(pareto_figure(lat["× base"].tolist(), lat["accuracy"].tolist(), lat["steps"].tolist(),
                                       x_title="latency / the base's, timed beside it",
                                       current=next((j for j, i in enumerate(lat["#"])
                                                     if ws.log[int(i)].plan == ws.plan), None),
                                       title=f"{name.capitalize()} vs latency (relative to the base)",
                                       y_title=name,
                                       marked=lat["latency noisy"].tolist(), marked_name="noisy timing (off the front)",
                                       x_format=".2f"),
                         width="stretch", key="pareto_latency", on_select="rerun", selection_mode="points")
    rest = quick[quick["× base"].isna()]
    if len(rest):
        st.caption("Not plotted (latency not timed beside the base): "
                   + ", ".join(f"#{int(r['#'])} {r['steps']}" for _, r in rest.iterrows())
                   + ". Restore a plan to time it beside the base.")
    return ev, lat


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### History · {ws.name}")
    # the current plan is always in the log; name: what its "accuracy" figure is (an embedding's: neighbour recall)
    name = ws.metrics("quick").quality_name(ws.spec.task)
    df = history_frame(ws)
    quick = df[df["subset"] == "quick"].drop_duplicates(subset=["steps"], keep="last")
    num = st.column_config.NumberColumn
    st.dataframe(df, hide_index=True, width="stretch", column_order=[
        "#", "time", "steps", "accuracy", "latency", "× base", "latency timed", "sparsity", "nonzero params",
        "params", "MACs", "subset"], column_config={  # latency beside the steps: never cut off at the right
        "#": num(width=40), "time": st.column_config.TextColumn(width=70),  # narrow: the latency columns fit
        "steps": st.column_config.TextColumn(width=180), "subset": st.column_config.TextColumn(width=55),
        "accuracy": num(name, format="percent", width=75), "sparsity": num(format="percent", width=70),
        "params": num(format="compact", width=65), "nonzero params": num("non-zero", format="compact", width=70),
        "MACs": num(format="compact", width=65),
        "latency": st.column_config.TextColumn("latency", width=115,
                                               help="Median ± IQR of one batch's forward time; 'noisy' when the "
                                                    "IQR is at least half the median."),
        "× base": num("× base", format="%.2f×", width=65,
                      help="Latency / the base's, timed beside it (interleaved); empty when not timed so."),
        "latency timed": st.column_config.TextColumn("latency timed", width=260),
    })
    cur = ws.plan
    labels = quick["steps"].tolist()
    cur_i = next((j for j, i in enumerate(quick["#"]) if ws.log[int(i)].plan == cur), None)
    c1, c2 = st.columns(2)
    with c1:
        ev1 = st.plotly_chart(pareto_figure(quick["nonzero params"].tolist(), quick["accuracy"].tolist(), labels,
                                            x_title="non-zero parameters", current=cur_i,
                                            title=f"{name.capitalize()} vs non-zero parameters", y_title=name),
                              width="stretch", key="pareto_params", on_select="rerun",
                              selection_mode="points")
    with c2:
        ev2, lat = _latency_chart(ws, quick)
    for ev, frame in ((ev1, quick), (ev2, lat)):
        pts = (ev or {}).get("selection", {}).get("points", []) if ev else []
        if pts and "customdata" in pts[0]:
            row = frame.iloc[int(pts[0]["customdata"])]
            plan = ws.log[int(row["#"])].plan
            if plan != ws.plan:
                run_action(ws.goto, plan, success="Restored the selected plan.")
                st.rerun()
    options = {f"#{int(r['#'])} · {r['steps']} · {fmt.pct(r['accuracy'])}": int(r["#"]) for _, r in quick.iterrows()}
    ss = st.session_state
    if ss.get("_restore_synced") != ws.plan.key():  # the box shows the current plan after any change
        ss["_restore_synced"] = ws.plan.key()
        current = [o for o, i in options.items() if ws.log[i].plan == ws.plan]
        if current:
            ss["restore_choice"] = current[-1]
    c1, c2 = st.columns([4, 1])
    choice = c1.selectbox("Restore a plan", list(options), key="restore_choice")
    if c2.button("Restore", key="restore_btn", width="stretch") and choice:
        run_action(ws.goto, ws.log[options[choice]].plan, success="Restored the selected plan.")
        st.rerun()


page()
