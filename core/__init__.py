"""prunescope's engine: plans, pruning, surgery, metrics and export. No Streamlit here.

The notebook API in one import::

    from core import Workspace, Plan, Prune, Cut, Paste, apply, export_model, load
"""
from .apply import ApplyContext, PlanCache, PlanError, apply
from .models import ModelSpec, build_model, list_models, load_base, register_factory, register_model
from .plan import LayerOverride, Plan, Prune
from .workspace import Workspace


def __getattr__(name):  # heavier parts load on first use
    if name in ("Cut", "Paste", "Compose", "Segment", "Heal"):
        from . import surgery

        return getattr(surgery, name)
    if name in ("export_model", "export_all", "load", "state_dict_hash", "list_exporters"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")


__all__ = ["ApplyContext", "PlanCache", "PlanError", "apply", "ModelSpec", "build_model", "list_models",
           "load_base", "register_factory", "register_model", "LayerOverride", "Plan", "Prune", "Workspace",
           "Cut", "Paste", "Compose", "Segment", "Heal", "export_model", "export_all", "load", "state_dict_hash",
           "list_exporters"]
