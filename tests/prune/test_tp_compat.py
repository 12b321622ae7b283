"""The Torch-Pruning internals our adapter (core/prune/structured/tp_compat.py) relies on
exist in the installed Torch-Pruning: an upgrade that renames one fails here, loudly,
not deep inside a prune."""
from __future__ import annotations

import functools
import importlib
from importlib.metadata import version

import pytest
import torch
from torch import nn

from core.prune.structured import tp_compat


def test_the_installed_torch_pruning_is_in_the_tested_range():
    from packaging.specifiers import SpecifierSet

    assert version("torch-pruning") in SpecifierSet(tp_compat.TESTED_VERSIONS), (
        f"torch-pruning {version('torch-pruning')} is outside the range the adapter is tested with "
        f"({tp_compat.TESTED_VERSIONS}); check tp_compat.py against it, then widen the range here and in pyproject")


@pytest.mark.parametrize(("module", "path"), tp_compat.PRIVATE_NAMES, ids=lambda v: v)
def test_each_internal_name_the_adapter_uses_exists(module, path):
    obj = importlib.import_module(module)
    functools.reduce(getattr, path.split("."), obj)  # AttributeError names what is gone


def _tp_graph():
    import torch_pruning as tp

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, 1, 8, 8), verbose=False), model


def test_torch_prunings_own_build_sets_the_graph_attributes_the_adapter_sets_in_its_place():
    dg, _ = _tp_graph()
    missing = [a for a in tp_compat.GRAPH_ATTRS if not hasattr(dg, a)]
    assert not missing, f"Torch-Pruning's build_dependency no longer sets {missing}"


def test_the_private_attributes_of_torch_prunings_objects_still_exist():
    from torch_pruning.dependency.group import Group
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    objs = {"_FlattenIndexMapping": _FlattenIndexMapping(stride=2), "Group": Group()}
    for cls, attr in tp_compat.OBJECT_ATTRS:
        assert hasattr(objs[cls], attr), f"{cls}.{attr} is gone"


def test_the_adapters_graph_gives_the_groups_torch_pruning_gives():
    import torch_pruning as tp

    dg, model = _tp_graph()
    safe = tp_compat.trace_graph(model, torch.zeros(1, 1, 8, 8), {}, lambda *a: None, 1 << 16)
    assert safe.unmapped == {}

    def items(g):
        return sorted((str(it.dep.target.module), sorted(it.idxs), sorted(it.root_idxs))
                      for it in g.get_pruning_group(model[0], tp.prune_conv_out_channels, [1, 2]))

    assert items(safe) == items(dg) and len(items(dg)) >= 3  # the conv, the ReLU, the Linear's columns


def test_the_graph_of_a_deep_model_copies_past_pythons_default_recursion_limit():
    import sys

    layers = [m for _ in range(200) for m in (nn.Linear(4, 4), nn.ReLU())]  # 400 nodes in one chain
    model = nn.Sequential(*layers, nn.Linear(4, 2)).eval()
    dg = tp_compat.trace_graph(model, torch.zeros(1, 4), {}, lambda *a: None, 1 << 16)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Python's default: fcn_resnet50's graph went past it
    try:
        copy, graph = tp_compat.copy_graph(dg)
    finally:
        sys.setrecursionlimit(max(limit, sys.getrecursionlimit()))
    assert copy is not model and graph.model is copy and len(graph.module2node) == len(dg.module2node)
