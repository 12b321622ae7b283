"""The command registry and what every command shares: arguments, plan files, output."""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence

from core.errors import PrunescopeError
from core.ground.registry import Registry

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


class LazyChoices(Sequence):
    """argparse ``choices`` computed on first use (``--help`` of another command, or the
    top-level ``--help``, never loads them: listing export formats imports torch)."""

    def __init__(self, names: Callable[[], list[str]]):
        self._fn, self._names = names, None

    def _get(self) -> list[str]:
        if self._names is None:
            self._names = list(self._fn())
        return self._names

    def __getitem__(self, i):
        return self._get()[i]

    def __len__(self) -> int:
        return len(self._get())


def _clean(obj):
    """JSON-safe: inf/nan become strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _cell(v) -> str:
    """One value as a person reads it: floats to 4 significant digits, shapes as 1x8x8."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple, dict)) and not v:
        return "(none)"
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v) and len(v) <= 6:
            return "x".join(map(str, v))
        if len(v) > 12 or any(isinstance(x, (list, dict)) for x in v):
            return f"[{len(v)} items; --json for all]"
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return f"{{{len(v)} fields; --json for all}}"
    text = str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def format_table(rows: list[dict]) -> str:
    """Rows of dicts as aligned columns (the union of their keys, in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, "")) if c in r else "" for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                   for r in rows if c in r) for c in cols]
    fmt = lambda vals: "  ".join(v.rjust(w) if n else v.ljust(w)
                                 for v, w, n in zip(vals, widths, numeric)).rstrip()
    return "\n".join([fmt(cols), fmt(["-" * w for w in widths])] + [fmt(row) for row in cells])


def format_fields(obj: dict, indent: int = 0) -> str:
    """A dict as ``key: value`` lines; nested dicts indented one level."""
    pad = " " * indent
    w = max((len(str(k)) for k in obj), default=0)
    lines = []
    for k, v in obj.items():
        if isinstance(v, dict) and indent == 0 and v:
            lines.append(f"{pad}{str(k):<{w}}:")
            lines.append(format_fields(v, indent + 2))
        else:
            lines.append(f"{pad}{str(k):<{w}}: {_cell(v)}")
    return "\n".join(lines)


def print_result(obj, as_json: bool) -> None:
    """Print a command's result: JSON, or a readable table (rounded numbers)."""
    if as_json:
        print(json.dumps(_clean(obj), indent=2))
    elif isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        print(format_table(obj) if obj else "(none)")
    elif isinstance(obj, dict):
        print(format_fields(obj))
    else:
        print(obj)


def add_model_args(p: argparse.ArgumentParser, plan: bool = True) -> None:
    p.add_argument("model", help="registered model name (see `prunescope models`)")
    if plan:
        p.add_argument("--plan", help="a plan recipe (JSON) to apply first")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="evaluate and time under this precision (bf16 / fp16: autocast; compared with "
                        "the base's fp32 outputs; default fp32)")
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

    return Workspace(args.model, args.device, precision=getattr(args, "precision", "fp32"))


def plan_workspace(args):
    """The workspace of ``args.model`` with the plan of ``--plan`` (or none) made current."""
    ws = workspace_for(args)
    ws.set_plan(load_plan_arg(args.plan, ws.name))
    return ws


def metrics_object(ws, model_name: str, subset: str, latency: bool) -> dict:
    """The metrics object every command prints (see README, CLI reference)."""
    m = ws.metrics(subset, latency=latency)
    d = {"model": model_name, "headline": m.quality_name(ws.spec.task), **m.to_dict()}  # what "accuracy" is
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
        except ValueError as exc:
            raise UsageError(f"--layer {item!r}: {val!r} is not a number") from exc
        out.append(LayerOverride(layer=name, sparsity=v))
    return tuple(out)


def save_plan_arg(plan, path: str | None) -> None:
    if path:
        plan.save(path)


__all__ = ["COMMANDS", "command", "LazyChoices", "UsageError", "print_result", "add_model_args", "load_plan_arg",
           "workspace_for", "plan_workspace", "metrics_object", "parse_layer_overrides", "save_plan_arg"]
