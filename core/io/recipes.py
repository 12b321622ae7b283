"""Reading an export back: its recipe, and the model rebuilt from recipe + weights."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from core.errors import FileError, PrunescopeError, first_line
from core.plan import ApplyContext, Plan, apply

log = logging.getLogger(__name__)

METADATA_KEY = "prunescope.plan"  # safetensors metadata entry holding the recipe JSON


def recipe_path(path: str | Path) -> Path:
    """Where the recipe of an export lives: ``out/model.onnx`` -> ``out/model.plan.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".plan.json")


def read_recipe(path: str | Path) -> Plan:
    """The plan stored in a safetensors export, or in the recipe beside any export.

    Raises:
        FileError: no such file, or no recipe in it or beside it.
    """
    path = Path(path)
    if not path.exists():
        raise FileError(f"{str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise FileError(f"{path.name} is not a readable safetensors file ({first_line(exc)})") from exc
        if METADATA_KEY in meta:
            return Plan.from_json(meta[METADATA_KEY], source=f"the recipe in {path.name}")
    rp = recipe_path(path)
    if rp.exists():
        return Plan.load(rp)
    raise FileError(f"{path.name} carries no prunescope recipe and no {rp.name} lies beside it")


def training_steps(plan: Plan) -> list[str]:
    """The steps of ``plan`` that train (and so take time and compute), described."""
    return [f"step {i + 1}: {s.describe()}" for i, s in enumerate(plan.steps) if getattr(s, "trains", False)]


def load(path: str | Path, device: str | torch.device = "cpu", *, train: bool = False) -> nn.Module:
    """Rebuild a safetensors export: replay its recipe on the registered base (so a
    structurally pruned or cut model gets its new shapes), then load the saved state
    dict into it, strictly (every name and shape must match).

    A recipe is data from somebody else: what is about to be replayed is logged
    (logger ``core.io.recipes``), and a recipe with training steps (heal) is refused
    unless ``train=True``.

    Args:
        path: a ``.safetensors`` file written by :func:`export_model`.
        device: where to build the model.
        train: allow the recipe's training steps to run.

    Returns:
        A new model in eval mode (never the shared base).

    Raises:
        PrunescopeError: no recipe, training steps without ``train=True``, a plan step that
            no longer fits (``PlanError``), or saved weights that do not fit the replayed model.
    """
    from core.sources.bases import clone_model, load_base
    from core.sources.weights import load_error_summary, load_state_dict_file

    path = Path(path)
    plan = read_recipe(path)
    trains = training_steps(plan)
    if trains and not train:
        raise PrunescopeError(f"{path.name}: its recipe trains ({'; '.join(trains)}); replaying it runs that "
                              "training. Pass train=True to allow it")
    log.info("replaying the recipe of %s on %s: %s", path.name, plan.model, "; ".join(plan.describe()) or "no steps")
    device = torch.device(device)
    model = apply(plan, ctx=ApplyContext(plan.model, device))
    if model is load_base(plan.model, device):  # an empty plan returns the shared base
        model = clone_model(model)
    sd = load_state_dict_file(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise FileError(f"{path.name}: the saved weights do not fit the model its recipe builds: "
                        f"{load_error_summary(exc)}") from exc
    return model.eval()


__all__ = ["read_recipe", "load", "training_steps", "recipe_path", "METADATA_KEY"]
