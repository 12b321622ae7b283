"""The one place that uses Torch-Pruning's internals: its dependency graph, made safe.

What it wraps, and why. Torch-Pruning's ``DependencyGraph.build_dependency`` maps channel
indices through every reshape, concatenation, split, ... of the traced model, and its
``get_pruning_group`` follows a group through those mappings. Both raise (or run out of
memory: chained reshapes of window attention read as flattens multiply the indices) on
an operation they cannot map, which would make a whole model unprunable. The graph made
here (:func:`trace_graph`) is Torch-Pruning's, with

* its ``build_dependency`` rewritten for the arguments we use (our opaque modules' pruners,
  their tie hooks, its failures turned into a :class:`~core.errors.ModelError`);
* ``update_index_mapping`` that marks an operation it cannot map (``graph.unmapped``)
  instead of raising;
* ``get_pruning_group`` that refuses, with :class:`Unmapped`, a group passing through such
  an operation, or growing past a bound, so the group is left out with its reason.

Those copies call Torch-Pruning's private names (:data:`PRIVATE_NAMES`, and the graph
attributes in :data:`GRAPH_ATTRS`), checked for the tested versions
(:data:`TESTED_VERSIONS`, the range pinned in ``pyproject.toml``) by
``tests/prune/test_tp_compat.py``: an upgrade that renames one fails there, not deep in
a prune. torch_pruning is imported on first use, not with this module.
"""
from __future__ import annotations

import copy
import sys
import types
from collections.abc import Callable

import torch
from torch import nn

from core.errors import FOREIGN_ERRORS, ModelError, first_line
from core.sources.bases import autograd_caches

DEEP_COPY_LIMIT = 20_000  # Python frames a graph copy may need (copy_graph)
TESTED_VERSIONS = ">=1.6,<1.7"  # the torch-pruning versions this adapter is tested with (pyproject pins them)

# (module, attribute path) of every private or internal name used below
PRIVATE_NAMES = (
    ("torch_pruning", "DependencyGraph._trace"),
    ("torch_pruning", "DependencyGraph._build_dependency"),
    ("torch_pruning", "DependencyGraph._detect_unwrapped_parameters"),
    ("torch_pruning", "DependencyGraph.register_customized_layer"),
    ("torch_pruning._helpers", "_HybridIndex"),
    ("torch_pruning._helpers", "GroupItem"),
    ("torch_pruning._helpers", "to_plain_idxs"),
    ("torch_pruning._helpers", "to_root_idxs"),
    ("torch_pruning.dependency.index_mapping", "_FlattenIndexMapping"),
    ("torch_pruning.dependency.index_mapping", "update_concat_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_split_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_reshape_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_unbind_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_expand_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_slice_index_mapping"),
    ("torch_pruning.dependency.shape_infer", "init_shape_information"),
    ("torch_pruning.dependency.dependency", "Dependency"),
    ("torch_pruning.dependency.group", "Group"),
    ("torch_pruning.pruner.function", "prune_depthwise_conv_out_channels"),
    ("torch_pruning.ops", "OPTYPE"),
    ("torch_pruning.ops", "TORCH_CONV"),
)
# attributes Torch-Pruning's own build_dependency sets and its groups read (we set them instead),
# and the private attributes of its objects read below
GRAPH_ATTRS = ("_module2name", "_param_to_name", "ignored_params", "IGNORED_LAYERS_IN_TRACING", "module2node",
               "unwrapped_parameters", "REGISTERED_PRUNERS", "CUSTOMIZED_PRUNERS")  # the last two: copy_graph
OBJECT_ATTRS = (("_FlattenIndexMapping", "_stride"), ("Group", "_DG"))


class TorchPruningFailed(Exception):
    """Torch-Pruning could not follow or prune a group of the person's model (raised only
    around its own calls, chained to what it raised): the group is left out with this
    reason. Nothing else a group's pruning raises is caught."""


class Unmapped(TorchPruningFailed):
    """A group passes through an operation whose channel mapping Torch-Pruning could not make."""

    def __init__(self, node, reason: str):
        fn = getattr(node, "grad_fn", None)
        op = fn.name() if hasattr(fn, "name") else getattr(node, "name", type(node).__name__)
        super().__init__(f"Torch-Pruning cannot map channels through {op} ({reason})")


def trace_graph(model: nn.Module, example: torch.Tensor, custom: dict, tie_hook: Callable,
                max_indices: int):
    """Torch-Pruning's dependency graph of ``model``, traced on ``example`` (grad enabled).

    Args:
        model: a private copy (hooks are added for the trace and removed).
        example: the example batch.
        custom: module class -> Torch-Pruning pruner, for modules seen as one node.
        tie_hook: a forward hook tying such a module's output to its input (one autograd node).
        max_indices: a group whose channel indices multiply past this (and 64 per root
            channel) is left out (:class:`Unmapped`).

    Returns:
        The graph; ``graph.unmapped`` maps each operation it could not map to the reason.

    Raises:
        ModelError: Torch-Pruning cannot trace the model.
    """
    dg = _graph_class()()
    dg.max_indices = max_indices
    return _build(dg, model, example, custom, tie_hook)


_GRAPH_CLASS = None


def _graph_class():
    """``DependencyGraph`` with the two methods below (made once: torch_pruning imports lazily)."""
    global _GRAPH_CLASS
    if _GRAPH_CLASS is None:
        import torch_pruning as tp

        _GRAPH_CLASS = type("SafeGraph", (tp.DependencyGraph,), {
            "__doc__": "Torch-Pruning's graph; ``unmapped``: op node -> why it could not map channels through it.",
            "update_index_mapping": _update_index_mapping,
            "get_pruning_group": _get_pruning_group})
    return _GRAPH_CLASS


def _build(self, model: nn.Module, example, custom: dict, tie_hook: Callable):
    """Torch-Pruning's ``DependencyGraph.build_dependency`` for the arguments used here, with
    the safe index mapping update."""
    from torch_pruning.dependency import shape_infer

    self.verbose = False
    self.model = model
    self._module2name = {m: n for n, m in model.named_modules()}
    self.ignored_params = []
    self.unmapped = {}
    for cls, pruner in custom.items():
        self.register_customized_layer(cls, pruner)
    inner = [s for m in model.modules() if type(m) in custom for s in m.modules() if s is not m]
    self.IGNORED_LAYERS_IN_TRACING.extend(inner)
    self._param_to_name, self.unwrapped_parameters = self._detect_unwrapped_parameters(None)
    assert torch.is_grad_enabled(), "the dependency graph is traced through autograd"
    ties = [m.register_forward_hook(tie_hook) for m in model.modules() if type(m) in custom]
    try:  # Torch-Pruning tracing the person's model: its failures are the model's
        self.module2node = self._trace(model, example, None, output_transform=None)
        self._build_dependency(self.module2node)
        shape_infer.init_shape_information(self)
    except FOREIGN_ERRORS as exc:
        raise ModelError(f"Torch-Pruning cannot trace the model's dependency graph "
                         f"({type(exc).__name__}: {first_line(exc)[:200]})") from exc
    finally:
        for t in ties:
            t.remove()
    self.update_index_mapping()
    return self


def copy_graph(dg) -> tuple[nn.Module, object]:
    """(copy of the graph's model, its graph): ``dg`` and the model it was traced on, deep-copied
    together, so the copy's nodes, dependencies and names point at the copy's modules and
    parameters. What the graph only reads is shared rather than copied: the autograd nodes
    of the trace, Torch-Pruning's pruners (stateless singletons whose bound methods are the
    dependencies' handlers) and module objects. Much cheaper than tracing the copy again
    (a forward pass with autograd), and the same graph: tracing is deterministic on the same
    model. The copy is pruned; ``dg`` and its model are left as they were."""
    shared: list = [v for v in vars(dg).values() if isinstance(v, types.ModuleType)]
    shared += list(dg.REGISTERED_PRUNERS.values()) + list(dg.CUSTOMIZED_PRUNERS.values())
    for node in dg.module2node.values():
        shared.append(node.grad_fn)
        for dep in node.dependencies:
            shared += [getattr(dep.handler, "__self__", None), getattr(dep.trigger, "__self__", None)]
    shared += autograd_caches(dg.model)  # a forward's cache on a module (RAFT's correlation pyramid): never pruned
    memo = {id(x): x for x in shared if x is not None}
    # the nodes link to their inputs and outputs, so the copy recurses along the graph's longest path: deeper
    # than Python's default limit of 1,000 frames on a segmenter such as fcn_resnet50 (RecursionError). Python
    # calls between Python functions use no C stack (3.11+), so a higher limit is safe. It is raised for the
    # process and left so: lowering it back could break a copy running in another thread (sweeps run in threads).
    if sys.getrecursionlimit() < DEEP_COPY_LIMIT:
        sys.setrecursionlimit(DEEP_COPY_LIMIT)
    return copy.deepcopy((dg.model, dg), memo)


def _updates() -> dict:
    from torch_pruning import ops
    from torch_pruning.dependency import index_mapping as im

    return {ops.OPTYPE.CONCAT: im.update_concat_index_mapping, ops.OPTYPE.SPLIT: im.update_split_index_mapping,
            ops.OPTYPE.RESHAPE: im.update_reshape_index_mapping, ops.OPTYPE.UNBIND: im.update_unbind_index_mapping,
            ops.OPTYPE.EXPAND: im.update_expand_index_mapping, ops.OPTYPE.SLICE: im.update_slice_index_mapping}


def _update_index_mapping(self) -> None:
    """Torch-Pruning's index mapping update; an operation it cannot map is marked, not raised."""
    updates = _updates()
    for node in list(self.module2node.values()):
        fn = updates.get(node.type)
        if fn is None:
            continue
        try:
            fn(self, node)
        except FOREIGN_ERRORS as exc:  # an operation it cannot map: groups through it are left out
            for dep in node.dependencies:
                dep.index_mapping = [None, None]
            self.unmapped.setdefault(node, f"{type(exc).__name__}: {str(exc).strip()[:120]}")


def _get_pruning_group(self, module: nn.Module, pruning_fn, idxs):
    """Torch-Pruning's ``get_pruning_group``, with the safe update and a check that the group
    does not pass through an operation whose channels it could not map (:class:`Unmapped`)."""
    from torch_pruning import _helpers, ops
    from torch_pruning.dependency.dependency import Dependency
    from torch_pruning.dependency.group import Group
    from torch_pruning.pruner import function

    if module not in self.module2node:
        raise ValueError(f"module {module} is not in the dependency graph")
    if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
        pruning_fn = function.prune_depthwise_conv_out_channels
    limit = max(self.max_indices, 64 * len(idxs))
    max_total = max(16 * limit, 4 * len(idxs) * len(self.module2node))  # indices the group may hold
    idxs = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
    self.update_index_mapping()
    group = Group()
    root_node = self.module2node[module]
    group.add_dep(dep=Dependency(pruning_fn, pruning_fn, source=root_node, target=root_node), idxs=idxs)
    _follow(self, group, root_node, limit, max_total)
    merged = Group()
    for dep, hybrid in group.items:
        if isinstance(dep.target.module, nn.Parameter) and any(dep.target.module is p for p in self.ignored_params):
            continue
        merged.add_and_merge(dep, hybrid)
    merged._DG = self
    for i in range(len(merged)):
        hybrid = merged[i].idxs
        item = _helpers.GroupItem(merged[i].dep, _helpers.to_plain_idxs(hybrid))
        item.root_idxs = _helpers.to_root_idxs(hybrid)
        merged[i] = item
    return merged


def _follow(self, group, root_node, limit: int, max_total: int) -> None:
    """Add to ``group`` every dependency its root's indices trigger, depth first."""
    visited = set()
    stack = [(group[0].dep, group[0].idxs)]
    budget = 8 * len(self.module2node) + 1000  # a group visits each node a few times at most
    total = 0  # indices held by the group so far: its memory
    while stack:
        budget -= 1
        if budget < 0:  # e.g. grouped-query attention's repeat_kv: the indices cycle without end
            raise Unmapped(root_node, "its channel mapping does not settle (the group keeps "
                                      "growing through the same operations)")
        dep, idxs = stack.pop(-1)
        node, fn = dep.target, dep.handler
        visited.add(node)
        if node in self.unmapped:
            raise Unmapped(node, self.unmapped[node])
        for new_dep in node.dependencies:
            if not new_dep.is_triggered_by(fn):
                continue
            new_idxs = _map(new_dep, idxs, limit)
            if len(new_idxs) == 0:
                continue
            if new_dep.target in visited and group.has_pruning_op(new_dep, new_idxs):
                continue
            total += len(new_idxs)
            if total > max_total:
                raise Unmapped(new_dep.target, f"the group grows past {max_total:,} channel indices")
            group.add_dep(new_dep, new_idxs)
            stack.append((new_dep, new_idxs))


def _map(dep, idxs: list, limit: int) -> list:
    """``idxs`` through ``dep``'s index mappings (Torch-Pruning's), refusing a blow-up."""
    from torch_pruning.dependency import index_mapping as im

    new_idxs = idxs
    for mapping in dep.index_mapping:
        if mapping is None:
            continue
        if isinstance(mapping, im._FlattenIndexMapping) and not mapping.reverse \
                and len(new_idxs) * mapping._stride > limit:
            # chained reshapes (window partitions) read as flattens: the indices
            # multiply until memory runs out; this group cannot be followed
            raise Unmapped(dep.target, f"its reshapes multiply {len(idxs)} channels past {limit:,} indices")
        try:  # Torch-Pruning's index mapping
            new_idxs = mapping(new_idxs)
        except FOREIGN_ERRORS as exc:
            raise Unmapped(dep.target, f"{type(exc).__name__}: {first_line(exc)[:120]}") from exc
    return new_idxs


__all__ = ["trace_graph", "copy_graph", "TorchPruningFailed", "Unmapped", "TESTED_VERSIONS", "PRIVATE_NAMES",
           "GRAPH_ATTRS", "OBJECT_ATTRS"]
