"""Structured pruning: neurons, channels and attention heads physically removed.

* ``graph.py``: Torch-Pruning's dependency graph and the unit groups read from it (groups
  it cannot follow are left out, with the reason);
* ``swin.py``: modules the graph sees as one node, with their own pruner (torchvision's
  Swin window attention and patch merging);
* ``scores.py``: per-unit scores, combined per group and normalised;
* ``select.py``: which units a step removes;
* ``analysis.py``: a source model analysed once (memoised in the apply context);
* ``prune.py``: removing the units from a copy (checked to run; groups that break it are
  left out), and the step's report;
* ``compare.py``: the criteria comparison on one layer.
"""
from core.prune.structured.analysis import (
    Analysis,
    all_unit_scores,
    analysis,
    granularities,
    group_info,
    group_of,
    prunable_units,
    select_units,
    unit_scores,
)
from core.prune.structured.compare import compare_criteria
from core.prune.structured.graph import UNIT_GRANULARITIES, UnitGroup
from core.prune.structured.prune import remove_units, structured_prune_step
from core.prune.structured.select import Selection, find_group

__all__ = ["granularities", "UNIT_GRANULARITIES", "Analysis", "analysis", "UnitGroup", "Selection", "prunable_units",
           "group_info", "group_of", "find_group", "all_unit_scores", "unit_scores", "select_units", "compare_criteria",
           "remove_units", "structured_prune_step"]
