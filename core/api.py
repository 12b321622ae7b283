"""The notebook API, loaded by ``core.__getattr__`` on first use (see ``core/__init__.py``)."""
from .errors import FileError, ModelError, PlanError, PrunescopeError, StepError, UnknownNameError
from .models import ModelSpec, build_model, list_models, load_base, register_factory, register_model
from .plan import ApplyContext, Plan, PlanCache, StepReport, apply, apply_with_reports
from .prune import LayerOverride, Prune
from .recover import Finetune, Quantize, gradual_steps
from .surgery import Compose, Cut, Heal, Paste, Segment
from .user_models import open_model, register, unregister
from .workspace import Workspace


def __getattr__(name):  # export pulls in onnx and friends: load it on first use
    if name in ("export_model", "export_all", "load", "state_dict_hash", "list_exporters"):
        from . import io

        return getattr(io, name)
    raise AttributeError(f"module 'core.api' has no attribute {name!r}")


__all__ = ["ApplyContext", "PlanCache", "PlanError", "apply", "apply_with_reports", "StepReport", "ModelSpec",
           "build_model", "list_models", "load_base", "register_factory", "register_model", "LayerOverride", "Plan",
           "Prune", "Finetune", "Quantize", "gradual_steps", "Workspace", "open_model", "register", "unregister", "Cut", "Paste", "Compose", "Segment", "Heal", "export_model", "export_all", "load",
           "state_dict_hash", "list_exporters", "PrunescopeError", "StepError", "FileError", "ModelError",
           "UnknownNameError"]
