"""What training steps (Heal, Finetune) share: the digest of a model's weights, a thread
count held while training, and the memo that makes committing a run the app just made
free (the plan replays the step from it instead of training again)."""
from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn


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
def threads_set(n: int | None):
    """Run with ``n`` CPU threads (None: as they are), then restore the count."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


class TrainedMemo:
    """The last few trained results, keyed by input weights, device, model and step.

    A run stopped after k steps is stored under the step with ``steps=k``: what the app
    records, so replaying it costs nothing.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._items: OrderedDict[tuple, tuple[dict, dict]] = OrderedDict()

    def clear(self) -> None:
        self._items.clear()

    def run(self, step, model: nn.Module, ctx, train: Callable[[], tuple[nn.Module, dict]]
            ) -> tuple[nn.Module, dict]:
        """``train()`` under ``step.threads`` unless ``step`` already ran on these weights."""
        from core.models import clone_model

        key = (digest(model), str(ctx.device), ctx.model_name)
        hit = self._items.get((*key, step))
        if hit is not None:
            m = clone_model(model)
            m.load_state_dict(hit[0])
            self._items.move_to_end((*key, step))
            return m.eval(), dict(hit[1])
        with threads_set(step.threads):
            m, info = train()
        info["threads"] = torch.get_num_threads() if step.threads is None else step.threads
        done = dataclasses.replace(step, steps=info["steps_run"])
        self._items[(*key, done)] = ({k: v.clone() for k, v in m.state_dict().items()}, info)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return m, info


__all__ = ["digest", "threads_set", "TrainedMemo"]
