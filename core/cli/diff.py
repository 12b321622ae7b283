"""The graph diff of base against current: ``diff`` (imported by ``core.cli``)."""
from __future__ import annotations

from core.cli.common import add_model_args, command, format_table, plan_workspace


def _diff_args(p):
    add_model_args(p)
    p.add_argument("--profile", action="store_true",
                   help="also time every leaf module of base and current with torch.profiler (same batch and "
                        "threads, interleaved runs, median)")
    p.add_argument("--batch", type=int, default=32, help="profiled batch size (default 32)")
    p.add_argument("--model-explorer", metavar="OUT.json",
                   help="write Model Explorer node data (status per node) to OUT.json, over the current model's "
                        "ONNX export written beside it as OUT.onnx")
    p.add_argument("--html", metavar="OUT.html",
                   help="also write the plan's self-contained HTML report to OUT.html: metrics before / after, this "
                        "diff, the weight histograms at their thresholds, the latency overlay (with --profile), "
                        "the recipe")


def _side(f) -> str:
    if f is None:
        return "-"
    shape = " ".join(f"{k}={v}" for k, v in f.shape.items())
    lat = f", {f.latency_ms:.3f} ms/batch ({f.latency_share:.0%} of module time)" if f.latency_ms is not None else ""
    text = f"{f.params:,} params, {f.macs:,} MACs/example, {f.sparsity:.0%} zero{lat}"
    return text + (f" [{shape}]" if shape else "")


def _rows(diff) -> list[dict]:
    rows = []
    for n in diff.nodes:
        if n.status == "kept" and not n.quantized and not n.weights_changed:
            continue
        widths = ", ".join(f"{k} {a}->{b}" for k, (a, b) in n.widths.items())
        extra = [w for w, on in (("int8", n.quantized), ("weights changed", n.weights_changed)) if on]
        score = "-" if n.removed_importance is None else f"{n.removed_importance:.3g}"
        rows.append({"node": n.name, "kind": n.kind, "status": n.status, "widths": widths or "-",
                     "before": _side(n.before), "after": _side(n.after), "removed score (1 = avg unit)": score,
                     "steps": ",".join(map(str, n.steps)) or "-", "note": ", ".join(extra) or "-"})
    return rows


def _text(diff) -> str:
    counts = diff.counts()
    lines = [f"graph diff of {diff.model}: base -> current ({len(diff.steps)} step(s))",
             "nodes by status: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
             f"edges: {len(diff.edges)} from {'a torch.fx trace' if diff.edges_from == 'fx' else 'execution order'}"]
    for side in ("before", "after"):
        t = diff.totals[side]
        lat = f", {t['latency_ms']:.3f} ms summed module time per batch" if t["latency_ms"] is not None else ""
        lines.append(f"{'base' if side == 'before' else 'current'}: {t['params']:,} params, {t['macs']:,} MACs "
                     f"per example{lat}")
    lines.append(f"latency: {diff.profile_note}")
    rows = _rows(diff)
    kept = counts["kept"] - sum(1 for r in rows if r["status"] == "kept")
    lines.append(f"{kept} node(s) kept unchanged (not listed; --json lists every node)")
    if rows:
        lines.append(format_table(rows))
    return "\n".join(lines)


def _model_explorer(ws, diff, out: str) -> dict:
    import json
    from pathlib import Path

    from core.errors import PrunescopeError
    from core.explain.model_explorer import STATUS_VALUES, to_model_explorer
    from core.io import export_model

    target = Path(out)
    if target.suffix != ".json":
        raise PrunescopeError(f"--model-explorer wants a .json path (the ONNX goes beside it), got {out!r}")
    onnx_path = target.with_suffix(".onnx")
    res = export_model(ws.model, ws.plan, "onnx", onnx_path, ws.evalset.quick()[0][:2])
    if res.error:
        raise PrunescopeError(f"the ONNX export for Model Explorer failed: {res.error}")
    data = to_model_explorer(diff, onnx_path)
    target.write_text(json.dumps(data, indent=2))
    return {"node_data": str(target), "onnx": str(onnx_path), "nodes_with_data": len(data["results"]),
            "legend": {str(v): s for s, v in STATUS_VALUES.items()}}


def _html_report(ws, diff, out: str) -> str:
    from pathlib import Path

    from core.errors import FileError
    from core.ground.files import atomic_path
    from core.viz.report import workspace_report_html

    page = workspace_report_html(ws, diff)
    try:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise FileError(f"--html: cannot write the report to {out!r}: {exc}") from exc
    return out


@command("diff", "the graph diff of base against current: every module kept, narrowed, masked, removed or added, "
                 "with params, MACs, sparsity and widths (and per-module latency with --profile)", _diff_args)
def cmd_diff(args):
    from core.errors import PrunescopeError

    if args.batch < 1:
        raise PrunescopeError(f"--batch must be 1 or more, got {args.batch}")
    ws = plan_workspace(args)
    diff = ws.graph_diff(profile=args.profile, batch=args.batch)
    me = _model_explorer(ws, diff, args.model_explorer) if args.model_explorer else None
    html = _html_report(ws, diff, args.html) if args.html else None
    if args.json:
        return {**diff.to_dict(), **({"model_explorer": me} if me else {}), **({"html": html} if html else {})}
    text = _text(diff)
    if me:
        text += (f"\nModel Explorer: node data {me['node_data']} ({me['nodes_with_data']} tensors) over "
                 f"{me['onnx']}; values " + ", ".join(f"{k} {v}" for k, v in me["legend"].items()))
    return text + (f"\nHTML report: {html}" if html else "")
