"""What the graph diff reads from one model: each module's own parameters, zeros, widths and
MACs, the order a forward runs the modules in, and the data flow between leaf modules (from a
``torch.fx`` trace where the model traces)."""
from __future__ import annotations

import torch
from torch import nn

# widths a module states itself: the dimensions a structured prune narrows
_WIDTH_ATTRS = ("in_channels", "out_channels", "in_features", "out_features", "num_features", "num_embeddings",
                "embedding_dim", "embed_dim", "num_heads", "num_attention_heads", "num_key_value_heads", "head_dim",
                "hidden_size", "all_head_size", "nf", "nx")

# what torch.fx raises on a model it cannot trace (data-dependent control flow, unsupported
# calls, modules with their own __call__): the model's own reasons, not a bug of ours
FX_ERRORS = (torch.fx.proxy.TraceError, TypeError, NotImplementedError, AttributeError, RuntimeError, ValueError,
             KeyError, IndexError, AssertionError)


def is_leaf(m: nn.Module) -> bool:
    return not any(True for _ in m.children())


def own_params(m: nn.Module) -> tuple[int, int]:
    """``(parameters, zero parameters)`` of the module itself (not its children)."""
    n = z = 0
    for p in m.parameters(recurse=False):
        n += p.numel()
        z += int((p.detach() == 0).sum())
    return n, z


def shape_of(m: nn.Module) -> dict[str, int]:
    """The module's widths per dimension: the integer width attributes it states
    (``in_channels``, ``out_features``, ...), LayerNorm's ``normalized_shape`` (its last
    axis), and otherwise each dimension of each own parameter (``weight[0]``, ...)."""
    out = {a: int(v) for a in _WIDTH_ATTRS if isinstance(v := getattr(m, a, None), int) and not isinstance(v, bool)}
    ns = getattr(m, "normalized_shape", None)
    if isinstance(ns, (tuple, list)) and ns:
        out["normalized_shape"] = int(ns[-1])
    if not out:
        for pname, p in m.named_parameters(recurse=False):
            for i, d in enumerate(p.shape):
                out[f"{pname}[{i}]"] = int(d)
    in_shape, out_shape = getattr(m, "in_shape", None), getattr(m, "out_shape", None)
    if isinstance(in_shape, tuple) and isinstance(out_shape, tuple) and in_shape and out_shape:  # a bridge
        out.setdefault("in_channels", int(in_shape[0]))
        out.setdefault("out_channels", int(out_shape[0]))
    return out


def own_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs of one example per module path, of the module itself: FlopCounterMode counts a
    module with everything it calls, so a container's count less its children's is what it
    computes itself (an attention module's score and weighting products, for one)."""
    from core.metrics.cost import layer_macs

    total = layer_macs(model, example)
    out = {}
    for name, m in model.named_modules():
        if not name:
            continue
        kids = sum(total.get(f"{name}.{c}", 0) for c, _ in m.named_children())
        out[name] = max(0, total.get(name, 0) - kids)
    return out


def _recorder(seen: dict, name: str):
    def hook(_m, _args):
        seen.setdefault(name, len(seen))
    return hook


def exec_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Every module path (containers too) in the order a forward first enters it; modules
    the forward never calls are left out. The model is only read."""
    seen: dict[str, int] = {}
    handles = [m.register_forward_pre_hook(_recorder(seen, n)) for n, m in model.named_modules() if n]
    try:
        with torch.inference_mode():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return sorted(seen, key=seen.get)


def fx_edges(model: nn.Module) -> list[tuple[str, str]] | None:
    """Data flow between the modules ``torch.fx`` keeps as calls (torch.nn's own modules):
    ``(producer, consumer)`` whenever the consumer reads a value computed from the producer's
    output through functions only (adds, reshapes, concatenations). None when the model does
    not trace."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except FX_ERRORS:
        return None
    sources: dict[torch.fx.Node, frozenset[str]] = {}
    edges: dict[tuple[str, str], None] = {}
    for node in gm.graph.nodes:
        ups = frozenset().union(*(sources.get(a, frozenset()) for a in node.all_input_nodes))
        if node.op == "call_module":
            for u in sorted(ups):
                edges[(u, str(node.target))] = None
            sources[node] = frozenset({str(node.target)})
        else:
            sources[node] = ups
    return list(edges)


def merged_order(base_order: list[str], cur_order: list[str]) -> dict[str, int]:
    """One position per module path for a drawing of both models: the current model's
    forward order, with each module only the base runs placed after the base module that ran
    just before it (and after modules placed there already)."""
    seq, current = list(cur_order), set(cur_order)
    anchor, run = None, 0
    for n in base_order:
        if n in current:
            anchor, run = n, 0
            continue
        seq.insert((seq.index(anchor) + 1 if anchor is not None else 0) + run, n)
        run += 1
    return {n: i for i, n in enumerate(seq)}


__all__ = ["FX_ERRORS", "is_leaf", "own_params", "shape_of", "own_macs", "exec_order", "fx_edges", "merged_order"]
