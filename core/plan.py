"""Plans: every edit a person makes is a step, and a plan is a list of steps.

Steps are frozen dataclasses with names and numbers only (module paths, criterion
names, thresholds, fractions), never tensors or modules, so a plan goes to JSON,
diffs readably, and replays on a fresh copy of the base model.

Recipe format (``"format": "prunescope.plan/1"``)::

    {"format": "prunescope.plan/1", "model": "digits_cnn",
     "steps": [{"op": "prune", "criterion": "l1", "granularity": "weight",
                "sparsity": 0.6, "threshold": null, "layers": [], "seed": 0}]}

New step kinds register with :func:`register_step` (``core.surgery`` adds ``cut``
and ``paste``); each kind knows how to build a model from the previous one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .registry import Registry, UnknownNameError

FORMAT = "prunescope.plan/1"
STEPS: Registry[type["Step"]] = Registry("step")
GRANULARITIES = ("weight", "neuron", "channel", "head")


# Core modules that register further step kinds; imported before a recipe is read.
STEP_MODULES = ["core.surgery"]


def _load_step_modules() -> None:
    import importlib

    for mod in STEP_MODULES:
        importlib.import_module(mod)


def register_step(cls: type["Step"]) -> type["Step"]:
    """Class decorator: make a step kind known to recipes under ``cls.op``."""
    STEPS.register(cls.op, cls)
    return cls


def validate_fraction(name: str, value: Any) -> float | None:
    """The one place an amount is checked: ``None`` or a float in [0, 1].

    Raises:
        ValueError: not a number, not finite, or outside [0, 1].
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (a fraction), got {value!r}")
    return float(value)


def _validate_number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


class Step:
    """Base of all plan steps. Subclasses are frozen dataclasses with ``op`` set."""

    op: ClassVar[str] = ""

    def to_dict(self) -> dict:
        d = {"op": self.op}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else
                     (list(x) if isinstance(x, tuple) else x) for x in v]
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Step":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"op"}
        if unknown:
            raise ValueError(f"step {cls.op!r}: unknown field(s) {sorted(unknown)}; valid: {sorted(names)}")
        kwargs = {k: v for k, v in d.items() if k != "op"}
        return cls(**cls._coerce(kwargs))

    @classmethod
    def _coerce(cls, kwargs: dict) -> dict:
        """Turn JSON lists back into the tuples a frozen step holds."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}

    def describe(self) -> str:
        """One line for lists and logs."""
        return self.op


@dataclass(frozen=True)
class LayerOverride:
    """A per-layer amount that replaces the global one for that layer."""

    layer: str  # module path, e.g. "features.0.0"
    sparsity: float | None = None  # fraction of the layer's units to prune
    threshold: float | None = None  # or a score threshold for the layer

    def __post_init__(self):
        if not isinstance(self.layer, str) or not self.layer:
            raise ValueError(f"layer override needs a module path, got {self.layer!r}")
        validate_fraction(f"sparsity for layer {self.layer!r}", self.sparsity)
        _validate_number(f"threshold for layer {self.layer!r}", self.threshold)
        if (self.sparsity is None) == (self.threshold is None):
            raise ValueError(f"layer {self.layer!r}: give exactly one of sparsity or threshold")


@register_step
@dataclass(frozen=True)
class Prune(Step):
    """Prune units whose importance is below a threshold.

    The global amount (``sparsity`` or ``threshold``, or neither for overrides only)
    applies to every prunable layer; an entry in ``layers`` overrides it for one layer.
    A unit is pruned when its score is strictly below the threshold; a sparsity is
    turned into the threshold that prunes that fraction.
    """

    op: ClassVar[str] = "prune"
    criterion: str = "l1"  # importance criterion name (core.importance registry)
    granularity: str = "weight"  # "weight" (masks) | "neuron" | "channel" | "head" (removed)
    sparsity: float | None = None  # global fraction of prunable units to prune, in [0, 1]
    threshold: float | None = None  # or a global score threshold (score units)
    layers: tuple[LayerOverride, ...] = ()  # per-layer overrides
    seed: int = 0  # seed of the calibration batch and of random criteria

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if not isinstance(self.criterion, str) or not self.criterion:
            raise ValueError(f"criterion must be a name, got {self.criterion!r}")
        validate_fraction("sparsity", self.sparsity)
        _validate_number("threshold", self.threshold)
        if self.sparsity is not None and self.threshold is not None:
            raise ValueError("give a global sparsity or a global threshold, not both")
        if self.sparsity is None and self.threshold is None and not self.layers:
            raise ValueError("a prune step needs a sparsity, a threshold, or per-layer overrides")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        seen = set()
        for o in self.layers:
            if not isinstance(o, LayerOverride):
                raise TypeError(f"layers must hold LayerOverride, got {type(o).__name__}")
            if o.layer in seen:
                raise ValueError(f"layer {o.layer!r} is overridden twice")
            seen.add(o.layer)

    @classmethod
    def _coerce(cls, kwargs: dict) -> dict:
        kwargs = dict(kwargs)
        layers = kwargs.get("layers", ())
        if not isinstance(layers, (list, tuple)):
            raise ValueError(f"prune.layers must be a list, got {layers!r}")
        out = []
        for o in layers:
            if isinstance(o, dict):
                out.append(LayerOverride(**o))
            elif isinstance(o, (list, tuple)) and len(o) == 2:
                out.append(LayerOverride(layer=o[0], sparsity=o[1]))
            else:
                raise ValueError(f"bad layer override {o!r}; expected {{'layer': ..., 'sparsity': ...}}")
        kwargs["layers"] = tuple(out)
        return kwargs

    def override_for(self, layer: str) -> LayerOverride | None:
        for o in self.layers:
            if o.layer == layer:
                return o
        return None

    def with_override(self, layer: str, *, sparsity: float | None = None,
                      threshold: float | None = None) -> "Prune":
        """A copy with the override for ``layer`` set (or cleared when both are None)."""
        rest = tuple(o for o in self.layers if o.layer != layer)
        if sparsity is not None or threshold is not None:
            rest = rest + (LayerOverride(layer, sparsity=sparsity, threshold=threshold),)
        return dataclasses.replace(self, layers=rest)

    def describe(self) -> str:
        amt = (f"sparsity {self.sparsity:.1%}" if self.sparsity is not None else
               f"threshold {self.threshold:.4g}" if self.threshold is not None else "overrides only")
        extra = f", {len(self.layers)} layer override(s)" if self.layers else ""
        return f"prune {self.granularity} by {self.criterion}: {amt}{extra}"


@dataclass(frozen=True)
class Plan:
    """A base model's name and the steps applied to it, in order."""

    model: str  # model registry name
    steps: tuple[Step, ...] = ()  # applied in order

    def __post_init__(self):
        for s in self.steps:
            if not isinstance(s, Step):
                raise TypeError(f"plan steps must be Step objects, got {type(s).__name__}")

    # --- editing (each returns a new plan) ---
    def then(self, step: Step) -> "Plan":
        return Plan(self.model, self.steps + (step,))

    def replace(self, index: int, step: Step) -> "Plan":
        steps = list(self.steps)
        steps[index] = step
        return Plan(self.model, tuple(steps))

    def without(self, index: int) -> "Plan":
        if not -len(self.steps) <= index < len(self.steps):
            raise IndexError(f"plan has {len(self.steps)} steps; no step {index}")
        steps = list(self.steps)
        del steps[index]
        return Plan(self.model, tuple(steps))

    def prefix(self, n: int) -> "Plan":
        return Plan(self.model, self.steps[:n])

    # --- identity ---
    def key(self) -> str:
        """A stable hash of the plan (model and steps) for caches and logs."""
        return hashlib.sha256(self.to_json(indent=None).encode()).hexdigest()[:16]

    def describe(self) -> list[str]:
        return [s.describe() for s in self.steps]

    # --- JSON ---
    def to_dict(self) -> dict:
        return {"format": FORMAT, "model": self.model, "steps": [s.to_dict() for s in self.steps]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is None)

    @classmethod
    def from_dict(cls, d: Any) -> "Plan":
        """Build a plan from a parsed recipe.

        Raises:
            ValueError: wrong format tag, missing fields, unknown step, bad values;
                the message names the step index.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a recipe must be a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise ValueError(f"recipe format must be {FORMAT!r}, got {fmt!r}")
        model = d.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("recipe needs a 'model' name")
        raw = d.get("steps", [])
        if not isinstance(raw, list):
            raise ValueError("recipe 'steps' must be a list")
        steps = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict) or "op" not in s:
                raise ValueError(f"step {i}: expected an object with an 'op', got {s!r}")
            try:
                if s["op"] not in STEPS._items:
                    _load_step_modules()
                kind = STEPS.get(s["op"])
                steps.append(kind.from_dict(s))
            except UnknownNameError as exc:
                raise ValueError(f"step {i}: {exc}") from None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"step {i} ({s.get('op')}): {exc}") from None
        return cls(model, tuple(steps))

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"recipe is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def save(self, path) -> None:
        from pathlib import Path

        from .fileio import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> "Plan":
        from pathlib import Path

        p = Path(path)
        if not p.exists():
            raise ValueError(f"plan file {str(p)!r} does not exist")
        return cls.from_json(p.read_text())
