"""GPU benchmarks (`make gpu-check`; rows say "skipped" where there is no CUDA device).

* the live loop on torchvision ResNet-50 and ViT-B/16 at 224 px (random weights, 256
  images): a slider move (new plan + quick metrics) against a forward + mask pass;
* structured speed-up of ResNet-50 at 50% channels, batch 64: ours and Torch-Pruning's
  MetaPruner in the same process, beside Torch-Pruning's published figure;
* 2:4 semi-structured speed-up of Linear layers through ``torch.sparse.to_sparse_semi_structured``;
* a Llama-architecture model of about 1 B parameters built from a config (random weights),
  evaluated under bf16 autocast: head and neuron pruning with a perplexity readout on a
  text file, seconds per slider move;
* the evaluation precision (fp32 / bf16 / fp16 autocast): latency and the fidelity it costs;
* peak GPU memory of each operation.

Every time is read after ``torch.cuda.synchronize``; ratios are against a baseline run in the
same process on the same device. ``python -m benchmarks.bench_gpu --dry-run`` runs the same
code at toy sizes on the CPU (a check of the code, not a measurement).
"""
from __future__ import annotations

import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import live_pair, row
from core.ground.device import peak_memory, synchronize
from core.plan import Plan
from core.prune import Prune
from core.workspace import Workspace

DRY = {"dry": False}
TP_PUBLISHED = "Torch-Pruning's published ResNet-50 at 50% channels: 4.12 -> 1.07 GMACs, 45.2 -> 20.7 ms (2.19x)"


def _scale() -> dict:
    if DRY["dry"]:
        return {"dev": "cpu", "px": 64, "n": 32, "resnet": "resnet18", "vit_kwargs": {"image_size": 64},
                "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=4, vocab_size=512), "seq": 32, "lm_n": 16, "repeat": 2,
                "mlp": [(256, 512, 64)]}
    return {"dev": "cuda", "px": 224, "n": 256, "resnet": "resnet50", "vit_kwargs": {},
            "llama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=32000), "seq": 128, "lm_n": 64, "repeat": 5,
            "mlp": [(768, 3072, 64 * 197), (4096, 16384, 4096), (8192, 32768, 16384)]}


def _timed(fn, repeat: int, dev: str, warmup: int = 1) -> float:
    """Median seconds of ``fn``, each run closed by a synchronisation."""
    for _ in range(warmup):
        fn()
    synchronize(torch.device(dev))
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        synchronize(torch.device(dev))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _gib(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def _vision(arch: str, s: dict) -> str:
    from core.sources.entries import register

    name = f"gpu_{arch}"
    kwargs = s["vit_kwargs"] if arch.startswith("vit") else {}
    register(name, torchvision=arch, kwargs=kwargs, data={"kind": "synthetic", "n": 4 * s["n"]},
             input_shape=(3, s["px"], s["px"]), save=False)
    return name


def live_loop(arch: str) -> list[dict]:
    """A threshold move (new plan, quick metrics on 256 images) against one forward of the
    same images plus one mask multiply per prunable layer."""
    s = _scale()
    name = _vision(arch, s)
    ws = Workspace(name, s["dev"], quick_size=s["n"], latency_time=0.2)
    move, baseline, n = live_pair(ws)
    with peak_memory(s["dev"]) as pk:
        move()
    ours = _timed(move, s["repeat"], s["dev"])
    base = _timed(baseline, s["repeat"], s["dev"])
    ratio = ours / base
    return [row(f"gpu live loop {arch} {s['px']}px", ratio, "x", "<=1.2x", ratio <= 1.2,
                f"slider move {ours * 1e3:.1f} ms, forward of {n} + mask pass {base * 1e3:.1f} ms; "
                f"peak GPU memory of a move {_gib(pk['bytes'])}; {s['dev']}")]


def structured_speedup() -> list[dict]:
    """ResNet-50, 50% channels, batch 64: MACs and latency (interleaved with the base) of
    ours and of Torch-Pruning's MetaPruner (magnitude, uniform 50%) in this process."""
    import torch_pruning as tp

    from core.metrics.cost import count_macs, measure_latency_pair

    s = _scale()
    arch = s["resnet"]
    name = _vision(arch, s)
    ws = Workspace(name, s["dev"], quick_size=s["n"], latency_batch=64, latency_time=0.5)
    base = ws.base_metrics(latency=False)
    t0 = time.perf_counter()
    with peak_memory(s["dev"]) as pk:
        ws.add_step(Prune(criterion="l1", granularity="channel", sparsity=0.5))
    build = time.perf_counter() - t0
    m = ws.metrics()
    ours = m.base_latency.median_ms / m.latency.median_ms
    rows = [row(f"gpu structured {arch} 50% channels (ours)", ours, "x speed-up", ">=2.19x (TP published)",
                ours >= 2.19,
                f"MACs {base.macs / 1e9:.2f} -> {m.macs / 1e9:.2f} G, latency batch 64 "
                f"{m.base_latency.median_ms:.2f} -> {m.latency.median_ms:.2f} ms ({m.latency.method}), "
                f"params {base.params / 1e6:.1f} -> {m.params / 1e6:.1f} M, step built in {build:.1f} s, "
                f"peak memory {_gib(pk['bytes'])}. {TP_PUBLISHED}")]
    model = copy.deepcopy(ws.base).eval()
    for p in model.parameters():  # Torch-Pruning traces the graph through autograd
        p.requires_grad_(True)
    example = ws.evalset.quick()[0][:1].clone()  # a normal tensor (the eval set's are inference tensors)
    fc = [mod for mod in model.modules() if isinstance(mod, torch.nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=fc)
    pruner.step()
    for p in model.parameters():
        p.requires_grad_(False)
    tp_macs = count_macs(model, example)
    b, c = measure_latency_pair(ws.base, model, example, 64, 0.5)
    tps = b.median_ms / c.median_ms
    rows.append(row(f"gpu structured {arch} 50% channels (Torch-Pruning, same process)", tps, "x speed-up",
                    "reference", True, f"MACs {base.macs / 1e9:.2f} -> {tp_macs / 1e9:.2f} G, latency "
                                       f"{b.median_ms:.2f} -> {c.median_ms:.2f} ms"))
    return rows


def semi_structured() -> list[dict]:
    """2:4 Linear layers through torch.sparse.to_sparse_semi_structured against the dense fp16 layers."""
    from core.errors import ModelError
    from core.prune.nm import SPARSE_BACKENDS, nm_mask, semi_structured_speedup

    s = _scale()
    if s["dev"] != "cuda":
        return [row("gpu 2:4 semi-structured", None, "", "", True, "skipped: the sparse kernels exist on CUDA only")]
    rows = []
    for d, h, tokens in s["mlp"]:
        g = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.GELU(), torch.nn.Linear(h, d))
        for layer in (model[0], model[2]):
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.02)
                layer.weight.mul_(nm_mask(layer.weight.abs(), 2, 4))
        x = torch.randn(tokens, d, generator=g)
        for backend in SPARSE_BACKENDS:
            try:
                out = semi_structured_speedup(model, x, backend=backend)
            except ModelError as exc:
                rows.append(row(f"gpu 2:4 MLP {d}-{h}-{d} ({backend})", None, "", "", True, f"skipped: {exc}"))
                continue
            sp = out["dense_ms"] / out["sparse_ms"]
            rows.append(row(f"gpu 2:4 MLP {d}-{h}-{d}, {tokens} tokens fp16 ({backend})", sp, "x speed-up", ">1x",
                            sp > 1, f"dense {out['dense_ms']:.3f} ms, 2:4 sparse {out['sparse_ms']:.3f} ms "
                                    f"(CUDA events, median of 50 interleaved)"))
    return rows


WORDS = ("the a cat dog bird fish sees likes eats chases finds red big small old new happy sad good bad "
         "quick slow house tree river park ball food water sun moon runs sleeps jumps sings").split()


def _llama_folder(root: Path, cfg: dict) -> tuple[Path, Path, int]:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(4000)]
    text = root / "text.txt"
    text.write_text("\n".join(lines) + "\n")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(lines, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<eos>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    torch.manual_seed(0)
    config = tf.LlamaConfig(max_position_embeddings=512, pad_token_id=0, eos_token_id=2, bos_token_id=None,
                            tie_word_embeddings=False, **cfg)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # random init on the GPU: seconds, not minutes
        model = tf.LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    folder = root / "llama"
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    del model
    return folder, text, params


def llama() -> list[dict]:
    """A ~1 B-parameter Llama (random weights) from a local folder, evaluated under bf16
    autocast: seconds per head / neuron slider move and the perplexity readout."""
    from core.sources.entries import register

    s = _scale()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder, text, params = _llama_folder(Path(tmp), s["llama"])
        made = time.perf_counter() - t0
        name = "gpu_llama"
        register(name, hf=str(folder), data={"kind": "text", "path": str(text), "seq_len": s["seq"]}, save=False)
        t0 = time.perf_counter()
        ws = Workspace(name, s["dev"], quick_size=s["lm_n"], latency_batch=8, latency_time=0.3,
                       precision="bf16" if s["dev"] == "cuda" else "fp32")
        base = ws.base_metrics()
        opened = time.perf_counter() - t0
        rows = [row(f"gpu llama {params / 1e9:.2f} B open + base metrics", opened, "s", "", True,
                    f"config, random weights and tokenizer written in {made:.0f} s; perplexity "
                    f"{base.extra['perplexity']:.4g} on {base.n} windows of {s['seq']} tokens ({ws.precision}); "
                    f"latency batch 8 {base.latency.median_ms:.1f} ms ({base.latency.method})")]
        for gran in ("head", "neuron"):
            moves, peaks, ppl = [], [], []
            for amount in (0.25, 0.5):
                t0 = time.perf_counter()
                with peak_memory(s["dev"]) as pk:
                    ws.set_plan(Plan(name, (Prune(criterion="l1", granularity=gran, sparsity=amount),)))
                    m = ws.metrics(latency=False)
                synchronize(torch.device(s["dev"]))
                moves.append(time.perf_counter() - t0)
                peaks.append(pk["bytes"])
                ppl.append(f"{amount:.0%}: perplexity {m.extra['perplexity']:.4g}, params {m.params / 1e6:.1f} M")
            first = moves[0]
            rows.append(row(f"gpu llama {gran} pruning, seconds per slider move", statistics.median(moves), "s",
                            "", True, f"moves {', '.join(f'{t:.1f}' for t in moves)} s (the first builds the "
                                      f"analysis: {first:.1f} s); {'; '.join(ppl)}; peak memory "
                                      f"{', '.join(_gib(p) for p in peaks)}"))
        ws.reset()
    return rows


def precision() -> list[dict]:
    """The base ResNet-50 evaluated and timed under fp32, bf16 and fp16 autocast: latency
    against fp32 (same batch, same process) and what each precision costs in fidelity."""
    s = _scale()
    name = _vision(s["resnet"], s)
    ws = Workspace(name, s["dev"], quick_size=s["n"], latency_batch=64, latency_time=0.5)
    rows, ref = [], None
    for p in ("fp32", "bf16", "fp16"):
        ws.set_precision(p)
        m = ws.base_metrics()
        ref = ref or m.latency.median_ms
        rows.append(row(f"gpu precision {s['resnet']} {p}", ref / m.latency.median_ms, "x vs fp32", "", True,
                        f"latency batch 64 {m.latency.median_ms:.2f} ms; agreement with fp32 base "
                        f"{m.agreement:.2%}, output cosine {m.output_cosine:.5f}; peak memory of the evaluation "
                        f"{_gib(m.peak_mem_bytes)}"))
    return rows


def run() -> list[dict]:
    if not DRY["dry"] and not torch.cuda.is_available():
        return [row("gpu benchmarks", None, "", "", True, "skipped: no CUDA device on this machine")]
    os.environ.setdefault("PRUNESCOPE_HOME", tempfile.mkdtemp(prefix="prunescope-gpu-"))
    rows = []
    for fn, args in ((live_loop, ("resnet50" if not DRY["dry"] else "resnet18",)), (live_loop, ("vit_b_16",)),
                     (structured_speedup, ()), (semi_structured, ()), (precision, ()), (llama, ())):
        t0 = time.perf_counter()
        n = len(rows)
        try:
            rows += fn(*args)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others (its reason is the row)
            import traceback

            traceback.print_exc()
            rows.append(row(f"gpu {fn.__name__} {' '.join(args)}", None, "", "", False,
                            f"failed: {exc.__class__.__name__}: {exc}"))
        for r in rows[n:]:  # as they come: a run cut short still shows what it measured
            print(f"  row: {json.dumps(r, default=str)}", file=sys.stderr, flush=True)
        print(f"  gpu {fn.__name__} {' '.join(args)}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    DRY["dry"] = "--dry-run" in sys.argv
    for r in run():
        print(r)
