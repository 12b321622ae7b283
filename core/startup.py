"""What every entry point does first: make the built-in kinds and the plug-ins known.

The one place where they are registered. The notebook API (``core/api.py``), the command
line (``core/cli``) and the app (``app/streamlit_app.py``) call :func:`register_all` when
they start, and so does ``tests/conftest.py``. Nothing below reaches up to find them
(a registry lookup imports nothing), as timm registers its models when ``timm.models`` is
imported.

Nothing here imports torch: ``prunescope --help`` and ``prunescope models`` stay fast.
The step kinds (prune, cut, paste, compose, heal, finetune, quantize, nm, reconstruct) import torch,
so their modules load before the first lookup in the step registry (a recipe read, a
listing), not at start.
"""
from __future__ import annotations

import importlib
import os
import warnings
from importlib import metadata

from core.errors import FOREIGN_ERRORS
from core.ground.registry import defer, mark_registered
from core.sources.entries import load_user_models

PLUGIN_GROUP = "prunescope.plugins"
_done = False


def _step_kinds() -> None:
    from core import prune, recover, surgery  # noqa: F401 - their modules register the step kinds


def load_plugins() -> None:
    """Import every module named in the ``prunescope.plugins`` entry point group.

    Also imports modules listed in the ``PRUNESCOPE_PLUGINS`` environment variable
    (comma separated), and ``demo_models`` when it is importable but the package is not
    installed (running from a source checkout). A plug-in that cannot be imported is a
    warning, not an error.
    """
    mods: list[str] = []
    try:
        mods += [ep.value for ep in metadata.entry_points(group=PLUGIN_GROUP)]
    except (OSError, *FOREIGN_ERRORS) as exc:  # a broken install's metadata: said, not fatal  # pragma: no cover
        warnings.warn(f"prunescope: the installed packages' entry points could not be read ({exc}); "
                      f"plug-ins named in {PLUGIN_GROUP} are not loaded")
    mods += [m.strip() for m in os.environ.get("PRUNESCOPE_PLUGINS", "").split(",") if m.strip()]
    if not mods:
        mods = ["demo_models"]  # source checkout without an installed distribution
    for mod in dict.fromkeys(mods):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            warnings.warn(f"prunescope plugin {mod!r} could not be imported: {exc}")


def register_all() -> None:
    """Register the built-in step kinds (on first use), the plug-ins and a person's saved
    models (``core.sources.entries``). Runs once per process; later calls do nothing.

    Side effects: imports the plug-in modules; reads ``$PRUNESCOPE_HOME/user_models.json``.
    """
    global _done
    if _done:
        return
    _done = True
    defer("step", _step_kinds)  # the step registry (core.plan.step.STEPS)
    load_plugins()
    load_user_models()  # a person's own models, remembered across restarts
    mark_registered()


__all__ = ["register_all", "load_plugins", "PLUGIN_GROUP"]
