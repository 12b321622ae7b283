"""The pristine base models, built once per process and device and shared read-only by
every workspace and session (an LRU of at most ``_BASES_MAX``), and the copy that edits start from."""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    import torch
    from torch import nn

from core.sources.models import build_model, get_spec

# (name, device) -> (the registry entry it was built from, the pristine base); an entry
# registered again under the same name is a different object, so its stale base is rebuilt
_BASES: OrderedDict[tuple[str, str], tuple[object, nn.Module]] = OrderedDict()
_BASES_MAX = 16


def load_base(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """The pristine base model on ``device``, cached per process.

    The returned module is shared: never modify it (a plan's edits work on a copy; a
    ``Workspace`` hands out its own copy for an empty plan). A name registered again is
    built again.
    """
    import torch

    spec = get_spec(name)
    key = (spec.name, str(torch.device(device)))
    cached = _BASES.get(key)
    if cached is not None and cached[0] is spec:
        _BASES.move_to_end(key)
        return cached[1]
    model = build_model(spec).to(key[1])
    for p in model.parameters():
        p.requires_grad_(False)
    _BASES[key] = (spec, model)
    while len(_BASES) > _BASES_MAX:
        _BASES.popitem(last=False)
    return model


def forget_base(name: str) -> None:
    """Drop the cached bases of ``name`` (its entry is gone; frees their memory)."""
    for key in [k for k in _BASES if k[0] == name]:
        del _BASES[key]


def autograd_caches(model: nn.Module) -> list:
    """Tensors a forward left on ``model``'s modules that autograd made, not leaves (RAFT's correlation
    pyramid after a pass with gradients): plain attributes, or items of a list or tuple attribute.
    Deepcopy refuses them; :func:`clone_model` copies them detached, a graph copy shares them."""
    import torch

    return [t for m in model.modules() for v in vars(m).values()
            for t in (v if isinstance(v, (list, tuple)) else (v,)) if isinstance(t, torch.Tensor) and not t.is_leaf]


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy that shares nothing with ``model``; a forward's cache autograd made
    (:func:`autograd_caches`) is copied detached."""
    return copy.deepcopy(model, {id(t): t.detach().clone() for t in autograd_caches(model)})


__all__ = ["load_base", "forget_base", "clone_model", "autograd_caches"]
