"""Files in and out: export formats, reading exports back, Netron (atomic writes: ``core.ground.files``).

* ``exporters.py``: the export format registry and the four formats;
* ``export.py``: writing a verified export with its recipe beside it;
* ``recipes.py``: reading an export's recipe, rebuilding the model (``load``);
* ``netron.py``: Netron views of one file each, on 127.0.0.1.
"""
from core.io.export import ExportResult, export_all, export_model, recipe_path, state_dict_hash
from core.io.exporters import EXPORTERS, Exporter, list_exporters, register_exporter
from core.io.recipes import load, read_recipe

__all__ = ["ExportResult", "export_model", "export_all", "recipe_path", "state_dict_hash", "EXPORTERS", "Exporter",
           "list_exporters", "register_exporter", "load", "read_recipe"]
