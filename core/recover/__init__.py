"""Recovery after an edit: fine-tuning and distillation (``training.py``)."""
from .training import LOSSES, SCHEDULES, TRAIN, Finetune, distill_loss, finetune, trainable_parameters, weight_masks

__all__ = ["Finetune", "finetune", "trainable_parameters", "weight_masks", "distill_loss", "TRAIN", "LOSSES",
           "SCHEDULES"]
