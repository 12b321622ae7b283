"""The command registry and what every command shares: arguments, plan files, output."""
from __future__ import annotations

import argparse
import json
import math
from typing import Callable

from core.errors import PrunescopeError
from core.registry import Registry

COMMANDS: Registry[Callable] = Registry("command")
class UsageError(PrunescopeError):
    """Bad command-line input (exit code 2)."""


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Decorator: register a command with its argument builder."""

    def deco(fn):
        fn.cli_help = help
        fn.cli_arguments = arguments
        COMMANDS.register(name, fn)
        return fn

    return deco


def _clean(obj):
    """JSON-safe: inf/nan become strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def print_result(obj, as_json: bool) -> None:
    """Print a command's result: JSON, or a short readable table."""
    if as_json:
        print(json.dumps(_clean(obj), indent=2))
        return
    if isinstance(obj, list):
        for row in obj:
            print("  ".join(f"{k}={v}" for k, v in row.items() if not isinstance(v, (list, dict))))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, list) and len(v) > 12:
                v = f"[{len(v)} items]"
            print(f"{k:>20}: {v}")
    else:
        print(obj)


def add_model_args(p: argparse.ArgumentParser, plan: bool = True) -> None:
    p.add_argument("model", help="registered model name (see `prunescope models`)")
    if plan:
        p.add_argument("--plan", help="a plan recipe (JSON) to apply first")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    p.add_argument("--full", action="store_true", help="evaluate on the full test split (default: quick subset)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print JSON")


def load_plan_arg(path: str | None, model: str):
    """The plan in ``path`` (or an empty plan), checked to be for ``model``."""
    from core.plan import Plan

    if not path:
        return Plan(model)
    plan = Plan.load(path)
    if plan.model != model:
        raise UsageError(f"plan {path} is for model {plan.model!r}, not {model!r}")
    return plan


def workspace_for(args):
    from core.workspace import Workspace

    return Workspace(args.model, args.device)


def metrics_object(ws, model_name: str, subset: str, latency: bool) -> dict:
    """The metrics object every command prints (see README, CLI reference)."""
    m = ws.metrics(subset, latency=latency)
    d = {"model": model_name, **m.to_dict()}
    d["plan"] = ws.plan.to_dict()
    d["device"] = str(ws.device)
    return d


def parse_layer_overrides(items: list[str] | None, value_name: str = "S"):
    """``NAME=VALUE`` strings -> LayerOverride(sparsity=VALUE)."""
    from core.prune import LayerOverride

    out = []
    for item in items or []:
        name, sep, val = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--layer expects NAME={value_name}, got {item!r}")
        try:
            v = float(val)
        except ValueError:
            raise UsageError(f"--layer {item!r}: {val!r} is not a number") from None
        out.append(LayerOverride(layer=name, sparsity=v))
    return tuple(out)


def save_plan_arg(plan, path: str | None) -> None:
    if path:
        plan.save(path)


__all__ = ["COMMANDS", "command", "UsageError", "print_result", "add_model_args", "load_plan_arg", "workspace_for",
           "metrics_object", "parse_layer_overrides", "save_plan_arg"]
