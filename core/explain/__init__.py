"""Explain: what an edit changed (examples, confusion, where the network departs from the
base), one unit seen from inside, and which input pixels a prediction rests on."""
from core.explain.attribution import attribution_pair, grad_cam, input_gradient, last_feature_map
from core.explain.boxes import BoxChanges, box_changes
from core.explain.dense import DenseChanges, dense_changes
from core.explain.effects import MAX_CONFUSION_CLASSES, Changes, changes, divergence
from core.explain.flow import FlowChanges, flow_changes, flow_leaf
from core.explain.graphdiff import STATUSES, DiffNode, GraphDiff, NodeFigures, graph_diff
from core.explain.model_explorer import to_model_explorer
from core.explain.units import coupled_group, layer_order, receptive_box, unit_activations, unit_report

__all__ = ["DenseChanges", "dense_changes", "FlowChanges", "flow_changes", "flow_leaf", "BoxChanges", "box_changes",
           "MAX_CONFUSION_CLASSES", "Changes", "changes", "divergence", "coupled_group", "layer_order", "receptive_box",
           "unit_activations", "unit_report", "input_gradient", "last_feature_map", "grad_cam", "attribution_pair",
           "STATUSES", "DiffNode", "GraphDiff", "NodeFigures", "graph_diff", "to_model_explorer"]
