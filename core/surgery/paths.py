"""Module paths inside a model, and which modules are containers of blocks (``blocks.py`` traces them,
``choice.py`` picks the default)."""
from __future__ import annotations

from collections import Counter

from torch import nn

from core.errors import ModelError


def is_container(m: nn.Module) -> bool:
    """An ``nn.Sequential`` or ``nn.ModuleList``: a module whose children can be blocks."""
    return isinstance(m, (nn.Sequential, nn.ModuleList))


def is_dict_container(m: nn.Module | None) -> bool:
    """An ``nn.ModuleDict`` (its own forward runs its children; seen through the root view)."""
    return isinstance(m, nn.ModuleDict)


def get_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` ("" is the model itself). Raises ModelError: no such module
    (the message lists the containers)."""
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        valid = [n for n, m in model.named_modules() if n and is_container(m)]
        raise ModelError(f"module {path!r} not found in the model; containers: {valid}") from exc


def container_candidates(model: nn.Module) -> list[str]:
    """Paths of every ``nn.Sequential`` / ``nn.ModuleList`` / ``nn.ModuleDict`` with two or more children,
    best first by shape alone (longest run of children of one type, then most children, then shallowest);
    then ``""`` (the root's top-level children) when the root is not a container but has two or more children."""
    scored = []
    for name, m in model.named_modules():
        if not (is_container(m) or is_dict_container(m)) or len(m) < 2:
            continue
        types = Counter(type(c).__name__ for c in m.children())
        scored.append((-types.most_common(1)[0][1], -len(m), name.count(".") if name else -1, name))
    out = [s[-1] for s in sorted(scored)]
    if not is_container(model) and len(list(model.children())) >= 2:
        out.append("")
    return out


def join_path(container: str, child: str) -> str:
    """The module path of ``child`` inside ``container`` (``""`` is the model itself)."""
    return f"{container}.{child}" if container else child


def split_block(name: str) -> tuple[str, str]:
    """``"layers.2"`` -> ``("layers", "2")``; ``"3"`` -> ``("", "3")``."""
    if not isinstance(name, str) or not name:
        raise ModelError(f"a block is named by its module path, e.g. 'layers.2', got {name!r}")
    parent, _, leaf = name.rpartition(".")
    return parent, leaf


__all__ = ["is_container", "is_dict_container", "get_module", "container_candidates", "join_path", "split_block"]
