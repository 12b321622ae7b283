"""Registries: a decorator plus a dict, with ``names()`` and clear errors.

Every pluggable thing in prunescope (models, datasets, importance criteria,
exporters, plan steps) lives in a :class:`Registry`. A lookup never imports anything
to find an entry: the built-in kinds and the plug-ins (the bundled ``demo_models``, a
person's saved models) are registered in one place, ``core.startup.register_all``,
which every entry point (the notebook API, the command line, the app) calls when it
starts. This module is ground: it imports nothing of core but the errors.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from core.errors import PrunescopeError, UnknownNameError, echo

T = TypeVar("T")

# set by core.startup.register_all: an empty lookup before it says how to fix it
_entry_point_ran = False
_deferred: dict[str, list[Callable[[], None]]] = {}  # registry kind -> loaders not run yet


def mark_registered() -> None:
    """Record that an entry point registered the built-ins and plug-ins (``core.startup``)."""
    global _entry_point_ran
    _entry_point_ran = True


def defer(kind: str, loader: Callable[[], None]) -> None:
    """Run ``loader`` once, before the next lookup or listing in the registry of ``kind``
    (``"step"``): an entry point registers kinds whose modules are costly to import (torch)
    without importing them, or the registry's module, at start."""
    _deferred.setdefault(kind, []).append(loader)


class Registry(Generic[T]):
    """A named collection of objects of one kind.

    Args:
        kind: what the registry holds, used in error messages ("model", "criterion").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def _ready(self) -> None:
        loaders = _deferred.get(self.kind)
        while loaders:
            loaders.pop(0)()

    def register(self, name: str | None = None, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; without ``obj`` return a decorator.

        Raises:
            PrunescopeError: the name is taken and ``overwrite`` is false.
        """

        def deco(o: T) -> T:
            key = name or getattr(o, "name", None) or o.__name__
            if key in self._items and not overwrite and self._items[key] is not o:
                raise PrunescopeError(f"{self.kind} {key!r} is already registered")
            self._items[key] = o
            return o

        return deco if obj is None else deco(obj)

    def get(self, name_or_obj: str | T) -> T:
        """Return the registered object for a name; an object is passed through.

        Raises:
            UnknownNameError: the name is unknown; the message lists valid names.
        """
        if not isinstance(name_or_obj, str):
            return name_or_obj
        if name_or_obj not in self._items:
            self._ready()
        try:
            return self._items[name_or_obj]
        except KeyError as exc:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            hint = ("" if _entry_point_ran else
                    " (nothing has registered the built-in kinds and plug-ins yet: start from "
                    "`from core import ...` or call core.startup.register_all())")
            raise UnknownNameError(
                f"unknown {self.kind} {echo(name_or_obj)}; valid {self.kind} names: {valid}{hint}"
            ) from exc

    def find(self, name: str) -> T | None:
        """The object registered under ``name``, or None when there is none.

        Unlike :meth:`get` this never raises and runs no deferred loader: it answers
        "is this name registered right now, and with what?" (a plan's model checked
        against its registered spec, a registration that must restore what it replaced).
        """
        return self._items.get(name)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (no error when it is not registered)."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        """All registered names, in registration order."""
        self._ready()
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        """All (name, object) pairs, in registration order (a snapshot)."""
        self._ready()
        return iter(list(self._items.items()))

    def __contains__(self, name: object) -> bool:
        self._ready()
        return name in self._items

    def __len__(self) -> int:
        self._ready()
        return len(self._items)


def import_object(path: str) -> Callable:
    """Import ``package.module:attr`` and return the attribute.

    Raises:
        PrunescopeError: the path is not of that form, or the module or attribute is missing.
    """
    if ":" not in path:
        raise PrunescopeError(f"expected 'package.module:function', got {echo(path)}")
    mod_name, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise PrunescopeError(f"cannot import module {mod_name!r} from {path!r}: {exc}") from exc
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PrunescopeError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
