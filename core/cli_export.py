"""CLI commands `apply` and `export` (registered into core.cli)."""
from __future__ import annotations

from pathlib import Path

from .cli import UsageError, command, metrics_object, workspace_for
from .plan import Plan


def _export_example(ws):
    return ws.evalset.quick()[0][:16]


def _apply_args(p):
    p.add_argument("model", help="registered model name")
    p.add_argument("--plan", required=True, help="recipe (plan JSON) to replay")
    p.add_argument("--export", metavar="PATH", help="also export the result here")
    p.add_argument("--format", help="export format (default from PATH's suffix)")
    p.add_argument("--verify", action="store_true", help="reload the export and compare outputs")
    p.add_argument("--device", default="auto")
    p.add_argument("--full", action="store_true")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--json", action="store_true")


def _replay(ws, path: str) -> Plan:
    """Load a recipe and apply it; a recipe for another model fails naming its model
    and the first step that does not fit."""
    plan = Plan.load(path)
    if plan.model != ws.name:
        # Name the first step that does not fit this model, if any.
        probe = Plan(ws.name, plan.steps)
        from .apply import PlanError, apply

        try:
            apply(probe, ws.base, ctx=ws.ctx)
            reason = "its steps happen to fit, but it was made for another model"
        except PlanError as exc:
            reason = f"first step that does not fit {ws.name!r}: {exc}"
        raise UsageError(f"recipe {path} was made for model {plan.model!r}, not {ws.name!r}; {reason}")
    ws.set_plan(plan)
    return plan


def _format_for(path: str, fmt: str | None) -> str:
    from .export import EXPORTERS

    if fmt:
        EXPORTERS.get(fmt)
        return fmt
    suffix = Path(path).suffix
    for name, e in EXPORTERS.items():
        if e.suffix == suffix:
            return name
    raise UsageError(f"cannot tell the format from {path!r}; give --format ({', '.join(EXPORTERS.names())})")


@command("apply", "replay a recipe (optionally export the result)", _apply_args)
def cmd_apply(args):
    from .export import export_model, state_dict_hash

    ws = workspace_for(args)
    plan = _replay(ws, args.plan)
    out = metrics_object(ws, ws.name, "full" if args.full else "quick", not args.no_latency)
    out["state_dict_hash"] = state_dict_hash(ws.model)
    if args.export:
        r = export_model(ws.model, plan, _format_for(args.export, args.format), args.export, _export_example(ws),
                         verify=args.verify)
        if r.error:
            raise UsageError(f"export to {r.format} failed: {r.error}")
        out["export"] = r.to_dict()
    return out


def _export_args(p):
    p.add_argument("model", help="registered model name")
    p.add_argument("--plan", help="recipe to apply first")
    p.add_argument("--format", required=True, help="safetensors | onnx | pt2 | torchscript")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--verify", action="store_true", help="reload and compare outputs")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")


@command("export", "export a model (after a plan) to a file", _export_args)
def cmd_export(args):
    from .export import export_model

    ws = workspace_for(args)
    plan = _replay(ws, args.plan) if args.plan else ws.plan
    r = export_model(ws.model, plan, _format_for(args.out, args.format), args.out, _export_example(ws),
                     verify=args.verify)
    if r.error:
        raise UsageError(f"export to {r.format} failed: {r.error}")
    return r.to_dict()
