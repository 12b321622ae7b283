"""One number format everywhere (app, CLI tables, notebooks)."""
from __future__ import annotations

import math


def pct(x: float | None, digits: int = 1) -> str:
    """0.1234 -> '12.3%'."""
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def count(n: float | None) -> str:
    """1234567 -> '1.23 M', 51234 -> '51.2 k'."""
    if n is None:
        return "–"
    n = float(n)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g} {unit}" if abs(v) < 100 else f"{v:.0f} {unit}"
    return f"{n:.0f}"


def nbytes(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def ms(median: float | None, iqr: float | None = None) -> str:
    """Latency with its spread: '3.21 ms ± 0.12'; '3.92 ms (noisy)' when the IQR is at least
    half the median (a spread of 41 on 3.92 says only that the runs disagree)."""
    if median is None:
        return "–"
    def num(x: float, digits: int) -> str:
        return f"{x:.{digits}g}" if abs(x) < 100 else f"{x:.0f}"

    s = f"{num(median, 3)} ms"
    if iqr is not None and (not math.isfinite(iqr) or iqr >= NOISY_MS * median):
        s += " (noisy)"
    elif iqr is not None:
        s += f" ± {num(iqr, 2)}"  # the spread to two figures: it is a rough number, and the readout stays short
    return s


NOISY_MS = 0.5  # ms() says "noisy" instead of "± IQR" from an IQR this many times the median


def ms_card(median: float, iqr: float | None = None) -> tuple[str, str | None]:
    """A latency for a metric card, which has room for a short value only: the median, and
    its spread for the card's delta line: ``("3.21 ms", "± 0.12")``, ``("3.92 ms", "noisy")``."""
    if iqr is None:
        return ms(median), None
    return ms(median), ms(median, iqr).split(" ms", 1)[1].strip(" ()")


def spread(rel: float) -> str:
    """A relative spread (IQR / median) in words: '12% of the median', '9.9× the median'."""
    return f"{pct(rel, 0)} of the median" if rel < 1 else f"{rel:.2g}× the median"


def ago(seconds: float) -> str:
    """Elapsed time in words: 'just now', '40 s ago', '3 min ago', '2 h ago'."""
    if not math.isfinite(seconds):
        return "at an unknown time"
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago" if seconds < 36_000 else f"{seconds // 3600:.0f} h ago"


def ratio(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.2f}×"


def delta(cur: float, base: float, kind: str) -> str | None:
    """The change from ``base`` to ``cur`` as text whose first character is its sign,
    an ASCII ``+`` or ``-`` (Streamlit draws the arrow from it); None when unchanged, or when
    the change rounds to zero at the precision shown (no "-0.0 pp").

    ``kind``: ``"pp"`` (fractions, in percentage points), ``"count"``, ``"bytes"``,
    ``"ratio"`` (relative change with the ratio to the base: ``-54% (0.46x base)``),
    or ``"num"``.
    """
    d = cur - base
    if abs(d) < 1e-12 or (kind == "ratio" and not base):
        return None
    sign = "+" if d > 0 else "-"
    if kind == "pp":  # a change that rounds to nothing is shown as none ("-0.0 pp" reads as a change)
        return f"{sign}{abs(100 * d):.1f} pp" if f"{abs(100 * d):.1f}" != "0.0" else None
    if kind == "count":
        return sign + count(abs(d))
    if kind == "bytes":
        return sign + nbytes(abs(d))
    if kind == "ratio":
        pct = f"{abs(100 * d / base):.0f}"
        return f"{sign}{pct}% ({cur / base:.2f}× base)" if pct != "0" else None
    return f"{sign}{abs(d):.3g}"

