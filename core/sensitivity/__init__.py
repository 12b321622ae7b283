"""Sensitivity sweeps, automatic per-layer plans, and where sweeps run (local or Ray)."""
from .autoplan import AutoPlan, autoplan
from .executors import EXECUTORS, LocalExecutor, RayExecutor, get_executor, list_executors
from .sweep import DEFAULT_AMOUNTS, Curves, Sensitivity, criteria_curves, layer_names, sensitivity

__all__ = ["Sensitivity", "Curves", "sensitivity", "criteria_curves", "layer_names", "DEFAULT_AMOUNTS",
           "AutoPlan", "autoplan", "EXECUTORS", "LocalExecutor", "RayExecutor", "get_executor", "list_executors"]
