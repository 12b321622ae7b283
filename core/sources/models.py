"""The model registry: what a model is, how to build it, and where its weights are.

A model joins either by ``register_model(ModelSpec(...))`` (the bundled demos do so
from the ``demo_models`` plugin) or from an importable factory given as
``package.module:function`` together with a weights file and a dataset name.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only
    from torch import nn

# torch is imported inside the functions that need it: listing the registry
# (`prunescope models`) must not pay for importing torch.
from core.errors import FOREIGN_ERRORS, FileError, ModelError, PrunescopeError, UnknownNameError, echo, first_line
from core.ground.registry import Registry, import_object
from core.sources.weights import load_error_summary, load_state_dict_file

MODELS: Registry[ModelSpec] = Registry("model")
TASKS = ("classification", "fidelity", "language-model", "segmentation", "detection")
# tasks whose labels are the targets (a language model's label is the true next token);
# "fidelity" has none: its target is the base's prediction. "segmentation": a label per pixel (masks N x H x W,
# 255 not judged), judged by the mean IoU of a "dense" output's class map (core/metrics/segmentation.py)
LABELLED_TASKS = ("classification", "language-model", "segmentation", "detection")
# what a model's (N, K) output is: class scores ("logits", judged by argmax accuracy, loss and agreement) or
# an embedding / features ("embedding", task "fidelity" only: judged by output cosine and neighbour recall@k
# with the base's embeddings; an argmax over features means nothing)
# "dense" and "nest" (issue 24): outputs that are not one (N, K) tensor, kept as named leaves and judged leaf by
# leaf against the base's (core/metrics/nest.py): "dense" a class map (N, C, H, W, a segmenter's), judged by pixel
# agreement; "nest" anything else (a tuple or dict, several heads, feature maps), judged by the mean output cosine;
# "detection" boxes per image (torchvision's detectors), judged by the base's boxes found again (metrics/detection.py)
OUTPUTS = ("logits", "embedding", "dense", "nest", "detection")


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry for one model."""

    name: str  # registry key, e.g. "digits_cnn"
    factory: Callable[[], nn.Module]  # builds the architecture with random weights
    input_shape: tuple[int, ...]  # one example's shape, e.g. (1, 32, 32)
    dataset: str  # name in the dataset registry, used for evaluation
    weights: str | None = None  # safetensors (or weights_only .pt) state dict path
    task: str = "classification"  # "classification", "fidelity" (no labels: agreement with base) or "language-model"
    description: str = ""  # one line for pickers
    card: str | None = None  # path to a markdown model card
    block_container: str | None = None  # default container for surgery, e.g. "layers"
    extra: dict = field(default_factory=dict, hash=False, compare=False)  # free-form facts
    output: str = "logits"  # one of OUTPUTS: class scores, or an embedding (task "fidelity")

    def card_text(self) -> str:
        """The model card's markdown ('' when there is none)."""
        if self.card and Path(self.card).exists():
            return Path(self.card).read_text()
        return ""


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add a model to the registry.

    Raises:
        PrunescopeError: bad task, or the name is taken and ``overwrite`` is false.
    """
    if spec.task not in TASKS:
        raise PrunescopeError(f"task must be one of {TASKS}, got {spec.task!r}")
    check_output(spec.output, spec.task)
    _validate_shape(spec.input_shape)
    MODELS.register(spec.name, spec, overwrite=overwrite)
    return spec


def check_output(output, task: str) -> None:
    """Refuse an output kind not in OUTPUTS, an output other than class scores for a task other
    than "fidelity" (a "dense" class map may also have label masks: task "segmentation"), or task
    "segmentation" for an output other than a dense class map.

    Raises:
        PrunescopeError: the message names what is accepted.
    """
    if output not in OUTPUTS:
        raise PrunescopeError(f"output must be one of {OUTPUTS} (class scores; an embedding judged by cosine and "
                              "neighbour recall; a dense class map judged by pixel agreement; any other nest of "
                              "outputs judged leaf by leaf; a detector's boxes judged by the base's boxes found "
                              f"again), got {echo(output)}")
    if (task == "detection") != (output == "detection") and not (output == "detection" and task == "fidelity"):
        raise PrunescopeError(f"task 'detection' (labelled boxes) and output 'detection' (a detector's boxes) go "
                              f"together, or output 'detection' with task 'fidelity'; got output {output!r}, task "
                              f"{task!r}")
    if task == "segmentation" and output != "dense":
        raise PrunescopeError(f"task 'segmentation' (label masks) needs output 'dense' (a class map N x C x H x W), "
                              f"got output {output!r}")
    if output not in ("logits", "dense", "detection") and task != "fidelity" or output == "dense" and task not in (
            "fidelity", "segmentation"):
        raise PrunescopeError(f"output {output!r} needs task 'fidelity' (judged against the base model's outputs; "
                              f"labels are for (N, K) class scores, and label masks for a dense class map: task "
                              f"'segmentation'), got task {task!r}")


def _validate_shape(shape) -> None:
    if not isinstance(shape, tuple) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1_000_000 for d in shape):
        raise PrunescopeError(f"input_shape must be a tuple of positive integers, e.g. (1, 8, 8), got {echo(shape)}")


def list_models() -> list[str]:
    return MODELS.names()


def register_factory(
    path: str,
    *,
    weights: str | None,
    dataset: str,
    input_shape: tuple[int, ...],
    name: str | None = None,
    task: str = "classification",
    kwargs: dict | None = None,
    output: str = "logits",
) -> ModelSpec:
    """Register a user model from an importable factory ``package.module:function``,
    called with ``kwargs`` (names, numbers, strings, booleans, None and lists or dicts of
    them: e.g. ``register_factory("torchvision.models:get_model", kwargs={"name":
    "resnet18", "num_classes": 10}, ...)``). Registering a name again replaces it.

    Raises:
        PrunescopeError: the factory cannot be imported or is not callable, or ``kwargs``
            holds something other than plain data.
    """
    fn = import_object(path)
    if not callable(fn):
        raise PrunescopeError(f"{path!r} is not callable")
    if kwargs is not None:
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs) or not _plain(kwargs):
            raise PrunescopeError("kwargs must be a dict of names to plain values (numbers, strings, booleans, None, "
                                  f"lists and dicts of them), got {echo(kwargs)}")
        fn = functools.partial(fn, **kwargs)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list)):
        raise PrunescopeError(f"input_shape must be a tuple of positive integers, e.g. (1, 8, 8), "
                              f"got {echo(input_shape)}")
    args = f"({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" if kwargs else ""
    spec = ModelSpec(name=name or path, factory=fn, input_shape=tuple(input_shape), dataset=dataset,
                     weights=weights, task=task, description=f"user model from {path}{args}", output=output)
    return register_model(spec, overwrite=True)


def _plain(v, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    return False


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """Look a model up by name (or pass a spec through).

    Raises:
        UnknownNameError: unknown name; the message lists the registered models.
    """
    return MODELS.get(name)


BUILT_FOR = "_prunescope_model"  # attribute naming the registered model a module was built as
def build_model(spec: ModelSpec | str, *, load_weights: bool = True) -> nn.Module:
    """Build a fresh model in eval mode, with its registered weights when present.

    Raises:
        FileError: the weights do not fit the architecture.
    """
    from torch import nn

    spec = get_spec(spec)
    try:
        model = spec.factory()
    except (ImportError, OSError, *FOREIGN_ERRORS) as exc:  # the factory: a person's own code, theirs to see
        raise ModelError(f"the factory of model {spec.name!r} raised {type(exc).__name__}: {first_line(exc)}") \
            from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"the factory of model {spec.name!r} returned a {type(model).__name__}, "
                         "not a torch.nn.Module")
    if load_weights and spec.weights:
        sd = load_state_dict_file(spec.weights)
        try:
            model.load_state_dict(sd)
        except RuntimeError as exc:
            raise FileError(f"weights {spec.weights!r} do not fit model {spec.name!r}: "
                            f"{load_error_summary(exc)}") from exc
    model.eval()
    model.__dict__[BUILT_FOR] = spec.name  # copies keep it (deepcopy): what export checks a plan against
    return model


def built_for(model) -> str | None:
    """The registered model name ``model`` (or the model it was copied and edited from) was
    built as by :func:`build_model`; None for a module made some other way."""
    name = getattr(model, "__dict__", {}).get(BUILT_FOR)
    return name if isinstance(name, str) else None


def param_count(spec: ModelSpec | str) -> int:
    """The model's parameter count: the entry's recorded ``extra["params"]`` when it has
    one (the demos record theirs when trained; a test checks it), else counted on a
    model built with random weights."""
    spec = get_spec(spec)
    known = spec.extra.get("params")
    if isinstance(known, int) and not isinstance(known, bool) and known >= 0:
        return known
    return sum(p.numel() for p in build_model(spec, load_weights=False).parameters())


__all__ = ["ModelSpec", "MODELS", "TASKS", "LABELLED_TASKS", "OUTPUTS", "check_output", "BUILT_FOR", "register_model",
           "register_factory",
           "get_spec", "list_models", "build_model", "built_for", "param_count", "UnknownNameError"]
