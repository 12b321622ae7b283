"""Background jobs (app/jobs.py): each reads its own snapshot, publishes once when it
ends, is cancelled when its session ends; a sweep run in a thread never fills the dict
the page iterates over."""
from __future__ import annotations

import gc
import threading
import time

from app.jobs import CallJob, SessionJobs, StepsJob
from core.plan import Plan
from core.prune import Prune
from core.recover import Finetune
from core.recover import training as T
from core.sensitivity import run_sweep
from core.workspace import Workspace


def test_a_dropped_session_token_ends_its_jobs():
    tok = SessionJobs()
    ended = tok.ended
    assert not ended.is_set()
    del tok
    gc.collect()
    assert ended.is_set()


def test_a_training_job_stops_when_its_session_ends_and_trains_on_its_own_copy():
    T._MEMO.clear()
    ws = Workspace("digits_mlp", "cpu")
    ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.5))
    ended = threading.Event()
    job = StepsJob(ws, [Finetune(steps=100_000, batch_size=8)], "Fine-tuning", ended)
    deadline = time.monotonic() + 60
    while job.inner[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ended.set()  # what the session token's finalizer does
    job.thread.join(60)
    assert not job.thread.is_alive() and job.error is None
    (step,) = job.ran
    assert 2 <= step.steps < 100_000 and job.info["stopped"]


def test_a_job_runs_on_a_snapshot_not_on_the_pages_model():
    ws = Workspace("digits_mlp", "cpu")
    seen = []

    class Probe(Prune):  # a step that records the model it is given
        def build(self, model, ctx):
            seen.append((model, ctx))
            return super().build(model, ctx)

    job = StepsJob(ws, [Probe(criterion="l1", granularity="weight", sparsity=0.1)], "probe")
    job.thread.join(60)
    (model, ctx), = seen
    assert model is not ws.model and ctx is not ws.ctx
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), ws.model.state_dict().values()))


def test_a_sweep_in_a_thread_publishes_only_through_the_page():
    ws = Workspace("digits_mlp", "cpu")
    before = ws.sweeps
    spec = ws.sensitivity_spec("l1", "weight", (0.5,))
    payload = ws.sweep_payload(spec)  # the snapshot, taken in the page's thread

    def work(progress, should_stop):
        return run_sweep(spec, payload, progress=progress, should_stop=should_stop)

    job = CallJob(work, "sweep", on_done=lambda r: ("success", "done"))
    job.thread.join(120)
    assert job.error is None and job.result.complete
    assert ws.sweeps is before and not ws.sweeps  # the thread wrote nothing into the workspace
    result = job.result
    ws.keep_sweep(spec.key, result)  # the page publishes, in one step: a new dict
    assert ws.sweeps is not before and ws.sweeps[spec.key] is result and not before


def test_a_sweeps_snapshot_is_the_plan_it_started_on():
    """The job reads the spec and payload taken when it starts: a plan changed before its
    thread runs changes neither the model it sweeps nor the key its result is kept under."""
    ws = Workspace("digits_mlp", "cpu")
    spec = ws.sensitivity_spec("l1", "neuron", (0.5,))
    payload = ws.sweep_payload(spec)
    source = ws.metrics(latency=False).accuracy
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.5))
    assert ws.metrics(latency=False).accuracy != source
    gate = threading.Event()

    def work(progress, should_stop):
        gate.wait(60)
        return run_sweep(spec, payload, progress=progress, should_stop=should_stop)

    job = CallJob(work, "sweep", on_done=lambda r: ("success", "done"))
    ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.5))  # and again, while it waits
    gate.set()
    job.thread.join(120)
    s = job.result
    assert job.error is None and s.complete and s.plan == spec.plan == Plan("digits_mlp").key()
    assert s.plan_steps == 0 and s.source["accuracy"] == source
    assert spec.key[1] == s.plan


# Issue 23: a job's result enters the plan once, only on the plan it started on, and an
# Undo clicked after the job ended acts on the plan with the result.

def test_a_job_result_is_settled_once_and_not_on_a_plan_that_moved():
    ws = Workspace("digits_mlp", "cpu")
    ws.add_step(Prune(criterion="l1", granularity="weight", sparsity=0.5))
    pruned = ws.plan
    job = StepsJob(ws, [Prune(criterion="l1", granularity="neuron", sparsity=0.25)], "probe")
    job.thread.join(60)
    ws.undo()  # the history moved while the job ran: its result is for another plan
    assert ws.set_plan(pruned.then(job.ran[0]), expect=pruned.key()) is None
    assert ws.plan == Plan("digits_mlp") and len(ws.history) == 2
    ws.redo()
    assert ws.set_plan(pruned.then(job.ran[0]), expect=pruned.key()) is not None
    assert list(ws.plan.steps) == [*pruned.steps, job.ran[0]] and len(ws.history) == 3


def test_undo_after_a_job_ended_undoes_its_step_not_the_one_before():
    from tests.helpers.app import new_app, ok, workspace

    at = new_app("digits_mlp")
    at.slider(key="global_sparsity").set_value(0.5).run()
    ws = workspace(at)
    pruned = ws.plan
    at.session_state["prune_ft_steps_auto"] = False
    at.number_input(key="prune_ft_steps").set_value(5000).run()
    at.button(key="prune_ft_start").click().run()
    job = at.session_state["prune_ft_job"]
    while job.inner[0] < 2 and job.running:
        time.sleep(0.02)
    job.cancelled = True  # what Cancel does
    job.thread.join(300)  # it ended; the poll has not taken its result yet when Undo is clicked
    at.button(key="prune_undo").click().run()
    ok(at)
    assert ws.plan == pruned and len(ws.history) == 3 and ws.pos == 1  # [], prune, prune + fine-tune
    assert len(ws.history[2].steps) == 2 and not job.settle()  # taken once, by the Undo
    at.run()
    assert ws.plan == pruned and len(ws.history) == 3
