"""A plan: a base model's name and the steps applied to it, as a JSON recipe.

Recipe format (``"format": "prunescope.plan/1"``)::

    {"format": "prunescope.plan/1", "model": "digits_cnn",
     "steps": [{"op": "prune", "criterion": "l1", "granularity": "weight",
                "sparsity": 0.6, "threshold": null, "layers": [], "seed": 0}]}

Recipes are data from elsewhere: they are strict JSON (no ``NaN`` / ``Infinity``),
at most ``MAX_RECIPE_BYTES`` long with at most ``MAX_STEPS`` steps, and every value is
checked by its step's constraints before anything runs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import FileError, StepError, echo
from core.plan.step import STEPS, Step

FORMAT = "prunescope.plan/1"
MAX_STEPS = 1000  # steps in one plan
MAX_RECIPE_BYTES = 10 * 2**20  # size of a recipe file or string


def _reject_constant(name: str):
    raise StepError(f"recipes are strict JSON: {name} is not a number JSON allows")


@dataclass(frozen=True)
class Plan:
    """A base model's name and the steps applied to it, in order."""

    model: str  # model registry name
    steps: tuple[Step, ...] = ()  # applied in order

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise StepError(f"plan.model must be a model name, got {echo(self.model)}")
        if not isinstance(self.steps, tuple):
            raise StepError(f"plan.steps must be a tuple of steps, got {type(self.steps).__name__}")
        if len(self.steps) > MAX_STEPS:
            raise StepError(f"a plan holds at most {MAX_STEPS} steps, got {len(self.steps)}")
        for s in self.steps:
            if not isinstance(s, Step):
                raise StepError(f"plan steps must be Step objects, got {type(s).__name__}")

    # --- editing (each returns a new plan) ---
    def then(self, step: Step) -> Plan:
        return Plan(self.model, self.steps + (step,))

    def replace(self, index: int, step: Step) -> Plan:
        self._check_index(index)
        steps = list(self.steps)
        steps[index] = step
        return Plan(self.model, tuple(steps))

    def without(self, index: int) -> Plan:
        self._check_index(index)
        steps = list(self.steps)
        del steps[index]
        return Plan(self.model, tuple(steps))

    def _check_index(self, index: int) -> None:
        if not isinstance(index, int) or not -len(self.steps) <= index < len(self.steps):
            raise StepError(f"the plan has {len(self.steps)} step(s); there is no step {echo(index)}")

    def prefix(self, n: int) -> Plan:
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
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is None, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Any) -> Plan:
        """Build a plan from a parsed recipe.

        Raises:
            StepError: wrong format tag, missing fields, unknown step, bad values;
                the message names the step index.
        """
        if not isinstance(d, dict):
            raise StepError(f"a recipe must be a JSON object, got {type(d).__name__}")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise StepError(f"recipe format must be {FORMAT!r}, got {echo(fmt)}")
        model = d.get("model")
        if not isinstance(model, str) or not model:
            raise StepError(f"recipe needs a 'model' name, got {echo(model)}")
        raw = d.get("steps", [])
        if not isinstance(raw, list):
            raise StepError("recipe 'steps' must be a list")
        if len(raw) > MAX_STEPS:
            raise StepError(f"a recipe holds at most {MAX_STEPS} steps, got {len(raw)}")
        steps = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict) or "op" not in s:
                raise StepError(f"step {i}: expected an object with an 'op', got {echo(s)}")
            op = s["op"]
            if not isinstance(op, str) or op not in STEPS:
                raise StepError(f"step {i}: unknown op {echo(op)}; valid ops: {', '.join(STEPS.names())}")
            try:
                steps.append(STEPS.get(op).from_dict(s))
            except StepError as exc:
                raise StepError(f"step {i} ({op}): {exc}") from exc
        return cls(model, tuple(steps))

    @classmethod
    def from_json(cls, text: str, source: str = "recipe") -> Plan:
        """Parse a recipe string; ``source`` names it in messages (a file name).

        Raises:
            StepError: not strict JSON, too long or too deep, or a bad step.
        """
        if len(text) > MAX_RECIPE_BYTES:
            raise StepError(f"{source} is {len(text):,} characters; a recipe holds at most {MAX_RECIPE_BYTES:,}")
        try:
            d = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise StepError(f"{source} is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise StepError(f"{source} is nested too deeply to be a recipe") from exc
        return cls.from_dict(d)

    def save(self, path) -> None:
        """Write the recipe to ``path`` atomically.

        Raises:
            FileError: the file cannot be written (the message names it).
        """
        from core.ground.files import atomic_write_text

        try:
            atomic_write_text(Path(path), self.to_json() + "\n")
        except OSError as exc:
            raise FileError(f"cannot write the recipe to {str(path)!r}: {exc.strerror or exc}") from exc

    @classmethod
    def load(cls, path) -> Plan:
        """Read a recipe file.

        Raises:
            FileError: missing, not a regular file, too large, or not UTF-8.
            StepError: the recipe's content is not a valid plan.
        """
        p = Path(path)
        if not p.exists():
            raise FileError(f"plan file {str(p)!r} does not exist")
        if not p.is_file():
            raise FileError(f"plan file {str(p)!r} is not a regular file")
        try:
            size = p.stat().st_size
            if size > MAX_RECIPE_BYTES:
                raise FileError(f"plan file {str(p)!r} is {size:,} bytes; a recipe holds at most "
                                f"{MAX_RECIPE_BYTES:,}")
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileError(f"plan file {str(p)!r} is not UTF-8 text (a recipe is a JSON file)") from exc
        except OSError as exc:
            raise FileError(f"cannot read plan file {str(p)!r}: {exc.strerror or exc}") from exc
        try:
            return cls.from_json(text, source=f"plan file {str(p)!r}")
        except StepError as exc:
            msg = str(exc)
            raise StepError(msg if str(p) in msg else f"plan file {str(p)!r}: {msg}") from exc


__all__ = ["Plan", "FORMAT", "MAX_STEPS", "MAX_RECIPE_BYTES"]
