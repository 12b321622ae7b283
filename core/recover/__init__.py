"""Recovery and compression after an edit: fine-tuning and distillation (``training.py``),
int8 quantisation with onnxruntime (``quantize.py``)."""
from .quantize import MODES, SCHEMES, OrtModule, Quantize, quantize_int8
from .training import LOSSES, SCHEDULES, TRAIN, Finetune, distill_loss, finetune, trainable_parameters, weight_masks

__all__ = ["Quantize", "OrtModule", "quantize_int8", "SCHEMES", "MODES", "Finetune", "finetune", "trainable_parameters", "weight_masks", "distill_loss", "TRAIN", "LOSSES",
           "SCHEDULES"]
