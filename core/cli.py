"""The ``prunescope`` command line (also ``python -m core``).

Every command prints one JSON object (or list) with ``--json``, else a short table.
Bad input exits with code 2 and a one-line message on stderr.

Commands live in a small registry: a module adds one with ``@command(name, help)``
on a function ``(args) -> object`` plus an ``add_arguments(parser)`` attribute.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from typing import Callable

from .registry import Registry

COMMANDS: Registry[Callable] = Registry("command")
# Modules that add commands of their own (imported when the CLI starts).
COMMAND_MODULES = ["core.cli_surgery", "core.cli_export"]


class UsageError(ValueError):
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


def _print(obj, as_json: bool) -> None:
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


# --- shared argument helpers -------------------------------------------------------

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
    from .plan import Plan

    if not path:
        return Plan(model)
    plan = Plan.load(path)
    if plan.model != model:
        raise UsageError(f"plan {path} is for model {plan.model!r}, not {model!r}")
    return plan


def workspace_for(args):
    from .workspace import Workspace

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
    from .plan import LayerOverride

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


# --- commands -----------------------------------------------------------------------

def _models_args(p):
    p.add_argument("--json", action="store_true", help="print JSON")


@command("models", "list registered models", _models_args)
def cmd_models(args):
    from .models import build_model, get_spec, list_models

    rows = []
    for name in list_models():
        spec = get_spec(name)
        m = build_model(spec, load_weights=False)
        rows.append({"name": name, "params": sum(p.numel() for p in m.parameters()), "task": spec.task,
                     "dataset": spec.dataset, "input_shape": list(spec.input_shape),
                     "description": spec.description,
                     **({"test_accuracy": spec.extra["test_accuracy"]} if "test_accuracy" in spec.extra else {})})
    return rows


def _datasets_args(p):
    p.add_argument("--json", action="store_true")


@command("datasets", "list registered datasets", _datasets_args)
def cmd_datasets(args):
    from .data import get_dataset, list_datasets

    out = []
    for n in list_datasets():
        d = get_dataset(n)
        out.append({"name": n, "train": len(d.y_train), "test": len(d.y_test), "classes": len(d.classes),
                    "input_shape": list(d.x_test.shape[1:]), "kind": d.kind})
    return out


@command("evaluate", "evaluate a model (optionally after a plan)", add_model_args)
def cmd_evaluate(args):
    ws = workspace_for(args)
    plan = load_plan_arg(args.plan, ws.name)
    ws.set_plan(plan)
    return metrics_object(ws, ws.name, "full" if args.full else "quick", not args.no_latency)


def _prune_args(p):
    add_model_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sparsity", "--ratio", dest="sparsity", type=float,
                   help="global fraction of prunable units to prune, in [0, 1]")
    g.add_argument("--threshold", type=float, help="global score threshold (units of the criterion's score)")
    p.add_argument("--layer", action="append", metavar="NAME=S",
                   help="per-layer sparsity override (repeatable)")
    p.add_argument("--granularity", default="weight", choices=["weight", "neuron", "channel", "head"],
                   help="weight (masks) | neuron | channel | head (physically removed); default weight")
    p.add_argument("--criterion", default="l1", help="importance criterion (see `prunescope criteria`)")
    p.add_argument("--seed", type=int, default=0, help="calibration batch / random criterion seed")
    p.add_argument("--save-plan", help="write the resulting plan (recipe JSON) here")


@command("prune", "prune a model by a global sparsity or threshold", _prune_args)
def cmd_prune(args):
    from .importance import CRITERIA
    from .plan import Prune

    if args.sparsity is None and args.threshold is None and not args.layer:
        raise UsageError("give --sparsity S (or --ratio R), --threshold T, or --layer NAME=S")
    CRITERIA.get(args.criterion)  # unknown names fail here, listing the valid ones
    step = Prune(criterion=args.criterion, granularity=args.granularity, sparsity=args.sparsity,
                 threshold=args.threshold, layers=parse_layer_overrides(args.layer), seed=args.seed)
    ws = workspace_for(args)
    plan = load_plan_arg(args.plan, ws.name).then(step)
    ws.set_plan(plan)
    save_plan_arg(plan, args.save_plan)
    out = metrics_object(ws, ws.name, "full" if args.full else "quick", not args.no_latency)
    if step.granularity != "weight":
        from .apply import apply
        from .structured import select_units

        # what the structured step removed, from the model it was applied to
        source = apply(plan.prefix(len(plan.steps) - 1), ws.base, ctx=ws.ctx, cache=ws.cache)
        sel = select_units(step, source, ws.ctx)
        out["structured"] = {"units": sel.n_units, "pruned_units": sel.n_pruned,
                             "per_layer": {n: {"units": len(sel.scores[n]), "pruned": len(p)}
                                           for n, p in sel.pruned.items()},
                             "warnings": sel.warnings}
    return out


def _criteria_args(p):
    p.add_argument("--json", action="store_true")


@command("criteria", "list importance criteria", _criteria_args)
def cmd_criteria(args):
    from .importance import CRITERIA

    return [{"name": n, "granularities": list(c.granularities), "needs_data": c.needs_data,
             "description": c.description} for n, c in CRITERIA.items()]


# --- entry point --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    for mod in COMMAND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    parser = argparse.ArgumentParser(prog="prunescope", description="Explore and prune PyTorch models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.cli_help, description=fn.cli_help)
        fn.cli_arguments(p)
    return parser




def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line message
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    fn = COMMANDS.get(args.command)
    try:
        out = fn(args)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"prunescope {args.command}: error: {msg}", file=sys.stderr)
        return 2
    _print(out, getattr(args, "json", False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
