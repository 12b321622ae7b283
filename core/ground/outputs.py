"""A model's output as named leaves: any nest of tensors (a tensor, tuple, list, dict, a
``ModelOutput``-like object) flattened by torch's pytree into ``{name: tensor}``.

Names are the paths into the nest joined by dots: ``out`` and ``aux`` for a torchvision
segmenter's dict, ``0`` and ``1`` for a tuple, ``1.boxes`` deeper down; a plain tensor is the
one leaf ``output``. Only floating-point tensors with a batch dimension are leaves that can be
judged (an integer leaf, e.g. a detector's labels, is kept but marked not float). The order of
the leaves is the nest's own, so the same model gives the same names every time.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.utils._pytree as pytree

SINGLE = "output"  # the name of a model's one leaf when it returns a plain tensor


def _name(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):  # MappingKey, SequenceKey, GetAttrKey
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts) or SINGLE


def leaves(out) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of every tensor in the nest ``out``, in the nest's order (a plain
    tensor: ``{"output": out}``). Non-tensor leaves (None, ints, strings) are left out."""
    if isinstance(out, torch.Tensor):
        return {SINGLE: out}
    flat, _ = pytree.tree_flatten_with_path(out)
    return {_name(path): t for path, t in flat if isinstance(t, torch.Tensor)}


def leaf_shapes(out) -> dict[str, tuple]:
    """The shape of each leaf of ``out``; a detector's without its first dimension (how many boxes
    it found varies; pruned, it must still give boxes of four coordinates, scores and labels)."""
    cut = 1 if is_detections(out) else 0
    return {k: tuple(t.shape)[cut:] for k, t in leaves(out).items()}


def is_nest(out) -> bool:
    """True when ``out`` is anything but one plain tensor."""
    return not isinstance(out, torch.Tensor)


def judgeable(named: dict[str, torch.Tensor]) -> list[str]:
    """The names of the leaves that can be judged against the base's: floating point, with a
    batch dimension."""
    return [k for k, t in named.items() if t.is_floating_point() and t.dim() >= 1]


def cat_leaves(parts: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The leaves of several batches joined along the batch dimension (same names in each)."""
    parts = list(parts)
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def take(named: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    """The leaves of the examples ``index`` (a slice, indices or a mask on the batch dimension)."""
    return {k: t[index] for k, t in named.items()}


# output kinds kept as a dict of leaves: judged leaf by leaf ("dense", "nest"), or box by box ("detection")
NEST_KINDS = ("dense", "nest", "detection")
MAX_BOXES = 300  # a detector's boxes kept per image, highest scores first (torchvision's give at most 100-300)
SCORE_THRESHOLD = 0.5  # a detector's boxes scored below this are not detections (a model's own: ModelSpec.extra)


def is_detections(out) -> bool:
    """True for a detector's raw output: a list or tuple of dicts, each with boxes and scores
    (torchvision's detectors in eval mode)."""
    return (isinstance(out, (list, tuple)) and len(out) > 0
            and all(isinstance(d, dict) and "boxes" in d and "scores" in d for d in out))


def padded_detections(out, score: float = SCORE_THRESHOLD, keep: int = MAX_BOXES) -> dict[str, torch.Tensor]:
    """A detector's raw output as ``{"boxes": N x keep x 4, "scores": N x keep, "labels": N x keep,
    "score_threshold": N}`` (fp32, on the CPU): the ``keep`` highest-scoring boxes of each image
    (padding has score -1 and label -1, so batches join like any dict of leaves), and the threshold
    ``score`` a box is judged a detection at against the base (mAP reads every box kept).

    Raises:
        ValueError: not a detector's output (our caller checked the output kind at registration).
    """
    if not is_detections(out):
        raise ValueError(f"a detector's output is a list of dicts with boxes and scores; got {type(out).__name__}")
    n = len(out)
    boxes, scores, labels = torch.zeros(n, keep, 4), torch.full((n, keep), -1.0), torch.full((n, keep), -1.0)
    for i, d in enumerate(out):
        s = d["scores"].detach().float().cpu()
        order = s.argsort(descending=True)[:keep]
        k = len(order)
        boxes[i, :k] = d["boxes"].detach().float().cpu().reshape(-1, 4)[order]
        scores[i, :k] = s[order]
        lab = d.get("labels")
        labels[i, :k] = lab.detach().float().cpu()[order] if lab is not None else 0.0
    return {"boxes": boxes, "scores": scores, "labels": labels, "score_threshold": torch.full((n,), float(score))}


def align_detections(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                     tol: Callable[[torch.Tensor], float]) -> tuple[dict[str, torch.Tensor], int]:
    """``got``'s detections reordered box for box onto ``ref``'s (both named leaves, same names): each
    of ``ref``'s boxes takes the first unused box of ``got`` with its label, its score and its
    coordinates within ``tol`` (a leaf's tolerance); every leaf of that image with one row per box
    (masks, keypoints) follows. A box of ``ref`` with no such partner whose score ties the image's
    lowest kept score was one of several equal-scored boxes the cut-off chose among (two runtimes
    may keep different ones: a randomly initialised head gives every box the same score): it is not
    compared, and is counted. Returns (the aligned leaves, boxes not compared); leaves that are not
    a detector's (``<prefix>boxes`` M x 4 beside ``<prefix>scores`` M) are returned as given."""
    out, skipped = dict(got), 0
    for key, br in ref.items():
        pre = key[:-len("boxes")]
        sr, sg, bg = ref.get(pre + "scores"), got.get(pre + "scores"), got.get(key)
        if (not key.endswith("boxes") or br.dim() != 2 or br.shape[-1] != 4 or sr is None or sg is None
                or bg is None or sr.shape != br.shape[:1] or bg.shape != br.shape or sg.shape != sr.shape):
            continue
        ts, tb = tol(sr), tol(br)  # at the outputs' own precision
        br, bg, sr, sg = (t.detach().cpu().double() for t in (br, bg, sr, sg))
        lr, lg = ref.get(pre + "labels"), got.get(pre + "labels")
        same = (sg[None, :] - sr[:, None]).abs() <= ts
        same &= (bg[None, :, :] - br[:, None, :]).abs().amax(-1) <= tb
        if lr is not None and lg is not None and lr.shape == sr.shape and lg.shape == sr.shape:
            same &= lg.detach().cpu()[None, :] == lr.detach().cpu()[:, None]
        lowest = float(sr.min()) if len(sr) else 0.0
        order, used, tied = [], torch.zeros(len(sg), dtype=torch.bool), []
        for i in range(len(sr)):
            j = torch.nonzero(same[i] & ~used).flatten()
            if len(j):
                used[j[0]] = True
                order.append(int(j[0]))
            else:
                order.append(-1)
                tied.append(abs(float(sr[i]) - lowest) <= ts)
        spare = iter(torch.nonzero(~used).flatten().tolist())
        order = [j if j >= 0 else next(spare) for j in order]
        pos = torch.tensor(order, dtype=torch.long)
        unmatched = [i for i, j in enumerate(same[torch.arange(len(sr)), pos].tolist()) if not j]
        for k, v in got.items():
            if k.startswith(pre) and v.dim() >= 1 and len(v) == len(sr):
                out[k] = v[pos.to(v.device)].clone()
                if all(tied):  # every box left over ties at the cut-off: not compared
                    out[k][unmatched] = ref[k][unmatched].to(v.device, v.dtype)
        skipped += len(unmatched) if all(tied) else 0
    return out, skipped


def judged_outputs(out, output: str, judged: tuple[str, ...] | list[str] | None = None,
                   score: float | None = None):
    """A model's raw output as the evaluator keeps it: the tensor itself (fp32) for "logits" and
    "embedding"; for "dense" / "nest" the ``{name: fp32 tensor}`` of the judged leaves (``judged``,
    default every judgeable leaf), in the nest's order; for "detection" the padded boxes and the
    threshold ``score`` they are judged at (default :data:`SCORE_THRESHOLD`, :func:`padded_detections`).

    Raises:
        ValueError: a judged leaf the output does not have (our caller checked the names at
            registration: a model whose outputs change between calls is a bug to see).
    """
    if output == "detection":
        return padded_detections(out, SCORE_THRESHOLD if score is None else score)
    if output not in NEST_KINDS:
        return out.float()
    named = leaves(out)
    names = list(judged) if judged else judgeable(named)
    missing = [n for n in names if n not in named]
    if missing:
        raise ValueError(f"the model's output has no leaf {missing}; it has {list(named)}")
    return {n: named[n].float() for n in names}


def output_kind(out, input_shape: tuple[int, ...] | None = None) -> str | None:
    """The output kind a model's raw output ``out`` (on a batch) calls for: "logits" for one
    (N, K) tensor (class scores, or features the person calls an embedding); "dense" when the
    output, or its leaf ``out`` (torchvision's segmenters), is a map (N, C, H, W) over the input's
    spatial size, class scores per pixel; "detection" for a list of dicts with boxes and scores (one
    per image: torchvision's detectors); "nest" for anything else with a judgeable leaf; None
    when nothing in it can be judged (no float tensor with a batch dimension)."""
    if is_detections(out):
        return "detection"
    named = leaves(out)
    names = judgeable(named)
    if not names:
        return None
    if isinstance(out, torch.Tensor) and out.dim() == 2:
        return "logits"
    if not isinstance(out, torch.Tensor) and "out" not in names:
        return "nest"  # a tuple, list or dict of maps is a pyramid of features unless its leaf `out` is the map
    main = named["out"] if "out" in names else named[names[0]]
    spatial = tuple(input_shape[-2:]) if input_shape is not None and len(input_shape) >= 3 else None
    if main.dim() == 4 and main.shape[1] > 1 and (spatial is None or tuple(main.shape[-2:]) == spatial):
        return "dense"
    return "nest"


def class_count(out, kind: str) -> int:
    """Classes a model's output tells of: K of (N, K) scores, C of a dense class map, 1 for a nest."""
    if kind == "logits":
        return int(out.shape[1])
    if kind == "dense":
        named = leaves(out)
        return int((named["out"] if "out" in named else named[judgeable(named)[0]]).shape[1])
    return 1


def map_out(out, fn):
    """``fn`` applied to a tensor, or to every leaf of a dict of leaves."""
    return {k: fn(t) for k, t in out.items()} if isinstance(out, dict) else fn(out)


def cat_outputs(parts: list):
    """Batches of outputs (tensors, or dicts of leaves) joined along the batch dimension."""
    if isinstance(parts[0], dict):
        return cat_leaves(parts)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def batch_size(out) -> int:
    """Examples in an output (a tensor, or a dict of leaves)."""
    return len(next(iter(out.values()))) if isinstance(out, dict) else len(out)


__all__ = ["SINGLE", "NEST_KINDS", "leaf_shapes", "MAX_BOXES", "SCORE_THRESHOLD", "is_detections",
           "padded_detections", "leaves", "is_nest", "judgeable", "cat_leaves", "take", "judged_outputs",
           "map_out", "cat_outputs", "batch_size", "output_kind", "class_count"]
