"""Surgery commands: ``blocks``, ``cut``, ``paste`` (imported by ``core.cli``)."""
from __future__ import annotations

from core.cli.common import (
    UsageError,
    add_model_args,
    command,
    load_plan_arg,
    metrics_object,
    save_plan_arg,
    workspace_for,
)


def _subset(args) -> str:
    return "full" if args.full else "quick"


def _blocks_args(p):
    add_model_args(p)
    p.add_argument("--container", help="container path whose children are the blocks "
                                       "(default: the model's block container)")
    p.add_argument("--seed", type=int, default=0, help="calibration batch seed")


@command("blocks", "list a model's blocks with shapes, params, MACs, influence and drop-one accuracy",
         _blocks_args)
def cmd_blocks(args):
    ws = workspace_for(args)
    ws.set_plan(load_plan_arg(args.plan, ws.name))
    g = ws.guides(args.container, args.seed)
    return g.rows()


def _step_args(p, what: str):
    add_model_args(p)
    p.add_argument("--seed", type=int, default=0, help="calibration batch seed for the least-squares fit")
    p.add_argument("--save-plan", help="write the resulting plan (recipe JSON) here")


def _apply_step(args, step):
    from core.errors import PlanError

    ws = workspace_for(args)
    plan = load_plan_arg(args.plan, ws.name).then(step)
    try:
        ws.set_plan(plan)
    except PlanError as exc:  # one line naming the step and the reason
        raise UsageError(str(exc)) from exc
    save_plan_arg(plan, args.save_plan)
    return metrics_object(ws, ws.name, _subset(args), not args.no_latency)


def _cut_args(p):
    _step_args(p, "cut")
    p.add_argument("--block", action="append", required=True, metavar="NAME",
                   help="block path to cut, e.g. layers.1 (repeatable; one container)")
    p.add_argument("--bridge", default="auto", help="auto | identity | lstsq (default auto: identity where "
                                                    "shapes match, least squares elsewhere)")


@command("cut", "cut blocks out of a model, bridging the gap", _cut_args)
def cmd_cut(args):
    from core.surgery import Cut

    return _apply_step(args, Cut(tuple(args.block), bridge=args.bridge, seed=args.seed))


def _paste_args(p):
    _step_args(p, "paste")
    p.add_argument("--block", required=True, metavar="NAME", help="block path in the source model, e.g. layers.1")
    p.add_argument("--from", dest="source", default="self",
                   help="donor model name (default: this model, i.e. copy / duplicate)")
    p.add_argument("--at", type=int, required=True, help="position in the target container (0 = first)")
    p.add_argument("--into", help="target container path (default: the block's own, or the model's default)")
    p.add_argument("--adapter", default="auto", help="auto | identity | lstsq (default auto)")


@command("paste", "paste a copy of a block (from this model or a donor) at a position", _paste_args)
def cmd_paste(args):
    from core.sources.models import get_spec
    from core.surgery import Paste

    if args.source != "self":
        get_spec(args.source)  # unknown donors fail here, listing the valid names
    return _apply_step(args, Paste(args.block, source=args.source, at=args.at, adapter=args.adapter,
                                   into=args.into, seed=args.seed))
