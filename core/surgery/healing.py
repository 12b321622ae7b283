"""What healing trains after surgery: the adapters (bridges) at the seams, and optionally
the blocks beside them. The ``Heal`` step itself is a preset of the one training loop,
``core.recover.training.Finetune`` (recover sits above surgery)."""
from __future__ import annotations

from torch import nn

from core.errors import ModelError
from core.surgery.blocks import is_container, is_dict_container, join_path
from core.surgery.bridges import Bridge

HEAL_TRAIN = ("adapters", "adapters+neighbours")


def adapters(model: nn.Module) -> dict[str, Bridge]:
    """Bridges in ``model`` by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Bridge)}


def heal_parameters(model: nn.Module, train: str) -> dict[str, nn.Parameter]:
    """Parameters heal trains: every Bridge's, plus for "adapters+neighbours" those of
    the blocks right before and after each Bridge in its container.

    Raises:
        ModelError: unknown ``train``, or nothing to train.
    """
    if train not in HEAL_TRAIN:
        raise ModelError(f"train must be one of {HEAL_TRAIN}, got {train!r}")
    chosen: set[str] = set(adapters(model))
    if train == "adapters+neighbours":
        for cname, c in model.named_modules():
            if not (is_container(c) or is_dict_container(c)):
                continue
            kids = list(c.named_children())
            for i, (_, ch) in enumerate(kids):
                if isinstance(ch, Bridge):
                    for j in (i - 1, i + 1):
                        if 0 <= j < len(kids) and not isinstance(kids[j][1], Bridge):
                            chosen.add(join_path(cname, kids[j][0]))
    params = {}
    for n, p in model.named_parameters():
        if any(n.startswith(c + ".") for c in chosen):
            params[n] = p
    if not params:
        what = "adapters" if train == "adapters" else "adapters or blocks next to them"
        raise ModelError(f"the model has no trainable {what}; cut or paste blocks first "
                         f"(identity seams have no parameters: use train='adapters+neighbours' "
                         f"or bridge 'lstsq')")
    return params


__all__ = ["heal_parameters", "adapters", "HEAL_TRAIN"]
