"""History: every evaluated plan, its figures, and the Pareto front; restore any plan."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from app.messages import run_action, show_flashes
from app.session import get_workspace
from core.ground import formatting as fmt
from core.viz.figures import pareto_figure


def history_frame(ws) -> pd.DataFrame:
    rows = []
    for i, e in enumerate(ws.log):
        m = e.metrics
        rows.append({
            "#": i, "time": dt.datetime.fromtimestamp(e.time).strftime("%H:%M:%S"),
            "steps": "; ".join(e.plan.describe()) or "(base)", "subset": m.subset,
            "accuracy": m.accuracy, "sparsity": m.sparsity, "params": m.params,
            "nonzero params": m.nonzero_params, "MACs": m.macs,
            "latency ms": m.latency.median_ms if m.latency else None,
        })
    return pd.DataFrame(rows)


def page() -> None:
    show_flashes()
    ws = get_workspace()
    st.markdown(f"### History · {ws.name}")
    ws.metrics("quick")  # the current plan is always in the log
    df = history_frame(ws)
    quick = df[df["subset"] == "quick"].drop_duplicates(subset=["steps"], keep="last")
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "accuracy": st.column_config.NumberColumn(format="percent"),
        "sparsity": st.column_config.NumberColumn(format="percent"),
        "latency ms": st.column_config.NumberColumn(format="%.2f"),
    })
    cur = ws.plan
    labels = quick["steps"].tolist()
    cur_i = next((j for j, i in enumerate(quick["#"]) if ws.log[int(i)].plan == cur), None)
    c1, c2 = st.columns(2)
    with c1:
        ev1 = st.plotly_chart(pareto_figure(quick["nonzero params"].tolist(), quick["accuracy"].tolist(), labels,
                                            x_title="non-zero parameters", current=cur_i,
                                            title="Accuracy vs non-zero parameters"),
                              width="stretch", key="pareto_params", on_select="rerun",
                              selection_mode="points")
    with c2:
        lat = quick.dropna(subset=["latency ms"])
        ev2 = st.plotly_chart(pareto_figure(lat["latency ms"].tolist(), lat["accuracy"].tolist(),
                                            lat["steps"].tolist(), x_title="latency (ms)",
                                            current=next((j for j, i in enumerate(lat["#"])
                                                          if ws.log[int(i)].plan == cur), None),
                                            title="Accuracy vs latency"),
                              width="stretch", key="pareto_latency", on_select="rerun",
                              selection_mode="points")
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
