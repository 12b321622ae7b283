"""`python -m benchmarks.profile_live [--device cuda] [--images 256] [--arch resnet50]`: where
the time of one threshold move goes.

Times a move (new weight-level plan + quick metrics) and one forward of the same images,
then prints ``cProfile``'s top entries over five moves: the host work a move adds to the
forward (copies, counts, syncs). A torchvision model with random weights and synthetic
images; nothing is saved.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time

import torch

import benchmarks  # noqa: F401 - the entry point: registers the built-in kinds and plug-ins
from benchmarks.common import live_pair
from core.ground.device import synchronize
from core.sources.entries import register
from core.workspace import Workspace


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_live")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    os.environ.setdefault("PRUNESCOPE_HOME", tempfile.mkdtemp(prefix="prunescope-profile-"))
    name = f"profile_{args.arch}"
    register(name, torchvision=args.arch, data={"kind": "synthetic", "n": 4 * args.images},
             input_shape=(3, 224, 224), save=False)
    ws = Workspace(name, args.device, quick_size=args.images, latency_time=0.1)
    move, _, _ = live_pair(ws)
    x, _ = ws.evalset.quick()

    def forward():
        with torch.inference_mode():
            ws.base(x)
        synchronize(ws.device)

    for fn, what in ((forward, "forward"), (move, "move")):
        fn()
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        synchronize(ws.device)
        print(f"{what}: {(time.perf_counter() - t0) / 5 * 1e3:.1f} ms ({args.arch}, {len(x)} images, {args.device})")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        move()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
