"""`python -m benchmarks.zoo`: every torchvision model of a task through the engine.

Each model of the tasks asked (``--tasks``: classification, segmentation, detection, video, optical_flow; random
weights, ``torchvision.models.get_model(name, weights=None)`` with ``weights_backbone=None`` and the
input shape ``--torchvision`` gives it, no per-model configuration but a detector's resize: the
R-CNNs, RetinaNet and FCOS get ``min_size=max_size=320``, :data:`DETECTOR_SIZE`; RAFT pairs of 128 px,
:data:`FLOW_SIDE`) runs in its own process with a
memory cap and a timeout, through five stages, each a plan applied to the pristine base the way the CLI does it:

1. ``load``: registered with ``core.sources.models.register_factory`` (synthetic fidelity data),
   built, and run on the example batch;
2. ``weight``: ``Prune(granularity="weight", sparsity=0.5)``;
3. ``channel``: ``Prune(granularity="channel", sparsity=0.3)``; the pruned model must run
   and keep its output shapes (every leaf of a segmenter's); the row's ``removed_share`` is the
   share of the base's parameters it removed (and, where that is under 5%, a transformer's,
   the share ``Prune(granularity="neuron", sparsity=0.3)`` removes, under ``"neuron"``). A model
   with no convolutions to narrow (the step says so: Swin3D) is pruned by neurons instead, as a
   person would, and the row says so (``structured_granularity``);
4. ``blocks``: ``list_blocks`` of the default container, then ``Cut`` of one block (the
   middle one of those that keep their input shape and have parameters, else the middle
   one); the cut model must run and keep its output shape;
5. ``onnx``: ``export_model(..., "onnx", verify=True)`` of the channel-pruned model (of
   the weight-pruned one, or the base, when an earlier stage failed: said in the row).

Prints one row per model and the number of models passing each stage, and writes JSON
(``--json``; default ``benchmarks/results/zoo-latest.json``). ``python -m benchmarks``
does not run it (it only collects ``bench_*`` modules): the whole zoo takes an hour or
more. Requires torchvision.

    python -m benchmarks.zoo --only resnet18,vit_b_16 --json /tmp/zoo.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.zoo_models import CALIB, TASKS, _models, _register
from benchmarks.zoo_proc import _limit, _reset_peak, _status_kb

HERE = Path(__file__).resolve().parent
STAGES = ("load", "weight", "channel", "blocks", "onnx")
LOW_SHARE = 0.05  # a channel stage removing less than this share of the parameters: neurons are tried too


# --- one model, in the child process -------------------------------------------

def _shapes(out) -> dict:
    from core.ground.outputs import leaf_shapes

    return leaf_shapes(out)  # a detector's without its box count (it varies)


def _forward_check(model, x, want: dict) -> None:
    import torch

    with torch.inference_mode():
        got = _shapes(model(x))
    if got != want:
        raise RuntimeError(f"the result gives {got}, the base {want}")


def _neurons(state: dict) -> tuple:
    """``(plan, model, reports)`` of ``Prune(granularity="neuron", sparsity=0.3)`` on the base, in a fresh context."""
    from core.plan import ApplyContext, Plan, apply_with_reports
    from core.prune import Prune

    plan = Plan(state["name"]).then(Prune(granularity="neuron", sparsity=0.3))
    return (plan, *apply_with_reports(plan, state["base"], ctx=ApplyContext(state["name"], calib_size=CALIB)))


def _neuron_share(state: dict, row: dict) -> str:
    """Where channels remove under :data:`LOW_SHARE` of the parameters (a transformer's only convolution is
    its patch embedding): :func:`_neurons` too, its share kept in the row."""
    try:
        model = _neurons(state)[1]
        _forward_check(model, state["x"], state["out_shape"])
    except Exception as exc:  # noqa: BLE001 - recorded in the row: the zoo goes on
        row.setdefault("removed_share", {})["neuron"] = None
        return f"neurons 0.3: {type(exc).__name__}: {str(exc)[:160]}"
    share = round(1 - sum(p.numel() for p in model.parameters()) / row["params"], 4)
    row.setdefault("removed_share", {})["neuron"] = share
    return f"neurons 0.3 remove {share:.1%} of the parameters"


def _pick_block(blocks) -> str:
    keep = [b for b in blocks if b.in_shape == b.out_shape and b.params > 0 and not b.adapter]
    pool = keep or blocks
    return pool[len(pool) // 2].name


def run_one(arch: str, result_path: str, threads: int) -> None:
    """Run every stage on ``arch``; the row is rewritten after each stage (a kill keeps what ran).

    Over 80 lines on purpose: the stages run in order, each writing the row, and read best
    as one script from top to bottom (split, each piece would need the whole row state)."""
    import gc
    import traceback

    import torch

    torch.set_num_threads(threads)
    row: dict = {"model": arch, "stages": {}, "notes": {}}

    def save():
        Path(result_path).write_text(json.dumps(row))

    def stage(name: str, fn):
        _reset_peak()
        before = _status_kb("VmRSS")
        t0 = time.perf_counter()
        row["stages"][name] = {"ok": False, "error": "running (killed or timed out here)"}
        save()
        try:
            note = fn()
            row["stages"][name] = {"ok": True, "error": None}
            if note:
                row["notes"][name] = note
        except BaseException as exc:  # noqa: BLE001 - a benchmark reports every failure
            msg = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
            row["stages"][name] = {"ok": False, "error": f"{type(exc).__name__}: {msg}",
                                   "trace": traceback.format_exc()[-2000:]}
        row["stages"][name]["seconds"] = round(time.perf_counter() - t0, 2)
        peak = _status_kb("VmHWM")
        row["stages"][name]["peak_rss_mb"] = None if peak is None else round(peak / 1024)
        if peak is not None and before is not None:  # what the stage added at its peak
            row["stages"][name]["extra_peak_mb"] = round((peak - before) / 1024)
        gc.collect()
        save()
        return row["stages"][name]["ok"]

    from core.errors import PlanError
    from core.plan import ApplyContext, Plan, apply_with_reports
    from core.prune import Prune
    from core.sources.bases import load_base

    state: dict = {}

    def load():
        name = _register(arch)
        base = load_base(name)
        x = ApplyContext(name, calib_size=CALIB).calibration(0)[0][:2]
        with torch.inference_mode():
            out = base(x)
        state.update(name=name, base=base, x=x, out_shape=_shapes(out))
        params = sum(p.numel() for p in base.parameters())
        row["params"] = params
        row["param_bytes"] = sum(p.numel() * p.element_size() for p in base.parameters())
        shown = ", ".join(f"{k} {v}" for k, v in state["out_shape"].items())
        return f"{params / 1e6:.1f} M parameters, input {tuple(x.shape[1:])}, output {shown}"

    def plan_stage(step, key: str):
        def fn():
            plan, said = Plan(state["name"]).then(step), ""
            # a fresh context per stage: its memo (the structured analysis) goes with it
            def build(p):
                return apply_with_reports(p, state["base"], ctx=ApplyContext(state["name"], calib_size=CALIB))
            try:
                model, reports = build(plan)
            except PlanError as exc:  # a transformer without convolutions to narrow: its neurons, as a person would
                if key != "channel" or "has no prunable convolutions" not in str(exc):
                    raise
                plan, model, reports = _neurons(state)
                row["structured_granularity"], said = "neuron", "no convolutions to narrow: neurons 0.3 instead; "
            _forward_check(model, state["x"], state["out_shape"])
            state[key] = plan
            if key == "channel":
                state["channel_model"] = model
            r = reports[-1]
            if r.total and not r.pruned:
                raise RuntimeError(f"nothing removed: {'; '.join((r.warnings or ['no units selected'])[:3])}")
            warns = list(r.warnings or [])
            row.setdefault("warnings", {})[key] = warns[:20]
            params = sum(p.numel() for p in model.parameters())
            extra = f"; {len(warns)} warning(s)" if warns else ""
            if key == "channel":  # the share of the base's parameters the structured stage removed (issue 24)
                row.setdefault("removed_share", {})[key] = round(1 - params / row["params"], 4)
                if row["removed_share"][key] < LOW_SHARE and not said:  # the report says why; what neurons remove
                    extra += "; " + _neuron_share(state, row)
            if r.total:
                return f"{said}{r.summary or ''} ({r.pruned:,}/{r.total:,}); params {params / row['params']:.0%}{extra}"
            return (r.summary or "") + extra
        return fn

    def blocks():
        from core.surgery import Cut, default_container, list_blocks

        base = state["base"]
        cont = default_container(base, state["name"])
        bl = list_blocks(base, state["x"], cont, model_name=state["name"])
        name = _pick_block(bl)
        plan = Plan(state["name"]).then(Cut((name,)))
        model, reports = apply_with_reports(plan, base, ctx=ApplyContext(state["name"], calib_size=CALIB))
        _forward_check(model, state["x"], state["out_shape"])
        row["container"] = cont
        return f"container {cont!r}: {len(bl)} blocks; cut {name}: {reports[-1].summary}"

    def onnx():
        from core.io.export import export_model

        if "channel_model" in state:
            key, plan, model = "channel", state["channel"], state["channel_model"]
        elif "weight" in state:
            key, plan = "weight", state["weight"]
            model = apply_with_reports(plan, state["base"], ctx=ApplyContext(state["name"], calib_size=CALIB))[0]
        else:
            key, plan, model = "base", Plan(state["name"]), state["base"]
        with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as d:
            r = export_model(model, plan, "onnx", Path(d) / f"{arch}.onnx", state["x"], verify=True,
                             model_name=state["name"])
        if r.error:
            raise RuntimeError(r.error)
        if not r.verified:
            raise RuntimeError(f"not verified: max |diff| {r.max_abs_diff}")
        return f"{key} model, {r.bytes / 1e6:.1f} MB, max |diff| {r.max_abs_diff:.2g}; {r.note}"

    if not stage("load", load):
        for s in STAGES[1:]:
            row["stages"][s] = {"ok": False, "error": "skipped: the model did not load"}
        save()
        return
    stage("weight", plan_stage(Prune(criterion="l1", granularity="weight", sparsity=0.5), "weight"))
    stage("channel", plan_stage(Prune(criterion="l1", granularity="channel", sparsity=0.3), "channel"))
    stage("blocks", blocks)
    stage("onnx", onnx)


# --- the driver ------------------------------------------------------------------

def _run_child(arch: str, args) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=f".{arch}.json", delete=False) as f:
        result = f.name
    cmd = [sys.executable, "-m", "benchmarks.zoo", "--child", arch, "--result", result,
           "--threads", str(args.threads)]
    t0 = time.perf_counter()
    log = open(Path(result).with_suffix(".log"), "w")
    proc = subprocess.Popen(cmd, cwd=str(HERE.parent), stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_limit(args.mem_gb))
    why, peak = None, 0
    while proc.poll() is None:
        time.sleep(0.5)
        rss = _status_kb("VmRSS", proc.pid) or 0
        peak = max(peak, rss)
        if rss > args.mem_gb * 2**20:
            why = f"killed: resident memory over {args.mem_gb:g} GB"
        elif time.perf_counter() - t0 > args.timeout:
            why = f"killed: over the {args.timeout:g} s timeout"
        if why:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
    log.close()
    try:
        row = json.loads(Path(result).read_text())
    except (OSError, ValueError):
        row = {"model": arch, "stages": {}, "notes": {}}
    finally:
        Path(result).unlink(missing_ok=True)
    tail = Path(result).with_suffix(".log").read_text(errors="replace")[-1500:]
    Path(result).with_suffix(".log").unlink(missing_ok=True)
    if proc.returncode and not why:
        why = f"process exited with code {proc.returncode}"
    for s in STAGES:
        st = row["stages"].get(s)
        if st is None:
            row["stages"][s] = {"ok": False, "error": f"not reached ({why or 'unknown'})"}
        elif not st["ok"] and st["error"].startswith("running"):
            st["error"] = why or st["error"]
    if why:
        row["killed"] = why
        row["log_tail"] = tail
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["peak_rss_mb"] = round(peak / 1024)
    return row


def _print_row(r: dict) -> None:
    marks = " ".join(("ok " if r["stages"][s]["ok"] else "NO ") for s in STAGES)
    first = next((f"{s}: {r['stages'][s]['error']}" for s in STAGES if not r["stages"][s]["ok"]), "")
    params = f"{r['params'] / 1e6:7.1f}M" if r.get("params") else "      ?"
    print(f"{r['model']:<20} {params} {marks} {r['seconds']:7.1f}s {r['peak_rss_mb']:6d}MB  {first[:140]}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.zoo", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated model names, run in that order (default: all of --tasks)")
    ap.add_argument("--tasks", default="classification",
                    help=f"torchvision tasks whose models run, some of {', '.join(TASKS)} (default classification: 80 "
                         "models; segmentation 8, detection 12, video 8, optical_flow 2)")
    ap.add_argument("--jobs", type=int, default=1, help="models run at once (default 1)")
    ap.add_argument("--json", default=str(HERE / "results" / "zoo-latest.json"), help="where to write the JSON")
    ap.add_argument("--mem-gb", type=float, default=10.0, help="resident memory cap per model process (GB)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per model")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)), help="torch threads per model")
    ap.add_argument("--resume", help="a JSON written by an earlier run: its models are kept, not run again")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_one(args.child, args.result, args.threads)
        return 0
    names = _models(args.only, args.tasks)
    done: dict = {}
    if args.resume and Path(args.resume).exists():
        done = {r["model"]: r for r in json.loads(Path(args.resume).read_text())["rows"] if r["model"] in names}
    print(f"{len(names)} model(s); stages: {', '.join(STAGES)}; cap {args.mem_gb:g} GB, timeout {args.timeout:g} s")
    heads = " ".join(f"{s[:3]:<3}" for s in STAGES)
    print(f"{'model':<20} {'params':>8} {heads} {'time':>8} {'peak':>8}  first failure")
    rows: list[dict] = []
    t0 = time.perf_counter()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write():
        counts = {s: sum(r["stages"][s]["ok"] for r in rows) for s in STAGES}
        doc = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.executable, "models": len(rows),
               "counts": counts, "all_stages": sum(all(r["stages"][s]["ok"] for s in STAGES) for r in rows),
               "rows": rows}
        out.write_text(json.dumps(doc, indent=2))
        return counts

    for n in [n for n in names if n in done]:
        rows.append(done[n])
        _print_row(rows[-1])
    names = [n for n in names if n not in done]
    if args.jobs <= 1:
        for n in names:
            rows.append(_run_child(n, args))
            _print_row(rows[-1])
            write()
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            for r in pool.map(lambda n: _run_child(n, args), names):
                rows.append(r)
                _print_row(r)
                write()
    counts = write()
    print(f"\npassing per stage (of {len(rows)}): " + ", ".join(f"{s} {c}" for s, c in counts.items()))
    print(f"all stages: {sum(all(r['stages'][s]['ok'] for s in STAGES) for r in rows)} of {len(rows)}; "
          f"{time.perf_counter() - t0:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
