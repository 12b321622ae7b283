"""Metrics: quality on the eval set (``evaluator.py``) and cost by architecture (``cost.py``)."""
from core.metrics.cost import Latency, arch_signature, count_macs, layer_macs, measure_latency, nonzero_counts, state_dict_bytes
from core.metrics.evaluator import Evaluator, Metrics, QualitySums, quality_sums

__all__ = ["Metrics", "Evaluator", "QualitySums", "quality_sums", "Latency", "arch_signature", "nonzero_counts", "count_macs", "state_dict_bytes",
           "measure_latency", "layer_macs"]
