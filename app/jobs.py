"""Long work in the background: a thread runs a training step (Finetune, Heal) or a
sweep (sensitivity, criteria curves) while the page stays usable; a small fragment polls
it for its progress bar and its Cancel button.

Why a thread: a click inside a fragment does not interrupt the fragment's run in
progress (Streamlit lets it finish), so a Cancel button next to a training loop that runs
in the page could never stop it. Here Cancel only sets a flag that the loop polls before
every step; the steps done so far become the plan's step (``step.stopped_after(k)``),
which replays to the same weights.

The job model: a job reads only its own snapshot, taken in the page's thread when it
starts (a copy of the model and a fresh apply context for a training job; the checked
spec and a copy of the model with its data for a sweep); its thread never reads or writes
the workspace or the session. Its result is published once, when the
thread ends (one attribute), and the page's poll puts it into the plan or ``ws.sweeps``.
Training runs one at a time in the process (``core.recover.isolation.TRAINING_LOCK``: thread
count and global random state are process-wide); a job waiting for it says so. When a
session ends (its state is dropped) its jobs are cancelled (:class:`SessionJobs`).
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import streamlit as st

from app.messages import error_message, flash, run_action
from core.errors import PrunescopeError
from core.plan import ApplyContext
from core.sensitivity import SweepSpec, run_sweep
from core.sources.bases import clone_model
from core.workspace import Workspace


class SessionJobs:
    """A token kept in one session's state: when Streamlit drops that state (the session
    ended), a finalizer sets :attr:`ended`, which every job of the session polls as its
    Cancel (the job threads hold the event, never the token, so they do not keep it
    alive), as the Export page's ``SessionFolder`` removes its folder."""

    KEY = "_session_jobs"

    def __init__(self):
        self.ended = threading.Event()
        weakref.finalize(self, self.ended.set)

    @classmethod
    def of_session(cls) -> threading.Event:
        """The current session's ``ended`` event (its token made on first use)."""
        tok = st.session_state.get(cls.KEY)
        if tok is None:
            tok = st.session_state[cls.KEY] = cls()
        return tok.ended


class _Settled:
    """What a job leaves when it ends is taken once (:meth:`settle`), by whichever comes
    first: the poll that sees it end, or an Undo / Redo / Reset clicked meanwhile
    (:func:`settle_jobs`), so the history always moves from the plan with the job's result."""

    def settle(self, wait: float = 0.0) -> bool:
        """Run :meth:`finish` if the job has ended and nobody did yet; True when this call did.
        ``wait``: seconds to let a cancelled job end its step in progress first."""
        if self.running and self.cancelled and wait > 0:
            self.thread.join(wait)
        with self._settle_lock:
            if self.running or self._settled:
                return False
            self._settled = True
        self.finish()
        return True


def _duration(seconds: float) -> str:
    """``42 s`` or ``3 min 05 s``."""
    s = max(0, round(seconds))
    return f"{s} s" if s < 90 else f"{s // 60} min {s % 60:02d} s"


class StepsJob(_Settled):
    """Steps applied in turn to a copy of the current model in a thread: one training
    step (Finetune, Heal), or several (gradual pruning: prune, fine-tune, prune, ...).
    Cancel stops a training step early (kept as the shorter step it equals) and skips the
    steps after it; the steps done are added to the plan as one edit."""

    def __init__(self, ws: Workspace, steps: list, label: str, ended: threading.Event | None = None):
        self.ws, self.steps, self.label = ws, list(steps), label
        self.plan = ws.plan  # the plan it trains on: its result is added to this plan only
        self.plan_key = self.plan.key()
        self._settle_lock, self._settled = threading.Lock(), False
        self.index, self.inner, self.loss = 0, (0, 0), None
        self.cancelled, self.waiting = False, False
        self.ended = ended or threading.Event()  # set when the session ends: cancels the job
        self.ran: list | None = None  # published once, when the thread ends
        self.info: dict | None = None  # the last training step's report (losses, before / after)
        self.error: tuple[str, str | None] | None = None
        self.started = time.monotonic()
        self.origin: tuple[float, float] | None = None  # (time, fraction done) when progress was first seen
        # The job's own snapshot, taken here in the page's thread: a copy of the model (the
        # page keeps evaluating its own) and a fresh context (its caches are not shared).
        model = ws.model
        model = model if getattr(model, "final", False) else clone_model(model)
        ctx = ApplyContext(ws.ctx.model_name, ws.ctx.device, ws.ctx.calib_size)
        self.thread = threading.Thread(target=self._work, args=(model, ctx), name=f"prunescope-{label}", daemon=True)
        self.thread.start()

    def should_stop(self) -> bool:
        return self.cancelled or self.ended.is_set()

    def _work(self, model, ctx) -> None:
        ran = []
        try:
            for i, step in enumerate(self.steps):
                if self.should_stop():
                    break
                if getattr(model, "final", False):
                    raise PrunescopeError(f"{step.describe()}: no step can follow the plan's quantize step (an int8 "
                                          "model); undo it first")
                self.index, self.loss = i, None
                if hasattr(step, "stopped_after"):  # a training step: progress and cancel inside it
                    model, self.info = step.run(model, ctx, progress=self._progress, should_stop=self.should_stop,
                                                on_wait=self._waiting)
                    self.waiting = False
                    if self.info["steps_run"]:
                        ran.append(step.stopped_after(self.info["steps_run"]))
                else:
                    model, _ = step.build(model, ctx)
                    ran.append(step)
                model.eval()
            self.ran = ran
        except Exception as exc:  # noqa: BLE001 - shown on the page, the plan is kept
            self.error = error_message(exc)

    def _waiting(self) -> None:
        self.waiting = True

    def _progress(self, done: int, total: int, loss: float) -> None:
        self.inner, self.loss = (done, total), loss

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    @property
    def fraction(self) -> float:
        done, total = self.inner
        return (self.index + (done / total if total else 0)) / max(1, len(self.steps))

    def text(self) -> str:
        done, total = self.inner
        total = total or getattr(self.steps[self.index], "steps", 0)  # before the first progress report
        loss = f" · batch loss {self.loss:.3f}" if self.loss is not None else ""
        secs = f" · {_duration(time.monotonic() - self.started)} elapsed{self._time_left()}"
        if self.waiting:
            return f"{self.label}: waiting for another training run to finish (one runs at a time){secs}"
        if len(self.steps) == 1:
            return f"{self.label}: step {done} of {total}{loss}{secs}"
        inner = f" ({done} of {total}{loss})" if self.loss is not None else ""
        what = self.steps[self.index].describe()
        return f"{self.label}: step {self.index + 1} of {len(self.steps)} · {what}{inner}{secs}"

    def _time_left(self) -> str:
        """`` · about N s left``, from the pace since the first step was seen done (the wait
        for another run and the evaluation before training are not steps); empty before."""
        now, f = time.monotonic(), self.fraction
        if self.waiting or f <= 0:
            return ""
        if self.origin is None:
            self.origin = (now, f)
            return ""
        t0, f0 = self.origin
        if f <= f0 or now <= t0:
            return ""
        return f" · about {_duration((now - t0) / (f - f0) * (1 - f))} left"

    def finish(self) -> None:
        """Put what ran into the plan it started on, as one edit (training steps replay from
        their memo); nothing when that plan is no longer current. Called once, by :meth:`settle`."""
        if self.error is not None:
            flash("error", *self.error)
            return
        if not self.ran:
            flash("info", f"{self.label} cancelled before its first step; the plan is unchanged.")
            return
        plan = self.plan
        for s in self.ran:
            plan = plan.then(s)
        try:
            added = self.ws.set_plan(plan, expect=self.plan_key)  # refused if an undo or edit came first
        except Exception as exc:  # noqa: BLE001
            flash("error", *error_message(exc))
            return
        if added is None:
            flash("warning", f"{self.label} ended, but the plan changed meanwhile; its result was not added "
                             "(run it again on the current plan).")
            return
        flash("success", self._summary())

    def _summary(self) -> str:
        if len(self.steps) > 1:
            cut = f"Stopped after {len(self.ran)} of {len(self.steps)} steps. " if self.ran != self.steps else ""
            return f"{cut}{self.label}: added {len(self.ran)} steps (one undo takes them back)."
        info, step = self.info, self.steps[0]
        cut = (f"Stopped after {info['steps_run']} of {step.steps} steps; kept as that shorter step. "
               if info["stopped"] else "")
        a, b = info["before"], info["after"]
        return (f"{cut}{self.label}: trained {info['trained_params']:,} parameters; calibration "
                f"{info.get('measure', 'accuracy')} {100 * a['accuracy']:.1f}% → {100 * b['accuracy']:.1f}%.")


class CallJob(_Settled):
    """``fn(progress, should_stop)`` in a thread (a sweep on its snapshot, see
    :func:`start_sweep`; ``fn`` reads only what it was given): ``progress(done,
    total, what)`` feeds the bar, Cancel makes ``should_stop()`` true, and when it ends
    ``on_done(result)`` runs in the page's thread and returns the message to show."""

    def __init__(self, fn, label: str, on_done, ended: threading.Event | None = None):
        self.fn, self.label, self.on_done = fn, label, on_done
        self._settle_lock, self._settled = threading.Lock(), False
        self.done, self.total, self.what = 0, 0, "starting"
        self.cancelled = False
        self.ended = ended or threading.Event()  # set when the session ends: cancels the job
        self.result = None  # published once, when the thread ends
        self.error: tuple[str, str | None] | None = None
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._work, name=f"prunescope-{label}", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            self.result = self.fn(self._progress, lambda: self.cancelled or self.ended.is_set())
        except Exception as exc:  # noqa: BLE001 - shown on the page, the plan is kept
            self.error = error_message(exc)

    def _progress(self, done: int, total: int, what: str) -> None:
        self.done, self.total, self.what = done, total, what

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def text(self) -> str:
        return (f"{self.label}: {self.done} of {self.total or '?'} done · now {self.what} · "
                f"{time.monotonic() - self.started:.0f} s")

    def finish(self) -> None:
        if self.error is not None:
            flash("error", *self.error)
            return
        kind, message = self.on_done(self.result)
        flash(kind, message)


def start_sweep(key: str, ws: Workspace, spec: SweepSpec, label: str, on_done) -> None:
    """Start the sweep ``spec`` (``ws.sensitivity_spec`` or ``ws.curves_spec``) in the
    background unless a job of this panel runs. Its snapshot is taken here, in the page's
    thread: a copy of the current model with the subset, the base's outputs and the
    calibration batch (``ws.sweep_payload``). The thread runs ``run_sweep`` on that alone,
    so a plan changed meanwhile changes nothing it sweeps; ``on_done(result)`` runs in the
    page's thread when it ends and publishes a complete result under ``spec.key`` (the plan
    it started on). A snapshot that cannot be taken is shown as an error on the next run."""
    job = st.session_state.get(key)
    if job is not None and job.running:
        return
    payload = run_action(ws.sweep_payload, spec)
    if payload is None:
        return

    def work(progress, should_stop):
        return run_sweep(spec, payload, progress=progress, should_stop=should_stop)

    st.session_state[key] = CallJob(work, label, on_done, SessionJobs.of_session())


def start_job(key: str, ws: Workspace, step: Any, label: str) -> None:
    """Start ``step`` (or a list of steps) in the background unless a job of this panel runs."""
    job = st.session_state.get(key)
    if job is not None and job.running:
        return
    steps = step if isinstance(step, list) else [step]
    st.session_state[key] = StepsJob(ws, steps, label, SessionJobs.of_session())


@st.fragment(run_every=0.5)
def _poll(key: str) -> None:
    ss = st.session_state
    job: StepsJob | CallJob | None = ss.get(key)
    if job is None:
        return
    if job.running:
        st.progress(min(1.0, job.fraction), text=job.text())
        if job.cancelled:
            st.caption("Stopping after the step in progress…")
        return
    ss.pop(key, None)
    job.settle()  # (unless an Undo / Redo clicked meanwhile took its result first)
    st.rerun()  # the page was drawn before the result, with this job as running


def settle_jobs(wait: float = 10.0) -> None:
    """Take the results of this session's jobs that have ended (a cancelled one gets
    ``wait`` seconds to end its step in progress) before the history moves: the one place,
    with the poll, where a job's result enters the plan. Undo, Redo and Reset call it
    first, so they act on the plan with the result, not on the plan before it. A training job
    still running is cancelled first (its result would no longer fit the plan the history moves
    away from): the steps it ran are added, and the move then acts on them."""
    ss = st.session_state
    for key, job in [(k, v) for k, v in ss.items() if isinstance(v, _Settled)]:
        if isinstance(job, StepsJob) and job.running:
            job.cancelled = True
        job.settle(wait)
        if not job.running:
            ss.pop(key, None)  # the page then draws no job: its buttons are enabled again


def job_ui(key: str) -> bool:
    """Progress and Cancel of this panel's job while it runs. Returns True while one runs."""
    job = st.session_state.get(key)
    if job is None:
        return False
    _poll(key)
    if job.running:  # outside the fragment: a button redrawn every poll could lose a click
        st.button("Cancel", key=f"{key}_cancel", icon=":material/stop_circle:", on_click=_cancel, args=(job,),
                  help="Stops after the step in progress; what is done is kept (training: the steps run "
                       "become the plan's step; a sweep: the layers finished).")
    return True


def _cancel(job: StepsJob | CallJob) -> None:
    job.cancelled = True


__all__ = ["StepsJob", "CallJob", "SessionJobs", "start_job", "start_sweep", "job_ui", "settle_jobs"]
