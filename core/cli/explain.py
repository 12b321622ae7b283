"""Interpretability commands: ``explain`` (imported by ``core.cli``)."""
from __future__ import annotations

from .common import add_model_args, command, load_plan_arg, workspace_for


def _explain_args(p):
    add_model_args(p)
    p.add_argument("--limit", type=int, default=50, help="changed examples to list, largest confidence drop first "
                                                         "(default 50)")


@command("explain", "which eval examples the plan's edits changed, the confusion difference, and the per-layer "
                    "CKA between base and current", _explain_args)
def cmd_explain(args):
    from core.errors import PrunescopeError
    from core.explain import changes, divergence

    if args.limit < 0:
        raise PrunescopeError(f"--limit must be 0 or more, got {args.limit}")
    ws = workspace_for(args)
    ws.set_plan(load_plan_arg(args.plan, ws.name))
    subset = "full" if args.full else "quick"
    ch = changes(ws, subset)
    rows = ch.changed()
    return {"model": ws.name, "subset": subset, "n": len(ch.pred), "n_changed": len(rows),
            "changed": [{k: r[k] for k in ("index", "label", "base_pred", "base_conf", "pred", "conf")}
                        for r in rows[:args.limit]],
            "confusion_delta": ch.confusion_delta(), "divergence": divergence(ws, subset)}
