"""The top object: one person's work on one base model (:class:`Workspace`).

``plans.py``: the base, the eval set, the current plan with its step reports, the
undo / redo history, the log of evaluated plans and their metrics. ``analyses.py``: what
it hands the analysis layer (its own model, evaluator and context) and keeps from it
(finished sweeps).
"""
from core.workspace.plans import ADJUST_SECONDS, LogEntry, Workspace

__all__ = ["Workspace", "LogEntry", "ADJUST_SECONDS"]
