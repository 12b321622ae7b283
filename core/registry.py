"""Registries: a decorator plus a dict, with ``names()`` and clear errors.

Every pluggable thing in prunescope (models, datasets, importance criteria,
exporters, plan steps) lives in a :class:`Registry`. Third-party packages (the
bundled ``demo_models`` among them) join through the ``prunescope.plugins`` entry
point group, so core never imports them by name.
"""
from __future__ import annotations

import importlib
import os
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

PLUGIN_GROUP = "prunescope.plugins"
_plugins_loaded = False


from core.errors import PrunescopeError, UnknownNameError, echo


def load_plugins() -> None:
    """Import every module named in the ``prunescope.plugins`` entry point group.

    Also imports modules listed in the ``PRUNESCOPE_PLUGINS`` environment variable
    (comma separated), and ``demo_models`` when it is importable but the package is
    not installed (running from a source checkout). Runs once per process.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    mods: list[str] = []
    try:
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            mods.append(ep.value)
    except Exception:  # pragma: no cover - broken metadata should not kill the app
        pass
    mods += [m.strip() for m in os.environ.get("PRUNESCOPE_PLUGINS", "").split(",") if m.strip()]
    if not mods:
        mods = ["demo_models"]  # source checkout without an installed distribution
    for mod in dict.fromkeys(mods):
        try:
            importlib.import_module(mod)
        except ImportError as exc:  # a missing optional plugin is reported, not fatal
            import warnings

            warnings.warn(f"prunescope plugin {mod!r} could not be imported: {exc}")
    from core.user_models import load_user_models  # a person's own models, remembered across restarts

    load_user_models()


class Registry(Generic[T]):
    """A named collection of objects of one kind.

    Args:
        kind: what the registry holds, used in error messages ("model", "criterion").
        builtins: called once before the first lookup, to import the modules that
            register the built-in entries (so a lookup never depends on import order).
    """

    def __init__(self, kind: str, builtins: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins

    def _ready(self) -> None:
        load_plugins()
        if self._builtins is not None:
            fn, self._builtins = self._builtins, None
            fn()

    def register(self, name: str | None = None, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; without ``obj`` return a decorator.

        Raises:
            PrunescopeError: the name is taken and ``overwrite`` is false.
        """

        def deco(o: T) -> T:
            key = name or getattr(o, "name", None) or getattr(o, "__name__")
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
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise UnknownNameError(
                f"unknown {self.kind} {echo(name_or_obj)}; valid {self.kind} names: {valid}"
            ) from None

    def unregister(self, name: str) -> None:
        """Forget ``name`` (no error when it is not registered)."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        """All registered names, in registration order."""
        self._ready()
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
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
        raise PrunescopeError(f"cannot import module {mod_name!r} from {path!r}: {exc}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PrunescopeError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
