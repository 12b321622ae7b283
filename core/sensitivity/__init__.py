"""Sensitivity sweeps, automatic per-layer plans, and where sweeps run (local or Ray).

The functions take what they read (model, evaluator, apply context, plan) and keep
nothing; ``Workspace.sensitivity``, ``criteria_curves`` and ``autoplan`` call them on the
workspace's own and keep finished sweeps in ``ws.sweeps``."""
from core.sensitivity.autoplan import AutoPlan, autoplan, check_target, sweep_bound, sweep_budget
from core.sensitivity.executors import EXECUTORS, LocalExecutor, RayExecutor, get_executor, list_executors
from core.sensitivity.greedy import GreedyPlan, greedy_plan
from core.sensitivity.sweep import (
    DEFAULT_AMOUNTS,
    Curves,
    Sensitivity,
    SweepSpec,
    criteria_curves,
    curves_spec,
    layer_names,
    payload_for,
    run_sweep,
    sensitivity,
    sensitivity_spec,
)

__all__ = ["Sensitivity", "Curves", "SweepSpec", "sensitivity", "criteria_curves", "sensitivity_spec", "curves_spec",
           "run_sweep", "layer_names", "payload_for", "DEFAULT_AMOUNTS", "AutoPlan", "autoplan", "check_target",
           "sweep_bound", "sweep_budget", "GreedyPlan", "greedy_plan", "EXECUTORS", "LocalExecutor", "RayExecutor",
           "get_executor", "list_executors"]
