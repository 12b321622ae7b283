"""Sensitivity sweeps, automatic per-layer plans, and where sweeps run (local or Ray)."""
from core.sensitivity.autoplan import AutoPlan, autoplan
from core.sensitivity.executors import EXECUTORS, LocalExecutor, RayExecutor, get_executor, list_executors
from core.sensitivity.sweep import DEFAULT_AMOUNTS, Curves, Sensitivity, criteria_curves, layer_names, sensitivity

__all__ = ["Sensitivity", "Curves", "sensitivity", "criteria_curves", "layer_names", "DEFAULT_AMOUNTS",
           "AutoPlan", "autoplan", "EXECUTORS", "LocalExecutor", "RayExecutor", "get_executor", "list_executors"]
