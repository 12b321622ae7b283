"""Retrain the bundled demo models deterministically on CPU.

    python -m demo_models.train [--only NAME] [--epochs N]

For each model: seeded init and data order, ``torch.use_deterministic_algorithms(True)``,
2 CPU threads, AdamW with linear warm-up then cosine decay, label smoothing 0.1, and
light augmentation (each training image shifted by -1..+1 pixel in x and y on the 8x8
grid, with background padding, from a seeded generator; for ``digits_resnet`` the
shifted 8x8 batch is then upsampled to 32x32 exactly as the ``digits32`` dataset is).

Writes ``weights/<name>.safetensors``, ``cards/<name>.md`` and updates ``_results.py``
(test accuracy measured by reloading the saved weights).
"""
from __future__ import annotations

import argparse
import math
import pprint
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from demo_models import nets
from demo_models.data import MEAN, STD, _digits_arrays, upsample32

HERE = Path(__file__).parent
WEIGHTS = HERE / "weights"
CARDS = HERE / "cards"
RESULTS = HERE / "_results.py"
SEED = 0
THREADS = 2
BACKGROUND = (0.0 - MEAN) / STD  # normalised value of an empty pixel


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    upsample: bool = False  # train on the 32x32 digits32 inputs


RECIPES = {
    "digits_mlp": Recipe(epochs=60, lr=1e-3),
    "digits_cnn": Recipe(epochs=40, lr=3e-3),
    "digits_resnet": Recipe(epochs=20, lr=2e-3, upsample=True),
    "digits_vit": Recipe(epochs=150, lr=1e-3, weight_decay=0.05, warmup_epochs=5),
}

DESCRIPTIONS = {
    "digits_mlp": "Fully connected 64-256-128-10 with ReLU on 8x8 digits",
    "digits_cnn": "Three conv-BN-ReLU blocks (32, 64, 64) on 8x8 digits",
    "digits_resnet": "ResNet with 4 BasicBlocks (32@32x32 x2, 64@16x16 x2) on 32x32 digits",
    "digits_vit": "Vision transformer, 2x2 patches, width 64, 4 blocks x 4 heads on 8x8 digits",
}
INPUT_SHAPES = {"digits_mlp": (1, 8, 8), "digits_cnn": (1, 8, 8), "digits_resnet": (1, 32, 32),
                "digits_vit": (1, 8, 8)}
DATASETS = {"digits_mlp": "digits", "digits_cnn": "digits", "digits_resnet": "digits32",
            "digits_vit": "digits"}


def random_shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift each (1, H, W) image by -1..+1 pixels in each axis, filling with background."""
    b, _, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1), value=BACKGROUND)
    dy = torch.randint(0, 3, (b,), generator=g)
    dx = torch.randint(0, 3, (b,), generator=g)
    rows = dy[:, None] + torch.arange(h)  # (B, H)
    cols = dx[:, None] + torch.arange(w)  # (B, W)
    out = xp[torch.arange(b)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out.unsqueeze(1).contiguous()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += (model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum().item()
    return correct / len(x)


def train_one(name: str, epochs: int | None = None) -> dict:
    r = RECIPES[name]
    if epochs is not None:
        r = Recipe(**{**r.__dict__, "epochs": epochs})
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED)
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    if r.upsample:
        x_te = upsample32(x_te)
    model = nets.FACTORIES[name]()
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    steps_per_epoch = math.ceil(len(x_tr) / r.batch_size)
    total = r.epochs * steps_per_epoch
    warm = r.warmup_epochs * steps_per_epoch

    def lr_lambda(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    t0 = time.perf_counter()
    for ep in range(r.epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=g)
        tot_loss = 0.0
        for i in range(0, len(x_tr), r.batch_size):
            idx = perm[i:i + r.batch_size]
            xb = random_shift(x_tr[idx], g)
            if r.upsample:
                xb = upsample32(xb)
            loss = F.cross_entropy(model(xb), y_tr[idx], label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
        if ep == r.epochs - 1 or (ep + 1) % max(1, r.epochs // 5) == 0:
            print(f"  {name} epoch {ep + 1}/{r.epochs} loss {tot_loss / len(x_tr):.4f} "
                  f"test acc {accuracy(model, x_te, y_te):.4f} ({time.perf_counter() - t0:.1f}s)", flush=True)
    seconds = time.perf_counter() - t0

    WEIGHTS.mkdir(exist_ok=True)
    CARDS.mkdir(exist_ok=True)
    wpath = WEIGHTS / f"{name}.safetensors"
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(sd, str(wpath))

    fresh = nets.FACTORIES[name]()
    fresh.load_state_dict(load_file(str(wpath)))
    acc = accuracy(fresh, x_te, y_te)
    params = sum(p.numel() for p in fresh.parameters())
    macs = nets.count_macs(fresh, INPUT_SHAPES[name])
    res = {"test_accuracy": round(acc, 4), "params": params, "macs": macs,
           "train_seconds": round(seconds, 1), "weights_bytes": wpath.stat().st_size}
    write_card(name, fresh, r, res, len(x_tr), len(x_te))
    print(f"{name}: test acc {acc:.4f}  params {params:,}  MACs/image {macs:,}  train {seconds:.1f}s",
          flush=True)
    return res


def write_card(name: str, model: torch.nn.Module, r: Recipe, res: dict, n_train: int, n_test: int) -> None:
    ds = DATASETS[name]
    shape = INPUT_SHAPES[name]
    text = f"""# {name}

{DESCRIPTIONS[name]}.

| | |
|---|---|
| Test accuracy (committed weights) | **{res['test_accuracy'] * 100:.2f}%** ({n_test} test images) |
| Parameters | {res['params']:,} |
| MACs per image | {res['macs']:,} ({res['macs'] / 1e6:.2f} M, `torch.utils.flop_counter.FlopCounterMode` flops / 2) |
| Input | `{shape}` float32 |
| Weights | `weights/{name}.safetensors` ({res['weights_bytes'] / 1024:.0f} KiB, fp32) |

## Dataset

`{ds}`: scikit-learn's bundled `load_digits()` (1797 8x8 grey images, 10 classes), pixels
divided by 16 then normalised with mean 0.5, std 0.5 (values in [-1, 1]){
', bilinearly upsampled to 32x32 (`F.interpolate`, `align_corners=False`)' if ds == 'digits32' else ''}.
Split: `train_test_split(test_size=0.25, random_state=0, stratify=y)`: {n_train} train, {n_test} test.

## Training recipe

- Optimizer: AdamW, lr {r.lr}, weight decay {r.weight_decay}, betas (0.9, 0.999)
- Schedule: linear warm-up for {r.warmup_epochs} epochs, then cosine decay to 0 (per step)
- Epochs: {r.epochs}, batch size {r.batch_size}, cross-entropy with label smoothing {r.label_smoothing}
- Augmentation: random shift of -1..+1 pixel in x and y on the 8x8 grid (background padding){
', then upsampling to 32x32' if r.upsample else ''}
- Seed {SEED} (`torch.manual_seed` and a seeded `torch.Generator` for order and shifts),
  `torch.use_deterministic_algorithms(True)`, {THREADS} CPU threads
- Training time: {res['train_seconds']:.1f} s on CPU ({THREADS} threads)
- Reproduce: `python -m demo_models.train --only {name}`

## Architecture

```
{model}
```
"""
    (CARDS / f"{name}.md").write_text(text)


def _write_results(results: dict) -> None:
    RESULTS.write_text(
        '"""Facts from the last `python -m demo_models.train` run (generated; do not edit)."""\n\n'
        f"RESULTS = {pprint.pformat(results, sort_dicts=True)}\n"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(RECIPES), help="train one model only")
    ap.add_argument("--epochs", type=int, help="override the epoch count (for quick experiments)")
    args = ap.parse_args(argv)
    try:
        from demo_models._results import RESULTS as old
    except ImportError:
        old = {}
    results = dict(old)
    names = [args.only] if args.only else list(RECIPES)
    t0 = time.perf_counter()
    for name in names:
        results[name] = train_one(name, args.epochs)
        _write_results(results)
    total = time.perf_counter() - t0
    print("\nper-model training time: " + ", ".join(f"{n} {results[n]['train_seconds']:.1f}s" for n in names))
    print(f"total wall time: {total:.1f}s")


if __name__ == "__main__":
    main()
