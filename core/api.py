"""The notebook API, loaded by ``core.__getattr__`` on first use (see ``core/__init__.py``).

An entry point: loading it registers the built-in kinds and the plug-ins (``core.startup``).
"""
# the notebook API: these names are listed once, in core/__init__.py's __all__ (loaded from
# here on first use), hence the noqa
from core.errors import FileError, ModelError, PlanError, PrunescopeError, StepError, UnknownNameError  # noqa: F401
from core.plan import ApplyContext, Plan, PlanCache, StepReport, apply, apply_with_reports  # noqa: F401
from core.prune import LayerOverride, Prune  # noqa: F401
from core.recover import Finetune, Heal, Quantize, gradual_steps  # noqa: F401
from core.sources.bases import load_base  # noqa: F401
from core.sources.entries import register, unregister  # noqa: F401
from core.sources.models import ModelSpec, build_model, list_models, register_factory, register_model  # noqa: F401
from core.startup import register_all
from core.surgery import Compose, Cut, Paste, Segment  # noqa: F401
from core.workspace import Workspace

register_all()


def open_model(name: str, *, device: str | None = "auto", **kwargs) -> Workspace:
    """:func:`~core.sources.entries.register` (same arguments), then a :class:`Workspace` on it:
    the notebook's one line, e.g. ``ws = open_model("mine", torchvision="resnet18",
    kwargs={"num_classes": 3}, data="pets.zip")``.

    Raises:
        PrunescopeError: a bad entry (see ``register``).
    """
    spec = register(name, **kwargs)
    return Workspace(spec.name, device)


def __getattr__(name):  # export pulls in onnx and friends: load it on first use
    if name in ("export_model", "export_all", "load", "state_dict_hash", "list_exporters", "loadable_plan"):
        from core import io

        return getattr(io, name)
    raise AttributeError(f"module 'core.api' has no attribute {name!r}")


from core import __all__  # noqa: E402,F401 - the one list of the public names (core/__init__.py)
