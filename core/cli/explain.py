"""Interpretability commands: ``explain`` (imported by ``core.cli``)."""
from __future__ import annotations

from core.cli.common import add_model_args, command, plan_workspace


def _explain_args(p):
    add_model_args(p)
    p.add_argument("--limit", type=int, default=50, help="changed examples to list, largest confidence drop first "
                                                         "(default 50)")


@command("explain", "which eval examples the plan's edits changed, the confusion difference, and the per-layer "
                    "CKA between base and current", _explain_args)
def cmd_explain(args):
    from core.errors import PrunescopeError

    if args.limit < 0:
        raise PrunescopeError(f"--limit must be 0 or more, got {args.limit}")
    ws = plan_workspace(args)
    subset = "full" if args.full else "quick"
    ch = ws.changes(subset)
    rows = ch.changed()
    return {"model": ws.name, "subset": subset, "n": len(ch.pred), "n_changed": len(rows),
            "changed": [{k: r[k] for k in ("index", "label", "base_pred", "base_conf", "pred", "conf")}
                        for r in rows[:args.limit]],
            "confusion_delta": ch.confusion_delta(), "divergence": ws.divergence(subset)}


def _unit_args(p):
    add_model_args(p)
    p.add_argument("--layer", required=True, help="a layer of the base model, e.g. stem.0 (see `prunescope blocks`)")
    p.add_argument("--unit", type=int, required=True, help="unit index in that layer (0-based)")
    p.add_argument("--granularity", default="channel", help="channel | neuron | head (default channel)")
    p.add_argument("--top", type=int, default=12, help="top-activating examples to list (default 12)")


@command("unit", "one unit of the base model: top-activating examples, scores under every criterion, the coupled "
                 "group, and whether the plan removes it", _unit_args)
def cmd_unit(args):
    from core.cli.common import UsageError
    from core.prune.structured import UNIT_GRANULARITIES

    if args.granularity not in UNIT_GRANULARITIES:
        raise UsageError(f"--granularity must be one of {', '.join(UNIT_GRANULARITIES)}, got {args.granularity!r}")
    ws = plan_workspace(args)
    r = ws.unit_report(args.layer, args.unit, args.granularity, subset="full" if args.full else "quick",
                       top=max(1, args.top))
    r.pop("activations")
    return {"model": ws.name, **r}
