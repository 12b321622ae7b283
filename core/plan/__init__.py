"""Plans: every edit is a step, a plan is a list of steps, and a plan builds a model.

* ``step.py``: the step contract (``build(model, ctx) -> (model, StepReport)``) and the
  registry of step kinds;
* ``constraints.py``: field constraints declared on the steps, checked in one place;
* ``report.py``: what a step decided (:class:`StepReport`);
* ``plan.py``: :class:`Plan` and its JSON recipe (``prunescope.plan/1``);
* ``build.py``: building a plan's model, with a prefix cache.

Step kinds live with their concept (``core.prune.step.Prune``, ``core.surgery.steps``)
and register themselves when imported: ``plan`` knows no step kind. The entry points
(``core.startup.register_all``) make them all known before a recipe is read.
"""
from core.ground.constraints import Fraction, Interval, Items, Name, Options, Seed
from core.plan.build import ApplyContext, PlanCache, apply, apply_with_reports
from core.plan.plan import FORMAT, MAX_STEPS, Plan
from core.plan.report import Seam, StepReport
from core.plan.step import STEPS, Step, list_steps, register_step

__all__ = ["ApplyContext", "PlanCache", "apply", "apply_with_reports", "Plan", "FORMAT", "MAX_STEPS", "Step",
           "STEPS", "register_step", "list_steps", "StepReport", "Seam", "Fraction", "Interval", "Items", "Name",
           "Options", "Seed"]
