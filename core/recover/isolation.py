"""What training steps (Finetune and its Heal preset) share: the digest of a model's
weights, the process-wide training lock (thread count and global random state held by
one run at a time), and the memo that makes committing a run the app just made free
(the plan replays the step from it instead of training again)."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

# One training run at a time in this process. A run may set the CPU thread count (a
# recipe records it: sums in another order give other weights) and seed the global
# random generator (dropout); both are process-wide, so two runs at once (two browser
# sessions) would change each other's results. Held by TrainedMemo.run around train().
TRAINING_LOCK = threading.RLock()


def digest(model: nn.Module) -> str:
    """sha1 over the state dict's names, shapes and bytes, and the module types."""
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    for n, m in model.named_modules():
        h.update(f"{n}:{type(m).__name__}".encode())
    return h.hexdigest()


@contextmanager
def threads_set(n: int | None) -> Iterator[None]:
    """Run with ``n`` CPU threads (None: as they are), then restore the count.
    Process-wide: hold :data:`TRAINING_LOCK` around it."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


# Layers that draw from torch's global generator in train mode (they take no generator).
RANDOM_LAYERS = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU)


def random_layers(model: nn.Module) -> list[str]:
    """Names of the modules that draw random numbers in train mode (dropout, RReLU)."""
    return [n for n, m in model.named_modules() if isinstance(m, RANDOM_LAYERS)]


@contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """The global generators (CPU, and ``device``'s if CUDA) seeded with ``seed`` inside,
    restored after (``torch.random.fork_rng``). For layers that take no generator
    (dropout); process-wide: hold :data:`TRAINING_LOCK` around it."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(seed)
        yield


@contextmanager
def training_turn(should_stop: Callable[[], bool] | None = None,
                  on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold :data:`TRAINING_LOCK`; yields True once held, or False if ``should_stop`` says
    True while waiting for another run (nothing held then). ``on_wait()`` is called once
    when the lock is busy."""
    if TRAINING_LOCK.acquire(blocking=False):
        held = True
    else:
        if on_wait is not None:
            on_wait()
        held = False
        while not held:
            held = TRAINING_LOCK.acquire(timeout=0.1)
            if not held and should_stop is not None and should_stop():
                break
    try:
        yield held
    finally:
        if held:
            TRAINING_LOCK.release()


class TrainedMemo:
    """The last few trained results, keyed by input weights, device, model and step.

    A step kind that trains has ``steps`` and ``threads`` and implements
    ``stopped_after(k)``: the step a run stopped after ``k`` steps equals. A stopped run is
    stored under that step (what the app records), so replaying it costs nothing.
    Safe to use from several threads; training itself runs one at a time
    (:data:`TRAINING_LOCK`).
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._items: OrderedDict[tuple, tuple[dict, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, step, model: nn.Module, ctx) -> tuple[nn.Module, dict] | None:
        """The memoised result of ``step`` on ``model``'s weights, or None."""
        return self._get(self._where(model, ctx), step, model)

    @staticmethod
    def _where(model: nn.Module, ctx) -> tuple:
        return digest(model), str(ctx.device), ctx.model_name

    def _get(self, where: tuple, step, model: nn.Module) -> tuple[nn.Module, dict] | None:
        from core.sources.bases import clone_model

        with self._lock:
            hit = self._items.get((*where, step))
            if hit is not None:
                self._items.move_to_end((*where, step))
        if hit is None:
            return None
        m = clone_model(model)
        m.load_state_dict(hit[0])
        return m.eval(), dict(hit[1])

    def run(self, step, model: nn.Module, ctx, train: Callable[[], tuple[nn.Module, dict]], *,
            should_stop: Callable[[], bool] | None = None, on_wait: Callable[[], None] | None = None
            ) -> tuple[nn.Module, dict]:
        """``train()`` under ``step.threads`` and the training lock, unless ``step``
        already ran on these weights. Cancelled (``should_stop``) while waiting for the
        lock: ``train`` is not called, and the result is ``model`` with ``steps_run`` 0."""
        where = self._where(model, ctx)
        hit = self._get(where, step, model)
        if hit is not None:
            return hit
        with training_turn(should_stop, on_wait) as held:
            if not held:
                return model, {"steps_run": 0, "stopped": True, "losses": [], "before": None, "after": None,
                               "trained_params": 0, "masked_weights": 0, "threads": step.threads}
            with threads_set(step.threads):
                m, info = train()
                info["threads"] = torch.get_num_threads()
        done = step.stopped_after(info["steps_run"])
        with self._lock:
            self._items[(*where, done)] = ({k: v.detach().clone() for k, v in m.state_dict().items()}, info)
            self._items.move_to_end((*where, done))
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return m, dict(info)


__all__ = ["digest", "threads_set", "random_layers", "seeded_global_rng", "training_turn", "TrainedMemo",
           "TRAINING_LOCK"]
