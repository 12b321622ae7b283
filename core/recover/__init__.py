"""Recovery and compression after an edit: fine-tuning and distillation, and Heal, its preset
for the seams after surgery (``training.py``: the one training loop),
int8 quantisation with onnxruntime (``quantize.py``)."""
from core.recover.gradual import cubic_schedule, gradual_steps
from core.recover.quantize import MODES, SCHEMES, OrtModule, Quantize, quantize_int8
from core.recover.training import (
           LOSSES,
           SCHEDULES,
           TRAIN,
           TRAIN_MODES,
           Finetune,
           Heal,
           distill_loss,
           finetune,
           trainable_parameters,
           weight_masks,
)

__all__ = ["gradual_steps", "cubic_schedule", "Quantize", "OrtModule", "quantize_int8", "SCHEMES", "MODES", "Finetune",
           "Heal", "finetune", "trainable_parameters", "weight_masks", "distill_loss", "TRAIN", "LOSSES", "SCHEDULES",
           "TRAIN_MODES"]
