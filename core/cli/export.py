"""CLI commands ``apply`` (replay a recipe) and ``export`` (write a verified file).

Both print one JSON object with ``--json``. A recipe made for another model, or one
whose step does not fit the model, exits with code 2 and a message naming the first
step that does not fit.
"""
from __future__ import annotations

from pathlib import Path

from core.cli.common import LazyChoices, UsageError, command, metrics_object, workspace_for
from core.errors import PlanError

EXPORT_BATCH = 16  # eval examples used to trace and verify an export


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _export_example(ws):
    return ws.evalset.quick()[0][:EXPORT_BATCH]


PAD_HELP = ("hf only: write removed heads and MLP neurons back as zeros where the config cannot say the pruned "
            "shapes (BERT / GPT-2 heads, widths differing per layer); same outputs, a larger folder")


def _format_names() -> list[str]:
    from core.io.exporters import list_exporters
    from core.io.hf_export import HF_FORMAT

    return [*list_exporters(), HF_FORMAT]


def _replay(ws, path: str):
    """Load the recipe at ``path`` and make it the workspace's plan.

    Raises:
        UsageError: the recipe is for another model (none of its steps is run to say so),
            or one of its steps does not fit.
    """
    from core.plan import Plan

    plan = Plan.load(path)
    if plan.model != ws.name:
        raise UsageError(f"recipe {path} was made for model {plan.model!r}, not {ws.name!r}; its "
                         f"{len(plan.steps)} step(s) name that model's layers and blocks. Replay it with "
                         f"`prunescope apply {plan.model} --plan {path}`")
    try:
        ws.set_plan(plan)
    except PlanError as exc:
        raise UsageError(f"recipe {path} does not fit {ws.name!r}: {exc}") from exc
    return plan


def _format_for(path: str, fmt: str | None) -> str:
    """``fmt``, or the format whose suffix ``path`` has."""
    from core.io.exporters import EXPORTERS
    from core.io.hf_export import HF_FORMAT

    if fmt == HF_FORMAT:
        return fmt
    if fmt:
        return EXPORTERS.get(fmt).name
    suffix = Path(path).suffix
    for name, e in EXPORTERS.items():
        if e.suffix == suffix:
            return name
    raise UsageError(f"cannot tell the format from {path!r}; give --format ({', '.join(_format_names())})")


def _check_out(out: str, plan_path: str | None) -> None:
    """``--out`` must not be the recipe being read (it would be overwritten)."""
    if plan_path and Path(out).resolve() == Path(plan_path).resolve():
        raise UsageError(f"--out {out} is the --plan file: the export would overwrite the recipe it replays; "
                         "choose another output path")


def _export(ws, plan, out: str, fmt: str | None, verify: bool, pad: bool = False) -> dict:
    from core.io.export import export_model, state_dict_hash

    if pad and _format_for(out, fmt) != "hf":
        raise UsageError("--pad applies to --format hf only (a transformers folder)")
    r = export_model(ws.model, plan, _format_for(out, fmt), out, _export_example(ws), verify=verify,
                     model_name=ws.name, pad=pad, reports=ws.reports)
    if r.error and r.format == "hf" and "NotLoadableError" in r.error:
        from core.io.hf_shapes import loadable_plan

        near, notes = loadable_plan(ws.plan, ws.model_before, ws.reports)
        raise UsageError(f"export to hf refused (nothing written): {r.error}. The nearest loadable plan ("
                         f"{'; '.join(notes) or 'no change'}): {near.to_json(indent=None)}"
                         + ("" if pad else ". Or export with --pad: removed heads and MLP neurons written back as "
                            "zeros (same outputs, a larger folder)"))
    if r.error:
        raise UsageError(f"export to {r.format} failed (nothing written; an earlier export at {out}, if any, "
                         f"is unchanged): {r.error}")
    return {**r.to_dict(), "model": ws.name, "state_dict_hash": state_dict_hash(ws.model), "threads": _threads()}


def _apply_args(p):
    p.add_argument("model", help="registered model name (see `prunescope models`)")
    p.add_argument("--plan", required=True, help="recipe (plan JSON) to replay")
    p.add_argument("--export", metavar="PATH", help="also export the result to this file")
    p.add_argument("--format", choices=LazyChoices(_format_names), metavar="FORMAT",
                   help="export format: %(choices)s (default: from PATH's suffix)")
    p.add_argument("--verify", action="store_true", help="reload the export and compare outputs with the model")
    p.add_argument("--pad", action="store_true", help=PAD_HELP)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    p.add_argument("--full", action="store_true", help="evaluate on the full test split (default: quick subset)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("apply", "replay a recipe on its model; prints metrics and the state-dict hash", _apply_args)
def cmd_apply(args):
    from core.io.export import state_dict_hash

    if args.format and not args.export:
        raise UsageError("--format needs --export PATH")
    if args.export:
        _check_out(args.export, args.plan)
        from core.io.export import check_export_target
        from core.plan import Plan

        check_export_target(_format_for(args.export, args.format), args.export, Plan(args.model))
    ws = workspace_for(args)
    plan = _replay(ws, args.plan)
    out = metrics_object(ws, ws.name, "full" if args.full else "quick", not args.no_latency)
    out["state_dict_hash"] = state_dict_hash(ws.model)
    out["threads"] = _threads()  # a replay that trains sums in this many threads' order
    if args.export:
        out["export"] = _export(ws, plan, args.export, args.format, args.verify, args.pad)
    return out


def _export_args(p):
    p.add_argument("model", help="registered model name (see `prunescope models`)")
    p.add_argument("--plan", help="recipe to apply first (default: the base model)")
    p.add_argument("--format", required=True, choices=LazyChoices(_format_names), metavar="FORMAT",
                   help="export format: %(choices)s")
    p.add_argument("--out", required=True, help="output file (the recipe is written beside it); for hf a folder")
    p.add_argument("--verify", action="store_true", help="reload the file and compare outputs with the model")
    p.add_argument("--pad", action="store_true", help=PAD_HELP)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    p.add_argument("--json", action="store_true", help="print JSON")


@command("export", "export a model (after a recipe) to a file, optionally verified", _export_args)
def cmd_export(args):
    from core.io.export import check_export_target
    from core.plan import Plan

    _check_out(args.out, args.plan)
    check_export_target(args.format, args.out, Plan(args.model))  # before any model is loaded
    ws = workspace_for(args)
    plan = _replay(ws, args.plan) if args.plan else ws.plan
    return _export(ws, plan, args.out, args.format, args.verify, args.pad)
