"""The graph diff as node data for Google's Model Explorer (``ai-edge-model-explorer``).

Model Explorer overlays "node data" on a graph it shows: a JSON object
``{"results": {key: {"value": number}}, "thresholds": [{"value", "bgColor"}], ...}``, optionally
wrapped as ``{graph id: that}``. A key is a node id or one of a node's output tensor names.

Which graph: the ONNX file prunescope exports (``prunescope export --format onnx``,
``core.io``), because it is what a person loads into Model Explorer beside the data, and
because its ids are stable. That file carries no node names (``strip_onnx_debug`` drops them
and renames intermediate values ``v0``, ``v1``, ...), but every node that holds weights reads
them by their PyTorch names (``features.0.0.weight``): so a module is found as the node that
reads its parameters, and the data is keyed by that node's output tensor names, which Model
Explorer matches against each node's ``tensor_name`` whatever ids its ONNX adapter gives.
Modules without parameters (activations, pooling, reshapes) have no value; a BatchNorm folded
into the convolution before it is shown on that convolution's node.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import FileError

# status -> the value written, with the legend Model Explorer colours it by
STATUS_VALUES = {"kept": 0, "narrowed": 1, "masked": 2, "removed": 3, "added": 4}
STATUS_COLOURS = {"kept": "#d9d9d9", "narrowed": "#fdae61", "masked": "#abd9e9", "removed": "#d7191c",
                  "added": "#1a9641"}
VALUES = ("status", "macs_saved")


def _owner(initializer: str, modules: set[str]) -> str | None:
    """The module a parameter tensor belongs to: the longest module path it starts with."""
    best = None
    for cut in range(len(initializer), 0, -1):
        head = initializer[:cut]
        if head in modules and initializer[cut:cut + 1] in (".", "_"):
            best = head
            break
    return best


def onnx_keys(onnx_path: str | Path, modules: set[str]) -> dict[str, list[str]]:
    """Module path -> output tensor names of the ONNX nodes that read its parameters.

    Raises:
        FileError: the file cannot be read as ONNX.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        g = onnx.load(str(onnx_path), load_external_data=False).graph
    except (OSError, DecodeError) as exc:
        raise FileError(f"cannot read {str(onnx_path)!r} as an ONNX file: {exc}") from exc
    inits = {t.name for t in g.initializer}
    out: dict[str, list[str]] = {}
    for node in g.node:
        for name in node.input:
            owner = _owner(name, modules) if name in inits else None
            if owner is not None:
                out.setdefault(owner, [])
                out[owner] += [o for o in node.output if o and o not in out[owner]]
    return out


def to_model_explorer(diff, onnx_path: str | Path, value: str = "status", graph_id: str | None = None) -> dict:
    """Node data for Model Explorer over the ONNX export of the current model (see the module
    docstring for why that graph and how nodes are matched).

    Args:
        diff: a :class:`~core.explain.graphdiff.GraphDiff`.
        onnx_path: the current model's ONNX export (``core.io.export_model(..., "onnx", ...)``).
        value: "status" (a number per status, legend in ``thresholds``: 0 kept, 1 narrowed,
            2 masked, 4 added; removed modules are not in the current graph) or "macs_saved"
            (MACs per example the module lost, base less current; a gradient colours them).
        graph_id: wrap the data as ``{graph_id: data}`` (Model Explorer's per-graph form).

    Returns:
        A JSON-ready dict with Model Explorer's fields only (``results``, and ``thresholds``
        or ``gradient``); the status legend is :data:`STATUS_VALUES`. ``json.dump`` it to a
        file and load it in Model Explorer's "Node data" panel.

    Raises:
        PrunescopeError: an unknown ``value``; FileError: an unreadable ONNX file.
    """
    from core.errors import PrunescopeError

    if value not in VALUES:
        raise PrunescopeError(f"value must be one of {list(VALUES)}, got {value!r}")
    present = {n.name: n for n in diff.nodes if n.after is not None}
    keys = onnx_keys(onnx_path, set(present))
    results = {}
    for name, tensors in keys.items():
        n = present[name]
        v = STATUS_VALUES[n.status] if value == "status" else (n.before.macs if n.before else 0) - n.after.macs
        for t in tensors:
            results[t] = {"value": v}
    data: dict = {"results": results}
    if value == "status":
        data["thresholds"] = [{"value": v, "bgColor": STATUS_COLOURS[s]} for s, v in STATUS_VALUES.items()]
    else:
        data["gradient"] = [{"stop": 0, "bgColor": "#f7f7f7"}, {"stop": 1, "bgColor": "#d7191c"}]
    return {graph_id: data} if graph_id else data


__all__ = ["to_model_explorer", "onnx_keys", "STATUS_VALUES", "STATUS_COLOURS", "VALUES"]
