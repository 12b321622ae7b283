"""A small cache of facts about model objects, for the places that have no apply context.

Facts derived while an edit is built go in ``ApplyContext.memo(model)`` (one memo per
context and source model). A few facts are asked for where no context exists (the app's
block picker, ``block_names`` inside a step, the CLI), so they live here instead: keyed
weakly by the model object (a model that is dropped takes its entry with it) and at most
``size`` models at a time (the oldest go first), so a long-lived server never grows.
Each value is computed from its model alone, never from another session's model, so
two sessions sharing a pristine base share only facts that are the same for both.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from torch import nn

V = TypeVar("V")


class ModelCache(Generic[V]):
    """A weak-keyed, bounded map from model objects to values.

    Args:
        size: models kept at most; adding one more drops the oldest entry.
    """

    def __init__(self, size: int = 64):
        self.size = size
        self._d: weakref.WeakKeyDictionary[nn.Module, V] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, model: nn.Module) -> V | None:
        """The value kept for ``model``, or None."""
        with self._lock:
            return self._d.get(model)

    def put(self, model: nn.Module, value: V) -> V:
        """Keep ``value`` for ``model`` (dropping the oldest entry when full); returns it."""
        with self._lock:
            self._d.pop(model, None)
            while len(self._d) >= self.size:
                oldest = next(iter(self._d.keys()), None)
                if oldest is None:
                    break
                del self._d[oldest]
            self._d[model] = value
        return value

    def setdefault(self, model: nn.Module, make: Callable[[], V]) -> V:
        """The value kept for ``model``, made with ``make()`` and kept when there is none."""
        hit = self.get(model)
        return hit if hit is not None else self.put(model, make())

    def __len__(self) -> int:
        return len(self._d)


__all__ = ["ModelCache"]
