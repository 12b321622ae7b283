"""prunescope's engine: plans, pruning, surgery, metrics and export. No Streamlit here.

The notebook API in one import::

    from core import Workspace, Plan, Prune, Cut, Paste, apply, export_model, load

``import core`` itself is cheap (no torch): the names below load from ``core.api`` on
first use, so the command line starts fast. Loading them is an entry point
(``core.startup.register_all``): every step kind (``prune``, ``cut``, ``paste``, ``compose``,
``heal``, ``finetune``, ``quantize``), the plug-ins and a person's saved models are then known.
"""
from core.errors import FileError, ModelError, PlanError, PrunescopeError, StepError, UnknownNameError

__all__ = ["ApplyContext", "PlanCache", "PlanError", "apply", "apply_with_reports", "StepReport", "ModelSpec",
           "build_model", "list_models", "load_base", "register_factory", "register_model", "LayerOverride", "Plan",
           "Prune", "Finetune", "Quantize", "gradual_steps", "Workspace", "open_model", "register", "unregister", "Cut",
           "Paste", "Compose", "Segment", "Heal", "export_model", "export_all", "load", "state_dict_hash",
           "list_exporters", "loadable_plan", "PrunescopeError", "StepError", "FileError", "ModelError",
           "UnknownNameError"]


def __getattr__(name):
    if name in __all__:
        from core import api

        return getattr(api, name)
    raise AttributeError(f"module 'core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
