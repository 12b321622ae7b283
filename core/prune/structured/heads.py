"""Attention heads: where an attention module keeps them, and what to update when some go.

A head is ``head_dim`` rows of each layer producing queries, keys and values, and the
matching ``head_dim`` input columns of the layer reading the heads' outputs. Four layouts
are known (read from the module's attributes, never from its class name):

==========  ===================================================  ==================================
layout      layers                                               head count kept in
==========  ===================================================  ==================================
``timm``    ``qkv`` (q, k, v stacked), ``proj``                  ``num_heads``
``gpt2``    ``c_attn`` (q, k, v stacked), ``c_proj``              ``num_heads``, ``split_size``
            (transformers' GPT-2 after ``Conv1D`` became Linear)
``bert``    ``self.query/key/value``, ``output.dense``           ``self.num_attention_heads``,
            (BertAttention and its kin: RoBERTa, MiniLM, ...)    ``self.all_head_size``
``llama``   ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``,        none: the forward reshapes to
            ``head_dim`` (Llama, Mistral, Qwen2, ...)             ``(..., -1, head_dim)``
==========  ===================================================  ==================================

A module whose keys and values have fewer heads than its queries (grouped-query
attention, Llama layout) is recognised with ``kv_heads < num_heads``. Its ``n_rep =
num_heads // kv_heads`` query heads ``j * n_rep .. (j + 1) * n_rep - 1`` share key/value head
``j``. Torch-Pruning cannot follow ``repeat_kv`` (its indices cycle), so such a module's heads
are pruned here, by hand (:func:`prune_gqa`), in two kinds of unit (``graph.unit_groups``):

* a *key/value group* ``j``: key/value head ``j`` (``head_dim`` rows of ``k_proj`` and
  ``v_proj``) with its ``n_rep`` query heads (rows of ``q_proj``, input columns of
  ``o_proj``); removing groups keeps ``n_rep``;
* a *query position* ``r``: query head ``r`` of every group (uniform, so every key/value head
  keeps the same number of query heads); ``n_rep`` and the module's
  ``num_key_value_groups`` (read by transformers' eager and sdpa attention) shrink.

Either way ``k_proj.out_features // head_dim`` stays the module's key/value head count and
``q_proj.out_features // head_dim`` its query head count.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Heads:
    """Where one attention module keeps its heads."""

    layout: str  # "timm" | "gpt2" | "bert" | "llama"
    producers: tuple[nn.Linear, ...]  # layers whose output rows hold the heads: (qkv,) or (q, k, v)
    out: nn.Linear  # the layer reading the heads' outputs through its input columns
    num_heads: int  # query heads
    kv_heads: int  # key / value heads (== num_heads unless grouped-query attention)
    head_dim: int  # channels per head


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _stacked(m: nn.Module, qkv: str, proj: str, layout: str) -> Heads | None:
    """q, k and v stacked in one Linear (timm ``qkv`` / ``proj``; GPT-2 ``c_attn`` / ``c_proj``)."""
    a, b, h = getattr(m, qkv, None), getattr(m, proj, None), getattr(m, "num_heads", None)
    if not (isinstance(a, nn.Linear) and isinstance(b, nn.Linear) and _int(h)
            and b.in_features % h == 0 and a.out_features == 3 * b.in_features):
        return None
    if layout == "gpt2" and (getattr(m, "is_cross_attention", False) or getattr(m, "split_size", None)
                             != b.in_features):
        return None
    return Heads(layout, (a,), b, h, h, b.in_features // h)


def _bert(m: nn.Module) -> Heads | None:
    s, o = getattr(m, "self", None), getattr(getattr(m, "output", None), "dense", None)
    if s is None or not isinstance(o, nn.Linear):
        return None
    q, k, v = (getattr(s, n, None) for n in ("query", "key", "value"))
    h, hd = getattr(s, "num_attention_heads", None), getattr(s, "attention_head_size", None)
    if not (all(isinstance(x, nn.Linear) for x in (q, k, v)) and _int(h) and _int(hd)
            and q.out_features == k.out_features == v.out_features == o.in_features == h * hd):
        return None
    return Heads("bert", (q, k, v), o, h, h, hd)


def _llama(m: nn.Module) -> Heads | None:
    q, k, v, o = (getattr(m, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    hd = getattr(m, "head_dim", None)
    if not (all(isinstance(x, nn.Linear) for x in (q, k, v, o)) and _int(hd)):
        return None
    if q.out_features % hd or k.out_features % hd or k.out_features != v.out_features \
            or o.in_features != q.out_features:
        return None
    h, kv = q.out_features // hd, k.out_features // hd
    if h % kv:
        return None
    return Heads("llama", (q, k, v), o, h, kv, hd)


def find_heads(m: nn.Module) -> Heads | None:
    """The heads of attention module ``m``, or None when ``m`` is not one of the known layouts."""
    return _stacked(m, "qkv", "proj", "timm") or _stacked(m, "c_attn", "c_proj", "gpt2") or _bert(m) \
        or _llama(m)


def stacked_rows(h: Heads, rows: int) -> list[tuple[int, int]]:
    """For q, k and v stacked in one layer: the (offset, section) pairs of that layer's rows a
    head group still lacks when Torch-Pruning followed only the query section back through the
    split (it does so for GPT-2's ``c_attn(x).split(...)``): ``[(width, 1), (2 * width, 2)]`` when
    only ``rows`` = ``width`` rows are in the group, else ``[]``."""
    width = h.num_heads * h.head_dim
    return [(width, 1), (2 * width, 2)] if h.layout == "gpt2" and rows == width else []


def _rows(lin: nn.Linear, idx: torch.Tensor, dim: int) -> None:
    """Keep ``idx`` of ``lin``'s output rows (``dim`` 0, with the bias) or input columns (``dim`` 1)."""
    idx = idx.to(lin.weight.device)
    lin.weight = nn.Parameter(lin.weight.data.index_select(dim, idx).clone(), requires_grad=lin.weight.requires_grad)
    if dim == 0:
        if lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias.data[idx].clone(), requires_grad=lin.bias.requires_grad)
        lin.out_features = len(idx)
    else:
        lin.in_features = len(idx)


def gqa_query_heads(h: Heads, groups: Sequence[int] = (), positions: Sequence[int] = ()) -> list[int]:
    """The query heads of grouped-query module ``h`` kept when key/value ``groups`` and query
    ``positions`` (within every group) go, in order."""
    n_rep = h.num_heads // h.kv_heads
    return [j * n_rep + r for j in range(h.kv_heads) if j not in set(groups)
            for r in range(n_rep) if r not in set(positions)]


def prune_gqa(m: nn.Module, groups: Sequence[int] = (), positions: Sequence[int] = ()) -> None:
    """Remove key/value ``groups`` and query ``positions`` (the same query heads of every group)
    from grouped-query attention module ``m`` (Llama layout), in place.

    Side effects: rows of ``q_proj``, ``k_proj``, ``v_proj`` (weights and biases) and input
    columns of ``o_proj`` replaced by the kept ones; ``m.num_key_value_groups`` set to the query
    heads each key/value head keeps. ``head_dim`` and the shared ``config`` are left as they are.

    Raises:
        ValueError: ``m`` is not a grouped-query module, or every group or position would go.
    """
    h = find_heads(m)
    if h is None or h.layout != "llama" or h.kv_heads == h.num_heads:
        raise ValueError(f"not a grouped-query attention module: {type(m).__name__}")
    n_rep, hd = h.num_heads // h.kv_heads, h.head_dim
    kv = [j for j in range(h.kv_heads) if j not in set(groups)]
    if not kv or len(set(positions)) >= n_rep:
        raise ValueError(f"removing key/value groups {list(groups)} and query positions {list(positions)} "
                         f"would leave no head")
    q = gqa_query_heads(h, groups, positions)

    def chans(heads: list[int]) -> torch.Tensor:
        return torch.tensor([i * hd + c for i in heads for c in range(hd)], dtype=torch.long)

    q_proj, k_proj, v_proj = h.producers
    _rows(q_proj, chans(q), 0)
    _rows(k_proj, chans(kv), 0)
    _rows(v_proj, chans(kv), 0)
    _rows(h.out, chans(q), 1)
    m.num_key_value_groups = n_rep - len(set(positions))


def remove_heads(m: nn.Module, heads: Sequence[int]) -> None:
    """Record on attention module ``m`` that ``heads`` (indices) were removed, after its layers
    were pruned by the head's group, so its forward reshapes to the heads that are left.

    Side effects: timm ``num_heads``; GPT-2 ``num_heads`` and ``split_size``, and the key and
    value rows of those heads removed from ``c_attn`` when the group pruned only its query
    rows (see :func:`stacked_rows`); BERT ``self.num_attention_heads`` and ``self.all_head_size``;
    Llama-style modules keep no count (their shared ``config`` is left as it is, since layers
    may now differ).
    """
    n = len(heads)
    # Read by attribute, not by find_heads: the layers are already smaller than the counts.
    if isinstance(getattr(m, "qkv", None), nn.Linear):
        m.num_heads -= n
    elif isinstance(getattr(m, "c_attn", None), nn.Linear):
        hd, old = m.head_dim, m.num_heads * m.head_dim
        new = old - n * hd
        a = m.c_attn
        if a.out_features == new + 2 * old:  # only the query rows went: remove those heads' key and value rows
            gone = {h * hd + j for h in heads for j in range(hd)}
            keep = list(range(new)) + [new + sec * old + r for sec in (0, 1) for r in range(old) if r not in gone]
            idx = torch.tensor(keep, dtype=torch.long, device=a.weight.device)
            a.weight = nn.Parameter(a.weight.data[idx].clone(), requires_grad=a.weight.requires_grad)
            if a.bias is not None:
                a.bias = nn.Parameter(a.bias.data[idx].clone(), requires_grad=a.bias.requires_grad)
            a.out_features = len(keep)
        assert a.out_features == 3 * new, (a.out_features, new)
        m.num_heads -= n
        m.split_size = new
    elif hasattr(getattr(m, "self", None), "num_attention_heads"):
        s = m.self
        s.num_attention_heads -= n
        s.all_head_size = s.num_attention_heads * s.attention_head_size


__all__ = ["Heads", "find_heads", "gqa_query_heads", "prune_gqa", "remove_heads", "stacked_rows"]
