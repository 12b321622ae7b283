"""Where a sweep's tasks run: in this process (``local``, the default) or on Ray actors
(``ray``: a local Ray instance, or a cluster at ``address``).

Both run the same :class:`~core.sensitivity.runner.Runner` on the same tasks, and the
sweep adds the results up in task order, so they give the same numbers. Ray puts the
payload (source model and calibration batch) into its object store once, and each shard of
the evaluation subset (inputs, labels, the base's outputs) once; each actor takes the
payload once and a shard the first time a task names it (Ray moves an object to a node
once), then receives only tasks (a few names and numbers) and returns a few sums per point.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from core.errors import PrunescopeError
from core.ground.registry import Registry
from core.sensitivity.runner import Payload, Point, Runner, Task

EXECUTORS: Registry[type] = Registry("executor")

OnResult = Callable[[int, list[Point]], None]


@EXECUTORS.register("local")
class LocalExecutor:
    """Runs every task in this process, in order, on the payload's device."""

    name = "local"

    def run(self, payload: Payload, tasks: list[Task], on_result: OnResult,
            should_stop: Callable[[], bool] = lambda: False) -> None:
        runner = Runner(payload)
        for i, task in enumerate(tasks):
            if should_stop():
                return
            on_result(i, runner.run(task))


def _ray():
    try:
        import ray
    except ImportError as exc:
        raise PrunescopeError("the ray executor needs Ray: pip install 'prunescope[ray]' "
                              "(or pip install ray); the local executor needs nothing") from exc
    return ray


@EXECUTORS.register("ray")
class RayExecutor:
    """Runs tasks on ``workers`` Ray actors (one CPU each), at most two in flight per actor.

    Args:
        address: an existing cluster (``ray://host:10001`` or ``host:6379``); None starts
            (or joins the running) local instance on 127.0.0.1.
        workers: actors to start (default: the CPUs Ray reports, at most 8).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise PrunescopeError(f"workers must be a whole number of at least 1, got {workers!r}")
        self.address, self.workers = address, workers

    def _init(self, ray) -> None:
        if ray.is_initialized():
            return
        if self.address:
            ray.init(address=self.address, log_to_driver=False)
        else:
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")

    def run(self, payload: Payload, tasks: list[Task], on_result: OnResult,
            should_stop: Callable[[], bool] = lambda: False) -> None:
        ray = _ray()
        self._init(ray)
        n = self.workers or max(1, min(8, int(ray.cluster_resources().get("CPU", 1))))
        cpu = payload.to("cpu")
        ref = ray.put(cpu.without_data())  # the model and calibration batch, once, into the object store
        shards = {t.shard: None for t in tasks}
        data = {s: ray.put(cpu.shard_data(s)) for s in shards}  # each shard once; a task names its shard
        actor = ray.remote(num_cpus=1)(_RemoteRunner)
        actors = [actor.remote(ref) for _ in range(min(n, max(1, len(tasks))))]
        try:
            _drive(ray, actors, tasks, data, on_result, should_stop)
        finally:
            for a in actors:
                ray.kill(a)


class _RemoteRunner:
    def __init__(self, payload: Payload):
        self.runner = Runner(payload, remote=True)

    def run(self, task: Task, data) -> list[Point]:
        # an actor keeps each shard it received; Ray fetches a shard to a node once
        return self.runner.run(task, None if task.shard in self.runner._data else data)


def _drive(ray, actors, tasks: list[Task], data: dict, on_result: OnResult, should_stop) -> None:
    """Keep every actor busy (two tasks queued each), hand results back in task order."""
    pending: dict = {}  # object ref -> task index
    done: dict[int, list[Point]] = {}
    nxt, emitted = 0, 0
    free = [a for a in actors for _ in range(2)]
    owner: dict = {}
    while emitted < len(tasks):
        if should_stop():
            return
        while free and nxt < len(tasks):
            a = free.pop(0)
            r = a.run.remote(tasks[nxt], data[tasks[nxt].shard])
            pending[r], owner[r] = nxt, a
            nxt += 1
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for r in ready:
            done[pending.pop(r)] = ray.get(r)
            free.append(owner.pop(r))
        while emitted in done:
            if should_stop():
                return
            on_result(emitted, done.pop(emitted))
            emitted += 1


def get_executor(name: str | object = "local", **kwargs):
    """An executor by name ("local", "ray") or an executor object as it is."""
    if not isinstance(name, str):
        return name
    return EXECUTORS.get(name)(**kwargs)


def list_executors() -> Iterable[str]:
    return EXECUTORS.names()


__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "get_executor", "list_executors"]
