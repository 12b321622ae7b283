"""Sensitivity commands: ``sensitivity``, ``autoplan`` (imported by ``core.cli``)."""
from __future__ import annotations

import sys

from core.cli.common import UsageError, add_model_args, command, metrics_object, plan_workspace, save_plan_arg
from core.ground.units import GRANULARITIES


def parse_amounts(text: str) -> tuple[float, ...]:
    """``0.1,0.3,0.5`` -> (0.1, 0.3, 0.5)."""
    try:
        out = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise UsageError(f"--amounts expects numbers in [0, 1] separated by commas (e.g. 0.1,0.3,0.5), "
                         f"got {text!r}") from exc
    if not out:
        raise UsageError("--amounts is empty; give e.g. 0.1,0.3,0.5")
    return out


def _executor(args):
    from core.sensitivity import RayExecutor

    if args.executor == "ray":
        return RayExecutor(address=args.address, workers=args.workers)
    if args.address or args.workers:
        raise UsageError("--address and --workers go with --executor ray")
    return "local"


def _progress(done: int, total: int, label: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{done}/{total} · {label[:70]:<70}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _sweep_args(p, *, amounts_help: str):
    add_model_args(p)
    p.add_argument("--criterion", default="l1", help="importance criterion (see `prunescope criteria`; default l1)")
    p.add_argument("--granularity", default="weight", choices=GRANULARITIES, help="what a unit is (default weight)")
    p.add_argument("--amounts", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help=amounts_help)
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="where the sweep runs: this process (default) or Ray (pip install 'prunescope[ray]')")
    p.add_argument("--address", help="with --executor ray: an existing cluster (e.g. ray://host:10001); "
                                     "default: a local Ray instance on 127.0.0.1")
    p.add_argument("--workers", type=int, help="with --executor ray: actors to start (default: Ray's CPUs, at most 8)")


def _sensitivity_args(p):
    _sweep_args(p, amounts_help="fractions of each layer's units to prune, comma separated "
                                "(default 0.1,...,0.9)")
    p.add_argument("--shards", type=int, default=1, help="split the evaluation subset into this many tasks per "
                                                          "layer (default 1)")
    p.add_argument("--layers", help="only these layers, comma separated (default: every prunable layer or group)")


@command("sensitivity", "prune each layer (or coupled group) alone over a list of amounts and measure accuracy, "
                        "loss, MACs and parameters", _sensitivity_args)
def cmd_sensitivity(args):
    ws = plan_workspace(args)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    s = ws.sensitivity(args.criterion, args.granularity, parse_amounts(args.amounts),
                       "full" if args.full else "quick", layers=layers, executor=_executor(args), shards=args.shards,
                       progress=_progress)
    d = s.to_dict()
    if args.json:
        return d
    head = {k: d[k] for k in ("model", "criterion", "granularity", "subset", "n", "executor", "seconds")}
    head["source accuracy"] = f"{100 * s.source['accuracy']:.2f}%"
    rows = [{"layer": n, **{f"{a:g}": round(drop, 2) for a, drop in zip(s.amounts, s.drop(n))}} for n in s.layers]
    from core.cli.common import format_fields, format_table

    return (format_fields(head) + "\n\naccuracy drop in points (source minus pruned), per amount:\n" +
            format_table(rows))


def _autoplan_args(p):
    _sweep_args(p, amounts_help="the amounts each layer may take (default 0.1,...,0.9)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="accuracy may drop at most this many percentage points (2 means 2 points, e.g. 0.95 -> "
                        "0.93; the accuracies printed are fractions, but this is not one: 0.02 means 0.02 points)")
    g.add_argument("--max-macs", type=float, help="at most this fraction of the base's MACs (e.g. 0.5)")
    g.add_argument("--max-params", type=float, help="at most this fraction of the base's non-zero parameters")
    g.add_argument("--max-latency", type=float, help="at most this fraction of the base's measured latency (noisy)")
    p.add_argument("--finetune", type=int, metavar="STEPS",
                   help="then fine-tune this many steps (labels and distillation) and report the recovered accuracy")
    p.add_argument("--save-plan", help="write the resulting plan (recipe JSON) here")


@command("autoplan", "choose per-layer amounts from a sensitivity sweep to meet an accuracy, MACs, parameter or "
                     "latency target, and measure the result", _autoplan_args)
def cmd_autoplan(args):
    import torch

    from core.recover import Finetune

    if args.max_drop is not None and 0 < args.max_drop < 0.1:
        import sys

        print(f"prunescope autoplan: warning: --max-drop {args.max_drop:g} is in percentage points of accuracy, "
              f"so it allows a drop of {args.max_drop / 100:g} as a fraction; for {100 * args.max_drop:g} points "
              f"give --max-drop {100 * args.max_drop:g}", file=sys.stderr)
    ws = plan_workspace(args)
    subset = "full" if args.full else "quick"
    r = ws.autoplan(criterion=args.criterion, granularity=args.granularity, max_drop=args.max_drop,
                    max_macs=args.max_macs, max_params=args.max_params, max_latency=args.max_latency,
                    amounts=parse_amounts(args.amounts), subset=subset, executor=_executor(args), progress=_progress)
    ws.set_plan(r.plan)
    pruned_accuracy = ws.metrics(subset, latency=False).accuracy
    if args.finetune:
        loss = "distill" if ws.spec.task == "fidelity" else "both"
        ws.set_plan(ws.plan.then(Finetune(steps=args.finetune, loss=loss, threads=torch.get_num_threads())))
    out = metrics_object(ws, ws.name, subset, not args.no_latency)  # the final plan's figures
    out.update({"predicted_accuracy": r.predicted_accuracy, "pruned_accuracy": pruned_accuracy,
                "amounts": r.amounts, "target": r.target, "value": r.value,
                "unit": "percentage points of accuracy" if args.max_drop is not None else "fraction of the base",
                "met": r.met, "reason": r.reason,
                "measured": r.measured, "predicted_cost": r.predicted_cost, "tries": r.tries})
    if args.finetune:
        out["finetune"] = {"steps": args.finetune, "accuracy_before": pruned_accuracy,
                           "recovered_accuracy": out["accuracy"]}
    save_plan_arg(ws.plan, args.save_plan)
    return out
