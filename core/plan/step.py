"""The step contract and the registry of step kinds.

A step is a frozen dataclass of names and numbers. Its fields are declared with
constraints (``core.ground.constraints``) and checked in one place when it is made. Every
kind implements ``build(model, ctx) -> (model, StepReport)`` without changing its input,
so prefix models can be cached; the report records what it decided.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

from core.errors import StepError, echo
from core.ground.constraints import Checked
from core.ground.registry import Registry

# The step kinds live with their concept (core.prune, core.surgery, core.recover) and
# register themselves when imported; the entry points import them (core.startup).
STEPS: Registry[type[Step]] = Registry("step")


def register_step(cls: type[Step]) -> type[Step]:
    """Class decorator: make a step kind known to recipes under ``cls.op``."""
    STEPS.register(cls.op, cls)
    return cls


def list_steps() -> list[str]:
    return STEPS.names()


class Step(Checked, abc.ABC):
    """Base of all plan steps. Subclasses are frozen dataclasses with ``op`` and
    ``constraints`` set, and implement :meth:`build`."""

    op: ClassVar[str] = ""
    trains: ClassVar[bool] = False  # True: the step trains (time and compute; replays it with care)

    @abc.abstractmethod
    def build(self, model, ctx):
        """``(new model, StepReport)``; ``model`` is not changed.

        Raises:
            PrunescopeError: the step does not fit the model (``apply`` names the step).
        """

    def to_dict(self) -> dict:
        d = {"op": self.op}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else
                     (list(x) if isinstance(x, tuple) else x) for x in v]
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        """A step from its recipe object (``op`` plus fields).

        Raises:
            StepError: unknown fields or bad values; the message names the field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(d) - names - {"op"})
        if unknown:
            raise StepError(f"step {cls.op!r}: unknown field(s) {echo(unknown)}; valid: {sorted(names)}")
        kwargs = {k: v for k, v in d.items() if k != "op"}
        return cls(**cls._coerce(kwargs))

    @classmethod
    def _coerce(cls, kwargs: dict) -> dict:
        """Turn JSON lists back into the tuples a frozen step holds."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}

    def describe(self) -> str:
        """One line for lists and logs."""
        return self.op


__all__ = ["Step", "STEPS", "register_step", "list_steps"]
