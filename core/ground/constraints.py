"""Field constraints, declared on each step as data and checked in one place.

A step class lists ``constraints = {"field": Constraint, ...}`` (as scikit-learn's
``_parameter_constraints``). :func:`check_fields` checks every field against its
constraint and raises one :class:`~core.errors.StepError` whose message names the field,
what is accepted and what it got. ``bad_values()`` gives values a constraint rejects, so
a generated test feeds every field of every registered step a bad value.
"""
from __future__ import annotations

import abc
import dataclasses
import math
import re
from typing import Any

from core.errors import PrunescopeError, StepError, echo

MAX_NAME = 500  # characters in a name (module path, criterion, model)
MAX_ITEMS = 10_000  # entries in a tuple field (blocks, layer overrides, segments)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Constraint(abc.ABC):
    """What one field accepts. ``optional``: ``None`` is accepted too."""

    optional = False

    @abc.abstractmethod
    def ok(self, value: Any) -> bool:
        """Whether a non-None ``value`` is accepted."""

    @abc.abstractmethod
    def describe(self) -> str:
        """What is accepted, for messages: "a finite number in [0, 1]"."""

    def bad_values(self) -> list:
        """Values this constraint rejects (for the generated test)."""
        return [object()]

    def accepts(self, value: Any) -> bool:
        return (value is None and self.optional) or (value is not None and self.ok(value))

    def text(self) -> str:
        return self.describe() + (" or null" if self.optional else "")


class Interval(Constraint):
    """A number (or an integer) in [lo, hi]; ends may be open; never NaN or infinite."""

    def __init__(self, lo: float | None, hi: float | None, *, integer: bool = False, closed: str = "both",
                 optional: bool = False):
        self.lo, self.hi, self.integer, self.closed, self.optional = lo, hi, integer, closed, optional

    def ok(self, v):
        if not (_is_int(v) if self.integer else _is_number(v)) or not math.isfinite(v):
            return False
        lo_ok = self.lo is None or (v >= self.lo if self.closed in ("both", "left") else v > self.lo)
        hi_ok = self.hi is None or (v <= self.hi if self.closed in ("both", "right") else v < self.hi)
        return lo_ok and hi_ok

    def describe(self):
        kind = "an integer" if self.integer else "a finite number"
        if self.lo is None and self.hi is None:
            return kind
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        num = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        lo = "-inf" if self.lo is None else num(self.lo)
        hi = "inf" if self.hi is None else num(self.hi)
        return f"{kind} in {left}{lo}, {hi}{right}"

    def bad_values(self):
        out = ["1", True, float("nan")]
        if self.lo is not None:
            out.append(self.lo - 1)
        if self.hi is not None:
            out.append(self.hi + 1)
        if self.integer:
            out.append(0.5)
        return out


def Fraction(optional: bool = False) -> Interval:
    """The one meaning of an amount: a float in [0, 1]."""
    return Interval(0.0, 1.0, optional=optional)


def Seed() -> Interval:
    return Interval(0, 2**63 - 1, integer=True)


class Options(Constraint):
    """One of a fixed set of strings."""

    def __init__(self, options, optional: bool = False):
        self.options, self.optional = tuple(options), optional

    def ok(self, v):
        return isinstance(v, str) and v in self.options

    def describe(self):
        return "one of " + ", ".join(repr(o) for o in self.options)

    def bad_values(self):
        return ["no-such-option", 3, ""]


class Name(Constraint):
    """A non-empty string (a module path or a registry name) of at most MAX_NAME characters."""

    def __init__(self, optional: bool = False, allow_empty: bool = False):
        self.optional, self.allow_empty = optional, allow_empty

    def ok(self, v):
        return isinstance(v, str) and (self.allow_empty or v != "") and len(v) <= MAX_NAME

    def describe(self):
        return f"a {'' if self.allow_empty else 'non-empty '}name of at most {MAX_NAME} characters"

    def bad_values(self):
        return [3, "x" * (MAX_NAME + 1)] + ([] if self.allow_empty else [""])


class Items(Constraint):
    """A tuple of items, each passing ``item`` (a Constraint) or an instance of ``item`` (a class)."""

    def __init__(self, item, *, min_items: int = 0, max_items: int = MAX_ITEMS, unique: bool = False):
        self.item, self.min_items, self.max_items, self.unique = item, min_items, max_items, unique

    def _item_ok(self, x):
        return self.item.accepts(x) if isinstance(self.item, Constraint) else isinstance(x, self.item)

    def ok(self, v):
        if not isinstance(v, tuple) or not self.min_items <= len(v) <= self.max_items:
            return False
        if self.unique and len(set(v)) != len(v):
            return False
        return all(self._item_ok(x) for x in v)

    def describe(self):
        what = self.item.describe() if isinstance(self.item, Constraint) else self.item.__name__
        size = f"{self.min_items} to {self.max_items}" if self.min_items else f"at most {self.max_items}"
        return f"a list of {size} items{', no repeats' if self.unique else ''}, each {what}"

    def bad_values(self):
        return ["not-a-list", (object(),)] + ([()] if self.min_items else [])


class Pattern(Constraint):
    """A string of 1 to ``max_len`` characters matched whole by ``regex``; ``what`` says
    in words what is accepted ("an importable 'package.module:function'")."""

    def __init__(self, regex: str, what: str, *, max_len: int = MAX_NAME, optional: bool = False,
                 bad: tuple = ()):
        self.regex, self.what, self.max_len, self.optional = re.compile(regex), what, max_len, optional
        self.bad = tuple(bad)  # strings the pattern rejects, for the generated test

    def ok(self, v):
        return isinstance(v, str) and 0 < len(v) <= self.max_len and self.regex.fullmatch(v) is not None

    def describe(self):
        return self.what

    def bad_values(self):
        return [3, "", "x" * (self.max_len + 1), *self.bad]


class Shape(Constraint):
    """A tensor's shape: a tuple of ``min_dims`` to ``max_dims`` positive integers (one
    example's shape; an image's height and width)."""

    def __init__(self, min_dims: int = 1, max_dims: int = 8, *, what: str = "", example: str = "3,32,32",
                 optional: bool = False):
        self.min_dims, self.max_dims, self.what, self.example = min_dims, max_dims, what, example
        self.optional = optional

    def ok(self, v):
        return (isinstance(v, tuple) and self.min_dims <= len(v) <= self.max_dims
                and all(_is_int(d) and d > 0 for d in v))

    def describe(self):
        n = str(self.min_dims) if self.min_dims == self.max_dims else f"{self.min_dims} to {self.max_dims}"
        return f"{n} positive whole numbers{', ' + self.what if self.what else ''} (e.g. {self.example})"

    def bad_values(self):
        return [self.example, (0,) * self.min_dims, (1.5,) * self.min_dims, (True,) * self.min_dims,
                (1,) * (self.max_dims + 1)] + ([()] if self.min_dims else [])


class Instance(Constraint):
    """An instance of ``types`` (a dict of keyword arguments, a description as a dict)."""

    def __init__(self, types: type | tuple[type, ...], what: str, optional: bool = False):
        self.types, self.what, self.optional = types, what, optional

    def ok(self, v):
        return isinstance(v, self.types)

    def describe(self):
        return self.what

    def bad_values(self):
        return [v for v in (object(), "text", 3, [1]) if not isinstance(v, self.types)]


class Maybe(Constraint):
    """``None``, or what ``inner`` accepts (for constraints without an ``optional`` of their own)."""

    optional = True

    def __init__(self, inner: Constraint):
        self.inner = inner

    def ok(self, v):
        return self.inner.accepts(v)

    def describe(self):
        return self.inner.describe()

    def bad_values(self):
        return [b for b in self.inner.bad_values() if b is not None]


def check_fields(obj: Any, owner: str) -> None:
    """Check every dataclass field of ``obj`` against ``type(obj).constraints``.

    Raises:
        StepError: ``"<owner>.<field> must be <what is accepted>, got <value>"``.
    """
    constraints = getattr(type(obj), "constraints", {})
    for f in dataclasses.fields(obj):
        c = constraints.get(f.name)
        assert c is not None, f"{type(obj).__name__}.{f.name} declares no constraint"
        v = getattr(obj, f.name)
        if not c.accepts(v):
            raise StepError(f"{owner}.{f.name} must be {c.text()}, got {echo(v)}")


def check_args(owner: str, constraints: dict[str, Constraint], error: type[PrunescopeError] = PrunescopeError,
               **values: Any) -> None:
    """Check a public function's arguments against constraints, as steps' fields are.

    ``check_args("sensitivity", {"shards": Interval(1, 10_000, integer=True)}, shards=shards)``

    Raises:
        ``error`` (a PrunescopeError by default): ``"<owner>: <name> must be <what is accepted>, got <value>"``.
    """
    for name, value in values.items():
        c = constraints[name]
        if not c.accepts(value):
            raise error(f"{owner}: {name} must be {c.text()}, got {echo(value)}")


class Checked:
    """Mixin for frozen dataclasses whose fields are declared in ``constraints``.

    ``__post_init__`` checks the fields, then calls :meth:`check` for rules that tie
    several fields together.
    """

    constraints: dict = {}

    def _owner(self) -> str:
        return getattr(self, "op", "") or type(self).__name__

    def __post_init__(self):
        check_fields(self, self._owner())
        self.check()

    def check(self) -> None:
        """Rules across fields; raise ``StepError``. Default: none."""


__all__ = ["Constraint", "Interval", "Fraction", "Seed", "Options", "Name", "Items", "Pattern", "Shape", "Instance",
           "Maybe", "check_fields", "check_args", "Checked", "MAX_NAME", "MAX_ITEMS"]
