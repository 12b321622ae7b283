"""One error family for the person's mistakes.

Core raises these, and only these, for input a person gave: a bad step value, a plan
that does not fit its model, a file that cannot be read, a model that cannot do what
was asked, an unknown name. The app and the CLI catch :class:`PrunescopeError` alone:
anything else is a bug and is shown as one (the app: an error box with the traceback;
the CLI: exit 1 with the traceback).

Every class derives from ``ValueError`` so code written against the documented
``ValueError`` keeps working.
"""
from __future__ import annotations

MAX_ECHO = 200  # characters of a person's value repeated in a message


class PrunescopeError(ValueError):
    """Base of every user-facing error: the message says what was wrong and what is accepted."""


class StepError(PrunescopeError):
    """A step (or a recipe's step) holds a value its field does not accept."""


class PlanError(PrunescopeError):
    """A step of a plan could not be applied to its model; the message names the step.

    Attributes:
        index: 0-based position of the step in the plan.
        step: the step.
        reason: why it does not fit.
    """

    def __init__(self, index: int, step, reason: str):
        self.index, self.step, self.reason = index, step, reason
        super().__init__(f"step {index + 1} ({step.describe()}): {reason}")


class FileError(PrunescopeError):
    """A file (recipe, weights, export) is missing, unreadable, corrupt or of the wrong kind."""


class ModelError(PrunescopeError):
    """The model cannot do what was asked (no such layer, no units of a kind, no blocks)."""


class UnknownNameError(PrunescopeError):
    """A name that is not in a registry; the message lists the valid names."""


# What a third-party call (Torch-Pruning's tracing and index mapping, an exporter, a file
# reader) or a person's own model's forward raises for its own reasons: the one tuple a
# wrapper around such a call may catch, and only around that call (never around our own
# code), always chained (``raise ModelError(...) from exc``). Never ``Exception``: a bug of
# ours must still look like a bug.
FOREIGN_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError, ValueError, TypeError, LookupError, AttributeError, AssertionError, ArithmeticError)


def echo(value, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages that repeat input."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when empty)."""
    s = str(exc).strip()
    return s.splitlines()[0] if s else exc.__class__.__name__


__all__ = ["PrunescopeError", "StepError", "PlanError", "FileError", "ModelError", "UnknownNameError",
           "echo", "first_line", "MAX_ECHO", "FOREIGN_ERRORS"]
