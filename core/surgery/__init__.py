"""Layer surgery: a model as a sequence of blocks, cut and paste them, heal the seams.

* ``blocks.py``: containers, block names and tracing (:func:`list_blocks`);
* ``choice.py``: the default container (:func:`default_container`);
* ``bridges.py``: the adapters at seams, fitted by ridge least squares;
* ``stitch.py``: the one engine (:func:`stitch`) behind every edit;
* ``steps.py``: the ``Cut``, ``Paste`` and ``Compose`` plan steps;
* ``healing.py``: what healing trains (adapters and their neighbours; the ``Heal`` step is a
  preset of ``core.recover.Finetune``);
* ``guides.py``: influence, CKA, drop-one accuracy and a suggested cut.
"""
from core.surgery.blocks import (
           Block,
           block_names,
           container_candidates,
           get_module,
           list_blocks,
           split_block,
)
from core.surgery.bridges import Bridge, fit_bridge, make_bridge, ridge_lstsq
from core.surgery.choice import default_container
from core.surgery.healing import HEAL_TRAIN, adapters, heal_parameters
from core.surgery.steps import Compose, Cut, Paste, Segment, duplicate_steps, paste_steps
from core.surgery.stitch import BRIDGES, Piece, paired_inputs, stitch

__all__ = ["Block", "Bridge", "Cut", "Paste", "Compose", "Segment", "Piece", "BRIDGES", "HEAL_TRAIN",
           "list_blocks", "default_container", "container_candidates", "block_names", "stitch",
           "heal_parameters", "adapters", "make_bridge", "fit_bridge", "ridge_lstsq", "paired_inputs",
           "get_module", "split_block", "paste_steps", "duplicate_steps"]
