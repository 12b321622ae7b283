"""Our walk over an ONNX model's tensors matches onnx's own (private) one, so an onnx
release that changes where tensors live fails here, not in an export with external data."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from core.io.exporters import onnx_tensors  # noqa: E402


def _model_with_subgraphs_and_functions():
    """Initializers in the graph and in an If's branches, a Constant's tensor attribute in a
    branch, and a local function holding a Constant."""
    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.float32)))

    then_g = helper.make_graph([const("t_out", [1.0]), helper.make_node("Add", ["t_out", "t_init"], ["o"])], "then",
                               [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])],
                               initializer=[numpy_helper.from_array(np.array([2.0], np.float32), "t_init")])
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])
    else_g = helper.make_graph([const("o", [3.0])], "else", [], [out])
    add = helper.make_node("Add", ["x", "c"], ["y"])
    fn = helper.make_function("local", "F", ["x"], ["y"], [const("c", [4.0]), add],
                              [helper.make_opsetid("", 18)])
    nodes = [helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g),
             helper.make_node("F", ["r"], ["out"], domain="local")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
                              initializer=[numpy_helper.from_array(np.array([5.0], np.float32), "w")])
    return helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 18),
                                                                   helper.make_opsetid("local", 1)])


def test_onnx_tensors_finds_graph_subgraph_attribute_and_function_tensors():
    tensors = onnx_tensors(_model_with_subgraphs_and_functions())
    got = sorted(float(numpy_helper.to_array(t).ravel()[0]) for t in tensors)
    assert got == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_onnx_tensors_match_onnx_own_private_walk_while_onnx_has_it():
    from onnx import external_data_helper

    private = getattr(external_data_helper, "_get_all_tensors", None)
    if private is None:
        pytest.skip("this onnx has no _get_all_tensors: our walk is the only one")
    m = _model_with_subgraphs_and_functions()
    assert [t.SerializeToString() for t in onnx_tensors(m)] == [t.SerializeToString() for t in private(m)]
