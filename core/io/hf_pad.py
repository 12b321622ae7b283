"""Zero-padding for the ``hf`` export: removed units written back as zeros, up to shapes a config can say.

transformers 5.25 reads one width per model and derives BERT's and GPT-2's head size from
``hidden_size / num_attention_heads`` (``hf_shapes.py``), so a model with heads removed there,
or with head counts or MLP widths that differ per layer, cannot be written at its own shapes.
:func:`pad_model` writes the removed units back as zeros up to the narrowest shape the config
can say, and the padded model computes exactly what the pruned one does:

* **a padded head**: its query and key rows (and biases) are zero, so every score is 0 and the
  softmax is uniform; its value rows (and bias) are zero, so its output is 0; the output
  projection's columns for it are zero. BERT and GPT-2 go back to the config's head count;
  Llama to the most heads (and key/value groups) any layer keeps, each query head kept in its
  key/value group (``num_key_value_groups``);
* **a padded MLP neuron**: the rows (and bias) of the up / gate / fc layer are zero and the down
  layer's columns are zero, so it adds 0 (GELU(0) = 0, SiLU(0) * 0 = 0); every layer goes to the
  widest layer's width.

Units go back where they were when the plan's step reports say which went
(:func:`kept_positions`), else at the end (equally exact). Removed hidden width in BERT and GPT-2
is not padded: their LayerNorms average over the hidden width, so zeros there change the output.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from core.io.hf_shapes import Family, NotLoadableError, blocks_of, container_path, family_of

PAD_MARK = "written back as zeros"  # in the export's note, the sentence saying what was padded
NOTHING_PADDED = "nothing needed zero-padding"
# Steps after which the module paths of the step reports still name the same layers.
PATH_KEEPING_OPS = ("prune", "nm_sparsity", "reconstruct", "finetune", "heal")


@dataclass(frozen=True)
class Padding:
    """What :func:`pad_model` wrote back as zeros."""

    heads: int  # query heads written back, all layers together
    kv_heads: int  # key/value heads written back (Llama; equal to ``heads`` without grouped-query attention)
    neurons: int  # MLP neurons written back, all layers together
    zeros: int  # parameters added (all zero)
    where: str  # "where the pruned units were" | "at the end" | "partly where the pruned units were, partly at the end"

    def note(self, folder_params: int) -> str:
        """One line for a person: what was padded and the size cost, in parameters."""
        if not self.zeros:
            return NOTHING_PADDED
        heads = f"{self.heads} heads" + (f" ({self.kv_heads} key/value heads)" if self.kv_heads != self.heads else "")
        return (f"{heads} and {self.neurons} MLP neurons {PAD_MARK} ({self.where}) so "
                f"transformers can load it: the folder holds {folder_params:,} parameters, the pruned model "
                f"{folder_params - self.zeros:,}")


def kept_positions(plan, reports: list | None, prefix: str = "") -> dict[str, list[int]]:
    """For each unit group the plan's structured prune steps removed units from, the original
    indices of the units kept, composed over the steps; paths relative to ``prefix`` (e.g. "hf.").
    A step that moves blocks (cut, paste, ...) ends what the reports can say: ``{}`` from there."""
    kept: dict[str, list[int] | None] = {}
    for step, rep in zip(plan.steps, reports or []):
        if step.op not in PATH_KEEPING_OPS:
            kept = {}
            continue
        for g, gone in (rep.removed if step.op == "prune" else {}).items():
            total = rep.units.get(g, (0, 0))[1]
            prev = kept.get(g, list(range(total)))
            gone_set = set(gone)
            kept[g] = None if prev is None or len(prev) != total else [o for k, o in enumerate(prev)
                                                                         if k not in gone_set]
    return {g[len(prefix):]: v for g, v in kept.items() if v is not None and g.startswith(prefix)}


def _rows(lin: nn.Linear, slots: torch.Tensor, n: int) -> int:
    """Give ``lin`` ``n`` output rows, its own at ``slots``, zeros elsewhere (a copy). Returns the zeros added."""
    w = lin.weight.new_zeros(n, lin.in_features)
    w[slots] = lin.weight.detach()
    added = w.numel() - lin.weight.numel()
    lin.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        b = lin.bias.new_zeros(n)
        b[slots] = lin.bias.detach()
        added += n - lin.bias.numel()
        lin.bias = nn.Parameter(b, requires_grad=lin.bias.requires_grad)
    lin.out_features = n
    return added


def _cols(lin: nn.Linear, slots: torch.Tensor, n: int) -> int:
    """Give ``lin`` ``n`` input columns, its own at ``slots``, zeros elsewhere (a copy). Returns the zeros added."""
    w = lin.weight.new_zeros(lin.out_features, n)
    w[:, slots] = lin.weight.detach()
    added = w.numel() - lin.weight.numel()
    lin.weight = nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    lin.in_features = n
    return added


def _slots(n: int, target: int, positions: list[int] | None) -> tuple[torch.Tensor, bool]:
    """Where ``n`` units go among ``target``: their original positions when known and they fit, else the first ``n``."""
    if positions is not None and len(positions) == n and (not positions or max(positions) < target):
        return torch.tensor(positions, dtype=torch.long), True
    return torch.arange(n), False


def _expand(heads: torch.Tensor, hd: int) -> torch.Tensor:
    """Row indices of heads (head h: rows h * hd ... h * hd + hd - 1)."""
    return (heads[:, None] * hd + torch.arange(hd)).reshape(-1)


class _Tally:
    def __init__(self):
        self.heads = self.kv = self.neurons = self.zeros = 0
        self.placed = set()

    def where(self) -> str:
        if self.placed == {True}:
            return "where the pruned units were"
        return "at the end" if self.placed == {False} else "partly where the pruned units were, partly at the end"


def _mlp(fam: str, b: nn.Module) -> tuple[list[nn.Linear], nn.Linear]:
    if fam == "llama":
        return [b.mlp.gate_proj, b.mlp.up_proj], b.mlp.down_proj
    if fam == "bert":
        return [b.intermediate.dense], b.output.dense
    return [b.mlp.c_fc], b.mlp.c_proj


def _pad_mlp(fam: str, blocks: list[tuple[str, nn.Module]], pos: dict, t: _Tally) -> None:
    width = max(_mlp(fam, b)[0][0].out_features for _, b in blocks)
    for path, b in blocks:
        ups, down = _mlp(fam, b)
        n = ups[0].out_features
        if n == width:
            continue
        slots, placed = _slots(n, width, pos.get(f"{path}.{FAMILY_MLP[fam]}"))
        t.placed.add(placed)
        t.neurons += width - n
        t.zeros += sum(_rows(u, slots, width) for u in ups) + _cols(down, slots, width)


FAMILY_MLP = {"llama": "mlp.gate_proj", "bert": "intermediate.dense", "gpt2": "mlp.c_fc"}


def _pad_fixed_heads(fam: Family, cfg, blocks: list[tuple[str, nn.Module]], pos: dict, t: _Tally) -> None:
    """BERT and GPT-2: heads back to the config's count (the head size is hidden / heads)."""
    heads = cfg.num_attention_heads
    hd = cfg.hidden_size // heads
    for path, b in blocks:
        a = b.get_submodule(fam.attention)
        prods = [a.self.query, a.self.key, a.self.value] if fam.name == "bert" else [a.c_attn]
        out = a.output.dense if fam.name == "bert" else a.c_proj
        n = out.in_features // hd
        if n == heads:
            continue
        slots, placed = _slots(n, heads, pos.get(f"{path}.{fam.attention}"))
        t.placed.add(placed)
        t.heads, t.kv = t.heads + heads - n, t.kv + heads - n
        rows = _expand(slots, hd)
        if fam.name == "bert":
            t.zeros += sum(_rows(p, rows, heads * hd) for p in prods)
            a.self.num_attention_heads, a.self.all_head_size = heads, heads * hd
        else:  # q, k and v stacked in c_attn: each section padded alike
            t.zeros += _rows(a.c_attn, torch.cat([rows + s * heads * hd for s in range(3)]), 3 * heads * hd)
            a.num_heads, a.split_size = heads, heads * hd
        t.zeros += _cols(out, rows, heads * hd)


def _pad_llama_heads(blocks: list[tuple[str, nn.Module]], pos: dict, t: _Tally) -> None:
    """Llama: the most key/value groups any layer keeps (more where needed so that the hidden width is a
    multiple of the head count), each with the most query heads any group has; query head i of a layer
    stays in its key/value group i // num_key_value_groups."""
    att = [(path, b.self_attn) for path, b in blocks]
    hd = att[0][1].head_dim  # kept by head pruning (the forward reshapes to (..., -1, head_dim))
    shape = [(a.q_proj.out_features // hd, a.k_proj.out_features // hd, a.num_key_value_groups) for _, a in att]
    if any(h != kv * rep for h, kv, rep in shape):
        raise NotLoadableError([f"attention heads per layer {[h for h, _, _ in shape]} do not match key/value heads "
                                f"{[kv for _, kv, _ in shape]} times num_key_value_groups"])
    groups, rep = max(kv for _, kv, _ in shape), max(r for _, _, r in shape)
    hidden = blocks[0][1].self_attn.o_proj.out_features
    while hidden % (groups * rep) and groups * rep < hidden:  # transformers: hidden_size a multiple of the heads
        groups += 1
    if hidden % (groups * rep):
        raise NotLoadableError([f"no head count from {groups * rep} up divides the hidden width {hidden} "
                                "(transformers asks hidden_size to be a multiple of num_attention_heads)"])
    for (path, a), (h, kv, r) in zip(att, shape):
        if (kv, r) == (groups, rep):
            continue
        gslots, placed = _slots(kv, groups, pos.get(f"{path}.self_attn") if rep == 1 else None)
        t.placed.add(placed)
        qslots = (gslots[:, None] * rep + torch.arange(r)).reshape(-1)  # query head g * r + j -> slot g * rep + j
        t.heads, t.kv = t.heads + groups * rep - h, t.kv + groups - kv
        t.zeros += _rows(a.q_proj, _expand(qslots, hd), groups * rep * hd) + _cols(a.o_proj, _expand(qslots, hd),
                                                                                    groups * rep * hd)
        t.zeros += sum(_rows(p, _expand(gslots, hd), groups * hd) for p in (a.k_proj, a.v_proj))
        a.num_key_value_groups = rep


def pad_model(hf: nn.Module, positions: dict[str, list[int]] | None = None) -> tuple[nn.Module, Padding]:
    """A copy of ``hf`` (a transformers model) with removed heads and MLP neurons written back as
    zeros up to shapes its config can say; it computes exactly what ``hf`` does.

    Args:
        hf: the transformers model (not changed; the copy shares every tensor it does not pad).
        positions: :func:`kept_positions` (paths relative to ``hf``): where kept units were.

    Returns:
        ``(padded copy, what was padded)``.

    Raises:
        NotLoadableError: a change zeros cannot undo (removed hidden width in BERT or GPT-2), or a
            model type the export does not know.
    """
    fam = family_of(hf)
    cfg = hf.config
    hidden = int(hf.get_input_embeddings().weight.shape[1])
    if fam.name != "llama" and hidden != cfg.hidden_size:
        raise NotLoadableError([f"the hidden width is {hidden}, the config's {cfg.hidden_size}; zero-padding cannot "
                                f"restore it ({cfg.model_type}'s LayerNorms average over the hidden width, so zeros "
                                "there change the outputs): remove neurons from the MLP layers only"])
    blocks_of(hf, fam)  # a fitted bridge or a block of another kind: refused as without padding
    memo = {id(x): x for x in [*hf.parameters(), *hf.buffers()]}  # share tensors: only modules are copied
    out = copy.deepcopy(hf, memo)
    cont = container_path(out, fam)
    blocks = [(f"{cont}.{i}", m) for i, m in enumerate(out.get_submodule(cont)) if type(m).__name__ != "Bridge"]
    t = _Tally()
    with torch.no_grad():
        if fam.name == "llama":
            _pad_llama_heads(blocks, positions or {}, t)
        else:
            _pad_fixed_heads(fam, cfg, blocks, positions or {}, t)
        _pad_mlp(fam.name, blocks, positions or {}, t)
    return out, Padding(t.heads, t.kv, t.neurons, t.zeros, t.where())


__all__ = ["Padding", "pad_model", "kept_positions", "PATH_KEEPING_OPS", "PAD_MARK", "NOTHING_PADDED"]
