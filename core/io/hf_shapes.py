"""What a transformers config can say about a pruned model, read from its layers' weights.

A pruned or cut :class:`~core.sources.hf.HFModel` is written back as a folder that
transformers loads on its own only when its config can describe every shape. transformers
5.25 reads one width per model, not per layer, and has no ``pruned_heads`` any more (its
BERT and GPT-2 attention derive the head size as ``hidden_size / num_attention_heads``), so:

* **Llama family** (llama, mistral, qwen2, qwen3): ``num_attention_heads``,
  ``num_key_value_heads`` (read as ``k_proj.out_features // head_dim``), ``intermediate_size``,
  ``hidden_size`` and ``num_hidden_layers``, each one value for all layers (``head_dim`` kept);
* **BERT family** (bert, roberta) and **GPT-2**: ``intermediate_size`` / ``n_inner`` (one
  value for all layers) and the number of layers; removed heads or hidden channels are not
  representable (the head size would change).

Shapes are read from the weights, never from counts kept on modules (they may be stale).
:func:`loadable_plan` turns a plan into the nearest one a config can say: uniform amounts
across layers, widths kept in multiples of 8, cut seams without fitted bridges.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from core.errors import ModelError, first_line
from core.plan import Plan

LOADABLE_ROUND = 8  # MLP widths of a loadable plan are kept in multiples of this (when the base's width is)


class NotLoadableError(ModelError):
    """The model's shapes cannot be said by its architecture's config; ``reasons`` lists why."""

    def __init__(self, reasons: list[str]):
        super().__init__("not loadable by transformers alone: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Family:
    """How one architecture family keeps its blocks and which config fields it reads."""

    name: str  # "llama" | "bert" | "gpt2"
    blocks: str  # the block list under the base model
    attention: str  # the attention module in a block
    mlp: str  # the layer producing the MLP width in a block
    layers_field: str  # config field of the number of blocks


FAMILIES = {
    "llama": Family("llama", "layers", "self_attn", "mlp.gate_proj", "num_hidden_layers"),
    "bert": Family("bert", "encoder.layer", "attention", "intermediate.dense", "num_hidden_layers"),
    "gpt2": Family("gpt2", "h", "attn", "mlp.c_fc", "n_layer"),
}
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "bert": "bert",
               "roberta": "bert", "gpt2": "gpt2"}


def family_of(hf: nn.Module) -> Family:
    """The family of a transformers model.

    Raises:
        NotLoadableError: a model type this export does not know.
    """
    mt = getattr(getattr(hf, "config", None), "model_type", None)
    if mt not in MODEL_TYPES:
        raise NotLoadableError([f"model type {mt!r} is not one the hf export knows ({', '.join(MODEL_TYPES)})"])
    return FAMILIES[MODEL_TYPES[mt]]


def container_path(hf: nn.Module, fam: Family) -> str:
    """The path of the block list inside ``hf`` (e.g. "model.layers")."""
    base = next(n for n, m in hf.named_modules() if m is hf.base_model)
    return f"{base}.{fam.blocks}" if base else fam.blocks


def blocks_of(hf: nn.Module, fam: Family) -> list[nn.Module]:
    """The blocks of ``hf`` in order, without the identity bridges a cut leaves (no weights, no effect).

    Raises:
        NotLoadableError: a fitted bridge or adapter (a module the config has no field for).
    """
    out, bad = [], []
    block_type = None
    for i, m in enumerate(hf.get_submodule(container_path(hf, fam))):
        if type(m).__name__ == "Bridge":
            if getattr(m, "is_identity", False):
                continue
            bad.append(f"position {i} holds a fitted bridge ({m.extra_repr()}): {fam.name} configs have no "
                       "field for a module between blocks")
            continue
        block_type = block_type or type(m)
        if type(m) is not block_type:
            bad.append(f"position {i} holds a {type(m).__name__}, not a {block_type.__name__}")
        out.append(m)
    if bad:
        raise NotLoadableError(bad)
    return out


def _one(values: list[int], what: str, field: str, reasons: list[str]) -> int:
    if len(set(values)) > 1:
        reasons.append(f"{what} differs across layers ({values}); the config holds one {field} for all layers")
    return values[0]


def _llama(hf, cfg, blocks, reasons: list[str]) -> dict:
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    att = [b.self_attn for b in blocks]
    return {"hidden_size": int(hf.get_input_embeddings().weight.shape[1]), "head_dim": hd,
            "num_attention_heads": _one([a.q_proj.out_features // hd for a in att], "the number of attention heads",
                                        "num_attention_heads", reasons),
            "num_key_value_heads": _one([a.k_proj.out_features // hd for a in att], "the number of key/value heads",
                                        "num_key_value_heads", reasons),
            "intermediate_size": _one([b.mlp.gate_proj.out_features for b in blocks], "the MLP width",
                                      "intermediate_size", reasons)}


def _fixed_attention(hf, cfg, widths: list[int], hidden: int, reasons: list[str]) -> None:
    """BERT and GPT-2: no removed heads, no removed hidden channels (head size = hidden / heads)."""
    if hidden != cfg.hidden_size:
        reasons.append(f"the hidden width is {hidden}, the config's {cfg.hidden_size}: {cfg.model_type}'s attention "
                       "derives its head size from hidden_size / num_attention_heads, so the hidden width cannot "
                       "change")
    if any(w != cfg.hidden_size for w in widths):
        reasons.append(f"attention widths per layer are {widths} (heads removed); transformers "
                       f"{_tf_version()} has no pruned_heads and derives {cfg.model_type}'s head size from "
                       "hidden_size / num_attention_heads, so removed heads are not representable")


def _bert(hf, cfg, blocks, reasons: list[str]) -> dict:
    _fixed_attention(hf, cfg, [b.attention.self.query.out_features for b in blocks],
                     int(hf.get_input_embeddings().weight.shape[1]), reasons)
    return {"intermediate_size": _one([b.intermediate.dense.out_features for b in blocks], "the MLP width",
                                      "intermediate_size", reasons)}


def _gpt2(hf, cfg, blocks, reasons: list[str]) -> dict:
    _fixed_attention(hf, cfg, [b.attn.c_attn.out_features // 3 for b in blocks],
                     int(hf.get_input_embeddings().weight.shape[1]), reasons)
    return {"n_inner": _one([b.mlp.c_fc.out_features for b in blocks], "the MLP width", "n_inner", reasons)}


def _tf_version() -> str:
    from core.sources.hf.load import transformers

    return transformers().__version__


def loadable_config(hf: nn.Module):
    """A copy of ``hf``'s config that says the shapes of ``hf``'s weights, and its blocks.

    Returns:
        ``(config, blocks)``: the config (``architectures`` naming ``hf``'s class) and the
        blocks in order (identity bridges left out).

    Raises:
        NotLoadableError: every shape the config cannot say, with the reason.
    """
    fam = family_of(hf)
    blocks = blocks_of(hf, fam)
    cfg = copy.deepcopy(hf.config)
    reasons: list[str] = []
    fields = {"llama": _llama, "bert": _bert, "gpt2": _gpt2}[fam.name](hf, cfg, blocks, reasons)
    fields[fam.layers_field] = len(blocks)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list) and types:
        if len(set(types)) > 1 and len(blocks) != len(types):
            reasons.append(f"the config's layer_types differ per layer ({sorted(set(types))}) and the block count "
                           "changed")
        fields["layer_types"] = [types[0]] * len(blocks) if len(set(types)) == 1 else types
    if reasons:
        raise NotLoadableError(reasons)
    try:
        for k, v in fields.items():
            setattr(cfg, k, v)
        cfg.architectures = [type(hf).__name__]
        if callable(getattr(cfg, "validate", None)):
            cfg.validate()  # transformers' own rules, e.g. hidden_size a multiple of num_attention_heads
    except _config_errors() as exc:
        raise NotLoadableError([f"transformers refuses the config ({first_line(exc.__cause__ or exc)})"]) from exc
    return cfg, blocks


def _config_errors() -> tuple[type[BaseException], ...]:
    """What a transformers config raises for values it refuses."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # an older hub: plain ValueError
        return (ValueError,)
    return (ValueError, StrictDataclassError)


def _granularity_layers(fam: Family, container: str, blocks: list[tuple[int, nn.Module]], granularity: str):
    """The layers whose units a loadable step may remove (one per block), or None: none may."""
    if granularity == "neuron":
        return [f"{container}.{i}.{fam.mlp}" for i, _ in blocks]
    if fam.name == "llama" and granularity != "channel":  # heads (and key/value groups): head_dim is kept
        return [f"{container}.{i}.{fam.attention}" for i, _ in blocks]
    return None


def _block_positions(model: nn.Module, hf_prefix: str, fam: Family) -> tuple[str, list[tuple[int, nn.Module]]]:
    hf = model.get_submodule(hf_prefix) if hf_prefix else model
    cont = container_path(hf, fam)
    full = f"{hf_prefix}.{cont}" if hf_prefix else cont
    return full, [(i, m) for i, m in enumerate(hf.get_submodule(cont)) if type(m).__name__ != "Bridge"]


def uniform_amount(step, report, layers: list[str]) -> float:
    """One amount for every layer: the global sparsity, else the share the step removed from
    ``layers`` (its report), else the mean of its overrides."""
    if step.sparsity is not None:
        return float(step.sparsity)
    if report is not None:
        got = [report.units[n] for n in layers if n in report.units]
        if got and sum(t for _, t in got):
            return sum(p for p, _ in got) / sum(t for _, t in got)
    vals = [o.sparsity for o in step.layers if o.sparsity is not None]
    return sum(vals) / len(vals) if vals else 0.0


def loadable_layers(model: nn.Module, granularity: str) -> list[str] | None:
    """The layers (paths in ``model``, an HFModel or a transformers model) whose units of ``granularity``
    a loadable plan may remove, one per block (the MLP's first layer; Llama's attention for heads), or
    None: none may."""
    hf_prefix = "hf" if hasattr(model, "hf") else ""
    fam = family_of(model.get_submodule(hf_prefix) if hf_prefix else model)
    container, blocks = _block_positions(model, hf_prefix, fam)
    return _granularity_layers(fam, container, blocks, granularity)


def loadable_step(step, model: nn.Module, report=None):
    """``step`` (a structured prune step applied to ``model``) constrained to what a config can
    say, or None when nothing of that granularity is representable. Units are removed from one
    layer per block, the same amount from each (per-layer overrides, no global amount: no other
    layer loses units), MLP widths in multiples of :data:`LOADABLE_ROUND`."""
    layers = loadable_layers(model, step.granularity)
    if not layers:
        return None
    amount = round(uniform_amount(step, report, layers), 6)
    width = model.get_submodule(layers[0]).out_features if step.granularity == "neuron" else 0
    r = LOADABLE_ROUND if step.granularity == "neuron" and width % LOADABLE_ROUND == 0 else None
    d = {**step.to_dict(), "sparsity": None, "threshold": None, "round_to": r,
         "layers": [{"layer": n, "sparsity": amount} for n in layers]}
    return type(step).from_dict(d)


def is_loadable_step(step) -> bool:
    """A structured prune step in the form :func:`loadable_step` gives: no global amount, overrides
    of one equal sparsity."""
    amounts = {o.sparsity for o in step.layers}
    return (step.op == "prune" and step.granularity != "weight" and step.sparsity is None and step.threshold is None
            and len(amounts) == 1 and None not in amounts)


def loadable_plan(plan: Plan, model_before: Callable[[int], nn.Module], reports: list | None = None
                  ) -> tuple[Plan, list[str]]:
    """The nearest plan whose model a transformers config can say, and what changed.

    Structured prune steps remove the same amount from every block (:func:`loadable_step`; a
    granularity the family cannot vary is left out), cuts and pastes bridge with identity (no
    fitted module), pastes from another model are left out.

    Args:
        plan: the plan.
        model_before: the model step ``i`` is applied to (``Workspace.model_before``).
        reports: the plan's step reports (the amount a threshold step removed), optional.

    Returns:
        ``(plan, notes)``: one note per step changed or left out.
    """
    steps, notes = [], []
    for i, s in enumerate(plan.steps):
        new = s
        if s.op == "prune" and s.granularity != "weight" and not is_loadable_step(s):
            new = loadable_step(s, model_before(i), reports[i] if reports else None)
            notes.append(f"step {i + 1} ({s.describe()}): " + (
                f"the same amount from every block instead ({new.describe()})" if new else
                f"left out: transformers cannot load {s.granularity}s removed from this architecture"))
        elif s.op == "cut" and s.bridge != "identity":
            new = type(s).from_dict({**s.to_dict(), "bridge": "identity"})
            notes.append(f"step {i + 1} ({s.describe()}): identity seams (no fitted bridge)")
        elif s.op == "paste" and s.source != "self":
            new = None
            notes.append(f"step {i + 1} ({s.describe()}): left out: a block from another model")
        elif s.op == "paste" and s.adapter != "identity":
            new = type(s).from_dict({**s.to_dict(), "adapter": "identity"})
            notes.append(f"step {i + 1} ({s.describe()}): identity seams (no fitted adapter)")
        if new is not None:
            steps.append(new)
    return Plan(plan.model, tuple(steps)), notes


__all__ = ["NotLoadableError", "Family", "FAMILIES", "MODEL_TYPES", "LOADABLE_ROUND", "family_of", "container_path",
           "blocks_of", "loadable_config", "loadable_step", "is_loadable_step", "loadable_plan", "loadable_layers",
           "uniform_amount"]
