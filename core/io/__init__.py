"""Files in and out: export formats, reading exports back, Netron (atomic writes: ``core.ground.files``).

* ``exporters.py``: the export format registry and the four formats;
* ``export.py``: writing a verified export with its recipe beside it;
* ``hf_export.py`` / ``hf_shapes.py``: the ``hf`` format, a folder transformers loads alone (what its
  config can say, the nearest loadable plan);
* ``recipes.py``: reading an export's recipe, rebuilding the model (``load``);
* ``netron.py``: Netron views of one file each, on 127.0.0.1.
"""
from core.io.export import ExportResult, export_all, export_model, recipe_path, state_dict_hash
from core.io.exporters import EXPORTERS, Exporter, list_exporters, register_exporter
from core.io.hf_export import HF_FORMAT
from core.io.hf_shapes import NotLoadableError, loadable_plan
from core.io.recipes import load, read_recipe

__all__ = ["ExportResult", "export_model", "export_all", "recipe_path", "state_dict_hash", "EXPORTERS", "Exporter",
           "list_exporters", "register_exporter", "load", "read_recipe", "HF_FORMAT", "loadable_plan",
           "NotLoadableError"]
