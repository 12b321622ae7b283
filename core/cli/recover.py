"""Recovery commands: ``finetune``, ``quantize`` (imported by ``core.cli``)."""
from __future__ import annotations

import time

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


def _apply_timed(args, step, *, before_latency: bool):
    """The plan of ``args`` then ``step``: ``(workspace, metrics object + before + seconds)``."""
    from core.errors import PlanError

    ws = workspace_for(args)
    plan = load_plan_arg(args.plan, ws.name)
    ws.set_plan(plan)
    before = ws.metrics(_subset(args), latency=before_latency).to_dict()
    t0 = time.perf_counter()
    try:
        ws.set_plan(plan.then(step))
    except PlanError as exc:
        raise UsageError(str(exc)) from exc
    seconds = time.perf_counter() - t0
    save_plan_arg(ws.plan, args.save_plan)
    out = metrics_object(ws, ws.name, _subset(args), not args.no_latency)
    out["before"], out["seconds"] = before, round(seconds, 3)
    return ws, out


def parse_train(text: str) -> tuple[str, int]:
    """``all`` | ``adapters`` | ``last:K`` -> (train, last)."""
    if text in ("all", "adapters"):
        return text, 1
    if text.startswith("last:") and text[5:].isdigit() and int(text[5:]) >= 1:
        return "last", int(text[5:])
    raise UsageError(f"--train must be all, adapters or last:K with K >= 1 (e.g. last:2), got {text!r}")


def _finetune_args(p):
    add_model_args(p)
    p.add_argument("--steps", type=int, required=True, help="optimisation steps (batches of the training split)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (peak of the schedule; default 1e-3)")
    p.add_argument("--schedule", default="cosine", help="cosine | constant (default cosine)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step (default 64)")
    p.add_argument("--train", default="all", help="all | last:K (the last K blocks and the head) | adapters")
    p.add_argument("--distill", action="store_true",
                   help="learn the base model's soft targets too (labels + distillation; alone with --no-labels)")
    p.add_argument("--no-labels", action="store_true", help="distillation only (no labels)")
    p.add_argument("--temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of distillation beside labels (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="batch order seed")
    p.add_argument("--save-plan", help="write the resulting plan (recipe JSON) here")


@command("finetune", "fine-tune (or distil) the model after its plan; masks and removed units stay",
         _finetune_args)
def cmd_finetune(args):
    import torch

    from core.recover import Finetune

    train, last = parse_train(args.train)
    loss = "distill" if args.no_labels else ("both" if args.distill else "labels")
    step = Finetune(steps=args.steps, lr=args.lr, schedule=args.schedule, batch_size=args.batch_size, train=train,
                    last=last, loss=loss, temperature=args.temperature, alpha=args.alpha, seed=args.seed,
                    threads=torch.get_num_threads())
    ws, out = _apply_timed(args, step, before_latency=False)
    out["losses"] = ws.reports[-1].info["losses"]
    return out


def _quantize_args(p):
    add_model_args(p)
    p.add_argument("--scheme", default="int8", help="int8 (the only scheme so far)")
    p.add_argument("--mode", default="auto",
                   help="auto (static when convolutions hold most weights, else dynamic) | static | dynamic")
    p.add_argument("--seed", type=int, default=0, help="calibration batch seed (training split)")
    p.add_argument("--save-plan", help="write the resulting plan (recipe JSON) here")


@command("quantize", "int8 post-training quantisation with onnxruntime (the plan's last step)", _quantize_args)
def cmd_quantize(args):
    from core.recover import Quantize

    step = Quantize(scheme=args.scheme, mode=args.mode, seed=args.seed)
    ws, out = _apply_timed(args, step, before_latency=not args.no_latency)
    out["step"] = {"summary": ws.reports[-1].summary, **ws.reports[-1].info}
    return out
