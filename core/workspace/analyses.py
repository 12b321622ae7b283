"""What the workspace hands the analysis layer and keeps from it.

The analysis layer (the surgery guides, the sensitivity sweeps, automatic plans, explain)
takes what it reads: a model, the evaluator, the apply context, a plan. :class:`Analyses`
is the part of :class:`~core.workspace.Workspace` that hands over its own (the current
plan's model, its evaluator and context) and keeps the finished sweeps in ``sweeps``,
published in one step (:meth:`Analyses.keep_sweep`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from core.errors import PrunescopeError
from core.sensitivity.sweep import DEFAULT_AMOUNTS
from core.sensitivity.tries import DEFAULT_TRIES

if TYPE_CHECKING:
    from core.explain import Changes
    from core.sensitivity import AutoPlan, Curves, Sensitivity, SweepSpec
    from core.sensitivity.runner import Payload


class Analyses:
    """The Workspace's analysis methods. The class using it provides ``model``, ``base``,
    ``plan``, ``reports``, ``name``, ``evaluator``, ``ctx``, ``sweeps``, ``evaluate_plan``
    and ``base_metrics`` (see :class:`~core.workspace.Workspace`)."""

    def keep_sweep(self, key: tuple, result: object) -> None:
        """Keep a finished sweep in :attr:`sweeps`, published in one step: a new dict
        replaces the old one, so a reader iterating over the old one never sees it change."""
        self.sweeps = {**self.sweeps, key: result}

    def granularities(self) -> list[str]:
        """What this model can be pruned by: "weight" plus each unit granularity its base has
        prunable units of (``core.prune.structured.granularities``, memoised)."""
        from core.prune.structured import granularities

        return granularities(self.base, self.ctx)

    # Analysis of the current model: the analysis layer takes (model, data, context); the
    # workspace hands it its own.

    def guides(self, container: str | None = None, seed: int = 0, progress: Callable | None = None):
        """The surgery guides of the current model (``core.surgery.guides.compute_guides``:
        influence, CKA, drop-one accuracy), cached with the model."""
        from core.surgery.guides import compute_guides

        return compute_guides(self.model, self.evaluator, self.ctx, container, seed, progress, name=self.name)

    def cached_guides(self, container: str | None = None, seed: int = 0):
        """The guides already computed for the current model, else None (free)."""
        from core.surgery.guides import cached_guides

        return cached_guides(self.model, self.ctx, container, seed, name=self.name)

    def suggest_cut(self, k: int = 1, container: str | None = None, seed: int = 0) -> dict:
        """The ``k`` blocks of the current model whose removal costs least
        (``core.surgery.guides.suggest_cut``)."""
        from core.surgery.guides import suggest_cut

        return suggest_cut(self.model, self.evaluator, self.ctx, k, container, seed, name=self.name)

    # Sensitivity: the sweeps run on the current plan's model; the workspace keeps the finished
    # ones in ``sweeps`` (published in one step, ``keep_sweep``).

    def layer_names(self, granularity: str) -> list[str]:
        """The layers a sweep of the current model visits (``core.sensitivity.layer_names``).

        Raises:
            PrunescopeError: an unknown granularity, or one the model has no units of.
        """
        from core.sensitivity import layer_names

        return layer_names(self.model, granularity, self.ctx)

    def sensitivity_spec(self, criterion: str = "l1", granularity: str = "weight", amounts=DEFAULT_AMOUNTS,
                         subset: str = "quick", *, layers: list[str] | None = None, shards: int = 1,
                         seed: int = 0, stop_harm: float | None = None) -> SweepSpec:
        """A sensitivity sweep of the current plan's model, checked; runs nothing
        (``core.sensitivity.sensitivity_spec``). With :meth:`sweep_payload` it is the
        snapshot a background job runs (``core.sensitivity.run_sweep``); a complete result is
        kept with ``keep_sweep(spec.key, result)``.

        Raises:
            PrunescopeError: see :meth:`sensitivity`.
        """
        from core.sensitivity import sensitivity_spec

        return sensitivity_spec(self.model, self.ctx, self.plan, criterion, granularity, amounts, subset,
                                layers=layers, shards=shards, seed=seed, stop_harm=stop_harm)

    def curves_spec(self, criteria, granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick", *,
                    seed: int = 0) -> SweepSpec:
        """A criteria comparison on the current plan's model, checked; runs nothing
        (``core.sensitivity.curves_spec``; see :meth:`sensitivity_spec`).

        Raises:
            PrunescopeError: see :meth:`criteria_curves`.
        """
        from core.sensitivity import curves_spec

        return curves_spec(self.model, self.ctx, self.plan, criteria, granularity, amounts, subset, seed=seed)

    def sweep_payload(self, spec: SweepSpec) -> Payload:
        """What a sweep of ``spec`` runs on, taken now: a copy of the current model, the
        subset, the base's outputs and the calibration batch (``core.sensitivity.payload_for``).

        Raises:
            PrunescopeError: the plan is not ``spec``'s, or ends in a quantize step.
        """
        from core.sensitivity import payload_for

        if spec.plan != self.plan.key():
            raise PrunescopeError("this sweep was asked for on another plan; ask for it again on the current plan")
        return payload_for(self.model, self.evaluator, self.ctx, spec.subset, spec.seed)

    def _sweep(self, spec: SweepSpec, executor, progress, should_stop):
        """The finished result of ``spec``: kept from before, else run now and kept when complete."""
        from core.sensitivity import run_sweep

        found = self.sweeps.get(spec.key)
        if found is not None:
            return found
        out = run_sweep(spec, self.sweep_payload(spec), executor=executor, progress=progress, should_stop=should_stop)
        if out.complete:
            self.keep_sweep(spec.key, out)
        return out

    def sensitivity(self, criterion: str = "l1", granularity: str = "weight", amounts=DEFAULT_AMOUNTS,
                    subset: str = "quick", *, layers: list[str] | None = None, executor="local", shards: int = 1,
                    seed: int = 0, stop_harm: float | None = None,
                    progress: Callable[[int, int, str], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Sensitivity:
        """Sweep every prunable layer of the current plan's model over ``amounts``, alone
        (``core.sensitivity.sensitivity``: arguments as there). A complete result is kept in
        :attr:`sweeps` per plan, criterion, granularity, amounts, subset and seed, and
        returned again without running; a stopped one (``complete`` False) is not kept.

        Raises:
            PrunescopeError: unknown criterion, granularity, subset or layer; bad amounts or
                shards; a criterion that does not support the granularity; a quantised plan.
        """
        spec = self.sensitivity_spec(criterion, granularity, amounts, subset, layers=layers, shards=shards, seed=seed,
                                     stop_harm=stop_harm)
        return self._sweep(spec, executor, progress, should_stop)

    def criteria_curves(self, criteria, granularity: str = "weight", amounts=DEFAULT_AMOUNTS, subset: str = "quick",
                        *, executor="local", seed: int = 0, progress: Callable[[int, int, str], None] | None = None,
                        should_stop: Callable[[], bool] | None = None) -> Curves:
        """For each criterion, the current model pruned globally at each amount
        (``core.sensitivity.criteria_curves``); a complete result is kept as a sweep's is.

        Raises:
            PrunescopeError: no criterion or an unknown one; unknown granularity or subset; bad
                amounts; a quantised plan.
        """
        return self._sweep(self.curves_spec(criteria, granularity, amounts, subset, seed=seed), executor, progress,
                           should_stop)

    def finished_sweep(self, criterion: str, granularity: str, amounts, subset: str = "quick", *,
                       for_drop: float | None = None) -> Sensitivity | None:
        """The finished sensitivity sweep of the current plan with these settings (any seed
        and layers) that ran every amount of every layer, else None. With ``for_drop`` (points),
        else the one stopped at a budget (``stop_harm``) that an automatic plan for that drop can
        use, the one that went furthest. Free: runs nothing."""
        from core.sensitivity import Sensitivity, sweep_bound

        want = (self.plan.key(), criterion, granularity, tuple(sorted(set(amounts))), subset)
        found = [s for s in self.sweeps.values() if isinstance(s, Sensitivity) and s.complete and (
            s.plan, s.criterion, s.granularity, s.amounts, s.subset) == want]
        full = next((s for s in found if s.stop_harm is None), None)
        if full is not None or for_drop is None:
            return full
        return max((s for s in found if s.stop_harm is not None and s.stop_harm >= sweep_bound(for_drop)),
                   key=lambda s: s.stop_harm, default=None)

    def autoplan(self, *, criterion: str = "l1", granularity: str = "weight", max_drop: float | None = None,
                 max_macs: float | None = None, max_params: float | None = None, max_latency: float | None = None,
                 sens: Sensitivity | None = None, amounts=DEFAULT_AMOUNTS, subset: str = "quick", executor="local",
                 tries: int = DEFAULT_TRIES, progress: Callable[[int, int, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> AutoPlan:
        """Per-layer amounts after the current plan that meet one target, measured on
        ``subset`` (``core.sensitivity.autoplan``). The plan is not changed:
        ``ws.set_plan(result.plan)`` makes the result current.

        Args:
            sens: a sweep of the current plan with this criterion and granularity (else a
                complete one is taken from :attr:`sweeps` (``finished_sweep``), or one is run with ``amounts``,
                ``executor``, ``progress`` and ``should_stop`` and kept; for ``max_drop`` it
                stops each layer at ``core.sensitivity.sweep_bound(max_drop)`` points of changed
                predictions, since larger amounts of it cannot fit the budget).
            progress: the sweep's progress when one runs, then the tries' (``autoplan``'s).
            The others: as ``core.sensitivity.autoplan``.

        Raises:
            PrunescopeError: no target or several; a target out of range; MACs targets with
                weight granularity; a sweep of another plan, or one stopped early.
        """
        from core.sensitivity import autoplan, check_target, sweep_bound

        check_target(granularity, max_drop, max_macs, max_params, max_latency)  # before a sweep runs
        if sens is None:
            sens = self.finished_sweep(criterion, granularity, amounts, subset, for_drop=max_drop) or self.sensitivity(
                criterion, granularity, amounts, subset, executor=executor, progress=progress, should_stop=should_stop,
                stop_harm=None if max_drop is None else sweep_bound(max_drop))
        return autoplan(self.plan, sens, lambda plan, latency: self.evaluate_plan(plan, subset, latency=latency),
                        self.base_metrics(subset, latency=False), criterion=criterion, granularity=granularity,
                        max_drop=max_drop, max_macs=max_macs, max_params=max_params, max_latency=max_latency,
                        tries=tries, progress=progress)

    # Explain: the current model against the base.

    def changes(self, subset: str = "quick") -> Changes:
        """Predictions of the base and the current model on ``subset`` (``core.explain.changes``)."""
        from core.explain import changes

        return changes(self.model, self.evaluator, subset)

    def dense_changes(self, subset: str = "quick", k: int = 6):
        """A segmenter's examples whose class map moved most (``core.explain.dense``)."""
        from core.explain import dense_changes

        return dense_changes(self.model, self.evaluator, subset, k)

    def box_changes(self, subset: str = "quick", k: int = 6):
        """A detector's images whose boxes moved most (``core.explain.boxes``)."""
        from core.explain import box_changes

        return box_changes(self.model, self.evaluator, subset, k)

    def flow_changes(self, subset: str = "quick", k: int = 6):
        """An optical-flow model's examples whose flow moved most (``core.explain.flow``)."""
        from core.explain import flow_changes

        return flow_changes(self.model, self.evaluator, subset, k)

    def divergence(self, subset: str = "quick") -> list[dict]:
        """Linear CKA of each prunable layer's output, base against the current model
        (``core.explain.divergence``).

        Raises:
            PrunescopeError: a quantised plan (no PyTorch modules to compare).
        """
        from core.explain import divergence

        return divergence(self.model, self.evaluator, subset)

    def unit_report(self, layer: str, unit: int, granularity: str = "channel", *, subset: str = "quick",
                    top: int = 12) -> dict:
        """A unit of the base model, and whether the current plan removes it
        (``core.explain.unit_report``).

        Raises:
            PrunescopeError: no such layer or unit.
        """
        from core.explain import unit_report

        return unit_report(self.evaluator, self.ctx, self.plan, self.reports, layer, unit, granularity, subset=subset,
                           top=top)

    def graph_diff(self, profile: bool = False, *, batch: int = 32):
        """Every module of the base against the current model: kept, narrowed, masked, removed or
        added, with parameters, MACs, sparsity, widths and (``profile``) per-module latency
        (``core.explain.graphdiff.graph_diff``), kept in the context's memo of the current model
        (per plan, profile flag and batch)."""
        from core.explain.graphdiff import graph_diff

        current = self._current()
        return graph_diff(self.base, current, self.plan, self.reports, self.evalset.quick()[0], profile=profile,
                          batch=batch, memo=self.ctx.memo(current), model_before=self.model_before, ctx=self.ctx)

    def attribution_pair(self, index: int, method: str = "gradient") -> dict:
        """Attribution maps of the base and the current model for example ``index`` of the
        test split (``core.explain.attribution_pair``).

        Raises:
            PrunescopeError: an unknown method; token inputs; a quantised plan.
        """
        from core.explain import attribution_pair

        return attribution_pair(self.model, self.evaluator, index, method)
