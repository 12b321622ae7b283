"""Metrics: quality on the eval set (``evaluator.py``), cost by architecture (``cost.py``)
and per-layer tables against the base (``layers.py``)."""
from core.metrics.cost import (
           Latency,
           arch_signature,
           count_macs,
           layer_macs,
           measure_latency,
           nonzero_counts,
           state_dict_bytes,
)
from core.metrics.evaluator import Evaluator, Metrics, QualitySums, quality_sums
from core.metrics.layers import LayerSparsity, layer_sparsity, leaf_rows, shape_changes

__all__ = ["Metrics", "Evaluator", "QualitySums", "quality_sums", "Latency", "arch_signature", "nonzero_counts",
           "count_macs", "state_dict_bytes", "measure_latency", "layer_macs", "LayerSparsity", "layer_sparsity",
           "leaf_rows", "shape_changes"]
