"""Training in the background: a thread runs a training step (Finetune, Heal) while the
page stays usable; a small fragment polls it for its progress bar and its Cancel button.

Why a thread: a click inside a fragment does not interrupt the fragment's run in
progress (Streamlit lets it finish), so a Cancel button next to a training loop that runs
in the page could never stop it. Here Cancel only sets a flag that the loop polls before
every step; the steps done so far become the plan's step (``steps=k``), which replays to
the same weights.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import streamlit as st

from core.workspace import Workspace

from .components import error_message
from .state import flash


class TrainingJob:
    """One training step running on a copy of the current model in a thread."""

    def __init__(self, ws: Workspace, step: Any, label: str):
        self.ws, self.step, self.label = ws, step, label
        self.plan_key = ws.plan.key()
        self.done, self.total, self.loss = 0, int(step.steps), None
        self.cancelled = False
        self.result: tuple | None = None
        self.error: tuple[str, str | None] | None = None
        self.started = time.monotonic()
        model, ctx = ws.model, ws.ctx  # taken here, in the page's thread

        def work() -> None:
            try:
                self.result = step.run(model, ctx, progress=self._progress, should_stop=lambda: self.cancelled)
            except Exception as exc:  # noqa: BLE001 - shown on the page, the plan is kept
                self.error = error_message(exc)

        self.thread = threading.Thread(target=work, name=f"prunescope-{label}", daemon=True)
        self.thread.start()

    def _progress(self, done: int, total: int, loss: float) -> None:
        self.done, self.total, self.loss = done, total, loss

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def text(self) -> str:
        loss = f" · batch loss {self.loss:.3f}" if self.loss is not None else ""
        secs = time.monotonic() - self.started
        return f"{self.label}: step {self.done} of {self.total}{loss} · {secs:.0f} s"

    def finish(self) -> None:
        """Put what ran into the plan (a stopped run as the shorter step it equals)."""
        if self.error is not None:
            flash("error", *self.error)
            return
        _, info = self.result
        ran = info["steps_run"]
        if not ran:
            flash("info", f"{self.label} cancelled before its first step; the plan is unchanged.")
            return
        if self.ws.plan.key() != self.plan_key:
            flash("warning", f"{self.label} finished, but the plan changed meanwhile; its result was not added "
                             "(run it again on the current plan).")
            return
        fields = {"steps": ran}
        if "horizon" in {f.name for f in dataclasses.fields(self.step)}:
            fields["horizon"] = self.step.horizon or self.step.steps  # the schedule it ran on
        done = dataclasses.replace(self.step, **fields)
        try:
            self.ws.add_step(done)  # replays from the step's memo: no retraining
        except Exception as exc:  # noqa: BLE001
            flash("error", *error_message(exc))
            return
        a, b = info["before"], info["after"]
        what = f"Stopped after {ran} of {self.step.steps} steps; kept as that shorter step. " if info["stopped"] else ""
        flash("success", f"{what}{self.label}: trained {info['trained_params']:,} parameters; calibration accuracy "
                         f"{100 * a['accuracy']:.1f}% → {100 * b['accuracy']:.1f}%.")


class PlanJob(TrainingJob):
    """Several steps applied in turn in a thread (e.g. gradual pruning: prune, fine-tune,
    prune, ...). Cancel stops a training step early (kept as its shorter step) and skips
    the steps after it; the steps done are added to the plan as one edit."""

    def __init__(self, ws: Workspace, steps: list, label: str):  # noqa: D107 - no super().__init__: own thread
        self.ws, self.steps, self.label = ws, list(steps), label
        self.plan_key = ws.plan.key()
        self.done, self.total, self.loss = 0, len(self.steps), None
        self.cancelled = False
        self.result, self.error = None, None
        self.current = ""
        self.started = time.monotonic()
        model, ctx = ws.model, ws.ctx

        def work() -> None:
            m, ran = model, []
            try:
                for i, step in enumerate(self.steps):
                    if self.cancelled:
                        break
                    self.done, self.current, self.loss = i, step.describe(), None
                    if hasattr(step, "run"):  # a training step: progress and cancel inside it
                        m, info = step.run(m, ctx, progress=self._progress_inner, should_stop=lambda: self.cancelled)
                        if info["steps_run"] < step.steps:
                            step = dataclasses.replace(step, steps=info["steps_run"],
                                                       **({"horizon": step.horizon or step.steps}
                                                          if hasattr(step, "horizon") else {}))
                        if info["steps_run"]:
                            ran.append(step)
                    else:
                        m, _ = step.build(m, ctx)
                        ran.append(step)
                    m.eval()
                self.done = len(ran)
                self.result = ran
            except Exception as exc:  # noqa: BLE001 - shown on the page, the plan is kept
                self.error = error_message(exc)

        self.thread = threading.Thread(target=work, name=f"prunescope-{label}", daemon=True)
        self.thread.start()

    def _progress_inner(self, done: int, total: int, loss: float) -> None:
        self.loss = loss
        self.inner = f"{done} of {total}"

    def text(self) -> str:
        inner = f" ({getattr(self, 'inner', '')} · batch loss {self.loss:.3f})" if self.loss is not None else ""
        secs = time.monotonic() - self.started
        return f"{self.label}: step {self.done + 1} of {self.total} · {self.current}{inner} · {secs:.0f} s"

    def finish(self) -> None:
        if self.error is not None:
            flash("error", *self.error)
            return
        ran = self.result or []
        if not ran:
            flash("info", f"{self.label} cancelled before its first step; the plan is unchanged.")
            return
        if self.ws.plan.key() != self.plan_key:
            flash("warning", f"{self.label} finished, but the plan changed meanwhile; its steps were not added.")
            return
        plan = self.ws.plan
        for s in ran:
            plan = plan.then(s)
        try:
            self.ws.set_plan(plan)  # training steps replay from their memo
        except Exception as exc:  # noqa: BLE001
            flash("error", *error_message(exc))
            return
        what = f"Stopped after {len(ran)} of {self.total} steps. " if len(ran) < self.total or self.cancelled else ""
        flash("success", f"{what}{self.label}: added {len(ran)} steps (one undo takes them back).")


def start_job(key: str, ws: Workspace, step: Any, label: str) -> None:
    """Start ``step`` (or a list of steps) in the background unless a job of this panel runs."""
    job = st.session_state.get(key)
    if job is not None and job.running:
        return
    st.session_state[key] = PlanJob(ws, step, label) if isinstance(step, list) else TrainingJob(ws, step, label)


@st.fragment(run_every=0.5)
def _poll(key: str) -> None:
    ss = st.session_state
    job: TrainingJob | None = ss.get(key)
    if job is None:
        return
    if job.running:
        st.progress(job.done / max(1, job.total), text=job.text())
        st.button("Cancel", key=f"{key}_cancel", icon=":material/stop_circle:",
                  on_click=lambda: setattr(job, "cancelled", True),
                  help="Stops after the step in progress; the steps done become the plan's step.")
        if job.cancelled:
            st.caption("Stopping after the step in progress…")
        return
    ss.pop(key, None)
    job.finish()
    st.rerun()  # the page's figures were drawn before the result


def job_ui(key: str) -> bool:
    """Progress and Cancel of this panel's job while it runs. Returns True while one runs."""
    job = st.session_state.get(key)
    if job is None:
        return False
    _poll(key)
    return True


__all__ = ["TrainingJob", "PlanJob", "start_job", "job_ui"]
