"""Helpers for export tests: a plan with every kind of change, and exporters that fail."""
from __future__ import annotations

import torch

from core.io import Exporter
from core.plan import Plan
from core.prune import Prune

STRUCTURED = {"digits_mlp": "neuron", "digits_cnn": "channel", "digits_resnet": "channel", "digits_vit": "head"}
CUT = {"digits_mlp": ("layers.3", "layers.4"), "digits_cnn": ("features.2",), "digits_resnet": ("layers.3",),
       "digits_vit": ("blocks.1",)}


def full_plan(name: str) -> Plan:
    """Weight pruning, then structured pruning, then a cut: every kind of change."""
    from core.surgery import Cut

    return Plan(name, (Prune(sparsity=0.5), Prune(granularity=STRUCTURED[name], sparsity=0.25),
                       Cut(blocks=CUT[name])))


class HalfWrite(Exporter):
    """Writes part of a file, then fails like a full disk."""

    name, suffix = "torchscript", ".pt"

    def write(self, model, example, path, plan):
        path.write_bytes(b"half a file")
        raise OSError("No space left on device")

    def reload(self, path, device):
        raise AssertionError("never reached")


class WrongOutputs(Exporter):
    """Writes a file whose reloaded model gives different outputs."""

    name, suffix = "torchscript", ".pt"

    def write(self, model, example, path, plan):
        path.write_bytes(b"something")

    def reload(self, path, device):
        return lambda x: torch.zeros(x.shape[0], 3)
