"""The notebook API, loaded by ``core.__getattr__`` on first use (see ``core/__init__.py``).

An entry point: loading it registers the built-in kinds and the plug-ins (``core.startup``).
"""
from core.errors import FileError, ModelError, PlanError, PrunescopeError, StepError, UnknownNameError
from core.sources.bases import load_base
from core.sources.models import ModelSpec, build_model, list_models, register_factory, register_model
from core.plan import ApplyContext, Plan, PlanCache, StepReport, apply, apply_with_reports
from core.prune import LayerOverride, Prune
from core.recover import Finetune, Heal, Quantize, gradual_steps
from core.surgery import Compose, Cut, Paste, Segment
from core.startup import register_all
from core.sources.entries import register, unregister
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
    if name in ("export_model", "export_all", "load", "state_dict_hash", "list_exporters"):
        from core import io

        return getattr(io, name)
    raise AttributeError(f"module 'core.api' has no attribute {name!r}")


__all__ = ["ApplyContext", "PlanCache", "PlanError", "apply", "apply_with_reports", "StepReport", "ModelSpec",
           "build_model", "list_models", "load_base", "register_factory", "register_model", "LayerOverride", "Plan",
           "Prune", "Finetune", "Quantize", "gradual_steps", "Workspace", "open_model", "register", "unregister", "Cut", "Paste", "Compose", "Segment", "Heal", "export_model", "export_all", "load",
           "state_dict_hash", "list_exporters", "PrunescopeError", "StepError", "FileError", "ModelError",
           "UnknownNameError"]
