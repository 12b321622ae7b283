"""The live loop's two speed-ups, as a part of :class:`~core.workspace.Workspace`: a first,
provisional readout of a slow model, and prefix reuse for the quick figures.

* :meth:`LiveReadouts.first_readout`: the current plan on the glimpse (``EvalSet.glimpse``, a
  stratified tenth of the quick subset) with 95% intervals (``core.metrics.progressive``), to
  show while the quick figures are computed; :meth:`LiveReadouts.quick_is_slow` says when that
  is worth it (the base's quick forward took over ``SLOW_QUICK_SECONDS``).
* :meth:`LiveReadouts.quick_forward`: how the quick subset is run: when it pays (``prefix_pays``), through a
  :class:`~core.sensitivity.prefix.LivePrefix` that keeps the last model's activations (at most
  ``LIVE_PREFIX_BYTES``) and reuses those before the first module the new model changed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from core.sensitivity.prefix import LivePrefix

if TYPE_CHECKING:
    from core.metrics import Metrics

SLOW_QUICK_SECONDS = 2.0  # a quick forward longer than this gets a provisional first readout
PREFIX_MIN_SECONDS = 0.5  # prefix reuse runs only for a CPU quick forward at least this long (``prefix_pays``)
LIVE_PREFIX_BYTES = 512 << 20  # activations the live loop keeps for prefix reuse, for the whole quick subset


class LiveReadouts:
    """Provisional readouts and prefix reuse (a mixin of ``Workspace``: uses its plan,
    evaluator and metrics cache)."""

    def first_readout(self) -> Metrics:
        """The current plan's provisional figures on the glimpse: ``provisional`` set, a 95%
        ``interval`` of the headline, never timed, not logged; cached per plan like the quick ones."""
        key = self._metrics_key(self.plan, "glimpse")
        if key not in self._metrics:
            self._metrics[key] = self.evaluator.evaluate(self._current(), "glimpse", latency=False)
        return self._metrics[key]

    def base_first_readout(self) -> Metrics:
        """The base's figures on the glimpse: what a provisional readout is compared with."""
        from core.plan import Plan

        key = self._metrics_key(Plan(self.spec.name), "glimpse")
        if key not in self._metrics:
            self._metrics[key] = self.evaluator.evaluate(self.base, "glimpse", latency=False)
        return self._metrics[key]

    def quick_is_slow(self) -> bool:
        """Whether the current plan's quick figures are not cached yet and a quick forward is
        expected to take over ``SLOW_QUICK_SECONDS`` (``Evaluator.expected_seconds``)."""
        if self._metrics.get(self._metrics_key(self.plan, "quick")) is not None:
            return False
        return self.evaluator.expected_seconds("quick") > SLOW_QUICK_SECONDS

    def prefix_pays(self) -> bool:
        """Whether prefix reuse is worth its cost here: on the CPU, for a quick forward expected
        to take at least ``PREFIX_MIN_SECONDS``. Finding what changed hashes every module's
        weights on the host each move, a pass over the model that a fast forward (a small model,
        or any model on a GPU, where the hash would also copy the weights to the host) does not
        repay."""
        return self.device.type == "cpu" and self.evaluator.expected_seconds("quick") >= PREFIX_MIN_SECONDS

    def quick_forward(self, subset: str) -> Callable | None:
        """The ``forward`` the evaluator runs ``subset`` with: the live prefix for "quick"."""
        if subset != "quick" or not self.prefix_pays():
            return None
        if getattr(self, "_live_prefix", None) is None:
            self._live_prefix = LivePrefix(LIVE_PREFIX_BYTES)
        precision = self.evaluator.precision
        return lambda model, x: self._live_prefix.run(model, x, tag=precision)


__all__ = ["LiveReadouts", "SLOW_QUICK_SECONDS", "PREFIX_MIN_SECONDS", "LIVE_PREFIX_BYTES"]
