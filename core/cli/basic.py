"""Commands about models and pruning: models, datasets, criteria, evaluate, prune."""
from __future__ import annotations

from core.cli.common import (
    UsageError,
    add_model_args,
    command,
    load_plan_arg,
    metrics_object,
    parse_layer_overrides,
    save_plan_arg,
    workspace_for,
)
from core.ground.units import GRANULARITIES


def _models_args(p):
    p.add_argument("--json", action="store_true", help="print JSON")


@command("models", "list registered models", _models_args)
def cmd_models(args):
    from core.sources.models import get_spec, list_models, param_count

    rows = []
    for name in list_models():
        spec = get_spec(name)
        rows.append({"name": name, "source": "user" if spec.extra.get("source") == "user" else "plugin",
                     "params": param_count(spec), "task": spec.task,
                     "dataset": spec.dataset, "input_shape": list(spec.input_shape),
                     "description": spec.description,
                     **({"test_accuracy": spec.extra["test_accuracy"]} if "test_accuracy" in spec.extra else {})})
    return rows


def _datasets_args(p):
    p.add_argument("--json", action="store_true")


@command("datasets", "list registered datasets", _datasets_args)
def cmd_datasets(args):
    from core.sources.datasets import get_dataset, list_datasets

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
    p.add_argument("--granularity", default="weight", choices=GRANULARITIES,
                   help="weight (masks) | neuron | channel | head (physically removed); default weight")
    p.add_argument("--criterion", default="l1", help="importance criterion (see `prunescope criteria`)")
    p.add_argument("--seed", type=int, default=0, help="calibration batch / random criterion seed")
    p.add_argument("--save-plan", help="write the resulting plan (recipe JSON) here")


@command("prune", "prune a model by a global sparsity or threshold", _prune_args)
def cmd_prune(args):
    from core.prune import CRITERIA, Prune

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
    report = ws.reports[-1]  # what the step decided, as it was built
    out["step"] = {"summary": report.summary, "threshold_unit": report.threshold_unit,
                   "global_threshold": report.global_threshold, "warnings": report.warnings}
    if step.granularity != "weight":
        out["structured"] = {"units": report.total, "pruned_units": report.pruned,
                             "per_layer": {n: {"units": t, "pruned": p} for n, (p, t) in report.units.items()},
                             "warnings": report.warnings}
    return out


def _criteria_args(p):
    p.add_argument("--json", action="store_true")


@command("criteria", "list importance criteria", _criteria_args)
def cmd_criteria(args):
    from core.prune import CRITERIA

    return [{"name": n, "granularities": list(c.granularities), "needs_data": c.needs_data,
             "description": c.description} for n, c in CRITERIA.items()]
