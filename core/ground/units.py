"""What one prune decision removes, by name (plain data, no torch, so the command line can
offer the choices without loading the engine): a single weight (a mask), or a whole neuron,
channel or attention head (physically removed with everything coupled to it)."""
from __future__ import annotations

UNIT_GRANULARITIES = ("neuron", "channel", "head")  # what one structured decision removes
GRANULARITIES = ("weight", *UNIT_GRANULARITIES)  # what a prune step can remove

__all__ = ["GRANULARITIES", "UNIT_GRANULARITIES"]
