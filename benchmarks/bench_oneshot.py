"""One-shot pruning of a small causal language model: magnitude, Wanda and the SparseGPT-style
reconstruction (``core/prune/reconstruct.py``) at 50% of each Linear layer's weights and as a
2:4 pattern, judged by perplexity on held-out text, with the seconds each step took.

The model is a tiny Llama built from a config (nothing downloaded) and trained here for a few
seconds on text made here: sentences of a small grammar, read one character at a time. Every
method prunes the same layers (every Linear layer but the output layer) by the same fraction.
"""
from __future__ import annotations

import math
import random
import time

import torch

from benchmarks.common import row

SEQ, TRAIN_STEPS, BATCH = 48, 150, 16
NOUNS = "cat dog bird fox cow hen pig owl bee ant rat yak elk emu".split()
VERBS = "sees likes chases finds hears feeds follows watches".split()
ADJS = "red big old small quick lazy happy green".split()


def text(n: int, seed: int) -> str:
    """``n`` sentences of the grammar: "the <adj> <noun> <verb> the <noun> ." and its variants."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = r.choice(NOUNS), r.choice(NOUNS)
        adj = f"{r.choice(ADJS)} " if r.random() < 0.5 else ""
        tail = f" and the {r.choice(NOUNS)}" if r.random() < 0.3 else ""
        out.append(f"the {adj}{a} {r.choice(VERBS)} the {b}{tail} .")
    return " ".join(out)


def windows(ids: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random windows of SEQ + 1 characters."""
    start = torch.randint(0, len(ids) - SEQ - 1, (n,), generator=g)
    return torch.stack([ids[s:s + SEQ + 1] for s in start.tolist()])


def tiny_llama(vocab: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.sources.hf.load import HFModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ + 1)
    return HFModel(LlamaForCausalLM(cfg), "logits", None)  # token ids (N, T) -> logits (N, T, vocab)


def train(model: torch.nn.Module, ids: torch.Tensor, g: torch.Generator) -> float:
    """A few hundred AdamW steps of next-character prediction; returns the seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    t0 = time.perf_counter()
    for _ in range(TRAIN_STEPS):
        w = windows(ids, BATCH, g)
        loss = torch.nn.functional.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def perplexity(model: torch.nn.Module, held: torch.Tensor) -> float:
    """exp(mean next-character cross-entropy) over every position of the held-out windows."""
    with torch.inference_mode():
        logits = model(held[:, :-1]).flatten(0, 1)
        return math.exp(float(torch.nn.functional.cross_entropy(logits, held[:, 1:].flatten())))


def steps(model: torch.nn.Module) -> dict[str, dict[str, object]]:
    """Each method's step at 50% (unstructured) and as 2:4 (None: no such step)."""
    from core.prune import LayerOverride, NMSparsity, Prune, Reconstruct
    from core.prune.nm import eligible_layers

    per_layer = tuple(LayerOverride(n, sparsity=0.5) for n in eligible_layers(model, 1))
    return {"50%": {"magnitude": Prune(criterion="l1", layers=per_layer),
                    "wanda": Prune(criterion="wanda", layers=per_layer),
                    "reconstruct": Reconstruct(sparsity=0.5)},
            "2:4": {"magnitude": NMSparsity(2, 4), "wanda": None, "reconstruct": Reconstruct(pattern="2:4")}}


def run() -> list[dict]:
    from core.plan import ApplyContext

    t_all = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    chars = sorted(set(text(200, 0)))
    code = {c: i for i, c in enumerate(chars)}
    train_ids = torch.tensor([code[c] for c in text(4000, 1)])
    held = windows(torch.tensor([code[c] for c in text(600, 2)]), 64, g)
    model = tiny_llama(len(chars))
    seconds = train(model, train_ids, g)
    model.eval()
    dense = perplexity(model, held)
    ctx = ApplyContext("bench_oneshot")
    ctx.use_calibration(0, (windows(train_ids, 64, g)[:, :-1], torch.zeros(64, dtype=torch.long)))
    rows = [row("one-shot: dense tiny Llama, held-out perplexity", round(dense, 3), "ppl", "report", True,
                f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(chars)} characters, trained "
                f"{TRAIN_STEPS} steps of {BATCH}x{SEQ} in {seconds:.1f} s; 64 held-out windows of {SEQ}")]
    for amount, methods in steps(model).items():
        got = {}
        for method, step in methods.items():
            name = f"one-shot {amount}: {method}, held-out perplexity"
            if step is None:
                rows.append(row(name, None, "ppl", "report", True, "no 2:4 Wanda step (the N:M step scores by |w|)"))
                continue
            t0 = time.perf_counter()
            pruned, report = step.build(model, ctx)
            took = time.perf_counter() - t0
            got[method] = perplexity(pruned, held)
            better = method != "reconstruct" or got[method] < got["magnitude"]
            rows.append(row(name, round(got[method], 3), "ppl", "report" if method != "reconstruct" else
                            "< magnitude's", better,
                            f"{report.pruned:,} of {report.total:,} weights of {len(report.units)} Linear layers zero; "
                            f"built in {took:.2f} s on 64 calibration windows of {SEQ}; dense {dense:.3f}"))
    total = time.perf_counter() - t_all
    rows.append(row("one-shot benchmark: wall time (train + 5 steps + evaluation)", round(total, 1), "s", "<= 60",
                    total <= 60, f"{torch.get_num_threads()} torch threads"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
