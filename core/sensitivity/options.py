"""What each layer offers an automatic plan: its amounts, each with a harm (points), a predicted
accuracy drop and a saving, from a sensitivity sweep, and the same on a finer grid.

A sweep measures a few amounts per layer (0.1, 0.2, ... by default); a plan that must land
near an accuracy budget needs finer steps than that, since one swept step of a sensitive
layer can jump past the budget (digits_cnn: 0.4 to over 2 points). :func:`options_of` adds
amounts every ``DENSE_STEP`` between two swept ones, their figures interpolated linearly,
where the layer has units to spare between them (the swept points' unit counts say so). The
interpolated figures only steer the search: every allocation ``autoplan`` keeps is measured.
"""
from __future__ import annotations

from core.sensitivity.sweep import Sensitivity

DENSE_STEP = 0.05  # amounts offered between swept ones, as fractions of a layer's units
_EPS = 1e-9


def swept_options(sens: Sensitivity, cost: str) -> tuple[dict[str, list[tuple[float, float, float]]],
                                                    dict[str, list[float]]]:
    """layer -> [(amount, harm in points, saving)] with amount 0 first, and layer -> the
    predicted accuracy drop in points at each of those amounts; all non-decreasing.

    Harm is the share of examples whose prediction the point changes from the source's
    (it bounds the accuracy drop from above and does not cancel out across layers the way
    gains and losses of accuracy do), plus 0.1 x (1 - cosine with the source's outputs), so
    that of two layers that change no prediction alone the one that moves the outputs less
    goes first. An embedding's harm is the drop of its neighbour recall (points, never
    below 0), plus the same cosine term."""
    src_acc, src_cost = sens.source["accuracy"], sens.source[cost]
    out, drops = {}, {}
    for layer, pts in sens.layers.items():
        opts, dl, h_max, s_max, d_max = [(0.0, 0.0, 0.0)], [0.0], 0.0, 0.0, 0.0
        for p in pts:
            if p["amount"] <= 0:
                continue
            moved = max(0.0, src_acc - p["accuracy"]) if p.get("output") == "embedding" else p["changed"]
            harm = 100 * moved + 0.1 * (1 - p["source_cosine"])
            h_max = max(h_max, harm)
            s_max = max(s_max, float(src_cost - p[cost]))
            d_max = max(d_max, 100 * (src_acc - p["accuracy"]))
            opts.append((p["amount"], h_max, s_max))
            dl.append(d_max)
        out[layer], drops[layer] = opts, dl
    return out, drops


def _between(a0: float, a1: float, units: int) -> list[float]:
    """Amounts on the ``DENSE_STEP`` grid strictly between ``a0`` and ``a1``, at most
    ``units`` of them (evenly chosen: fewer units than grid points between two swept amounts
    cannot all differ)."""
    grid, k = [], int(a0 / DENSE_STEP + _EPS) + 1
    while k * DENSE_STEP < a1 - _EPS:
        grid.append(round(k * DENSE_STEP, 6))
        k += 1
    if units <= 0:
        return []
    if len(grid) > units:
        grid = [grid[round((i + 1) * (len(grid) + 1) / (units + 1)) - 1] for i in range(units)]
    return grid


def options_of(sens: Sensitivity, cost: str) -> tuple[dict[str, list[tuple[float, float, float]]],
                                                     dict[str, list[float]]]:
    """:func:`swept_options` with amounts every ``DENSE_STEP`` added between swept ones
    (linearly interpolated harm, saving and predicted drop), where the layer's swept points
    differ by more than one unit removed."""
    swept, drops = swept_options(sens, cost)
    out, out_drops = {}, {}
    for layer, opts in swept.items():
        pruned = [0] + [int(p.get("pruned") or 0) for p in sens.layers[layer] if p["amount"] > 0]
        o, d = [opts[0]], [drops[layer][0]]
        for i in range(1, len(opts)):
            (a0, h0, s0), (a1, h1, s1) = opts[i - 1], opts[i]
            d0, d1 = drops[layer][i - 1], drops[layer][i]
            units = pruned[i] - pruned[i - 1] - 1 if i < len(pruned) else 0
            for a in _between(a0, a1, units):
                f = (a - a0) / (a1 - a0)
                o.append((a, h0 + f * (h1 - h0), s0 + f * (s1 - s0)))
                d.append(d0 + f * (d1 - d0))
            o.append(opts[i])
            d.append(d1)
        out[layer], out_drops[layer] = o, d
    return out, out_drops


__all__ = ["DENSE_STEP", "swept_options", "options_of"]
