"""A widget value the browser sends back from before the page changed it (a stale echo).

When the page writes a widget's value (``st.session_state[key] = v``: the plan moved by an
undo, a finished fine-tune, another criterion), the browser learns it only when that run's
output reaches it. A click sent before then (Undo just as a finished fine-tune is being
drawn) carries the widget's old value with it; Streamlit sees a value that differs from
the one written and calls the widget's ``on_change`` as if the person had moved it, which
then edits the plan (it added a prune step on top of the fine-tune).

The page records each such write (:func:`wrote`) and when the widget was next drawn
(:func:`drawn`); an ``on_change`` asks :func:`is_echo` first. An echo is a value the
browser showed before the write (or before an earlier write it may not have heard of
yet), arriving before the widget was drawn with the new value or within
:data:`ECHO_SECONDS` of that. A person who moves the control back to exactly the previous
value that quickly sees it put back once (see :func:`is_echo`).
"""
from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

ECHO_SECONDS = 3.0  # a browser that had the new value sends it; a click in flight arrives sooner


def _record_key(key: str) -> str:
    return f"_echo_{key}"


def wrote(state: MutableMapping, key: str, value: Any) -> None:
    """Write ``value`` into widget ``key`` for the page, remembering what the browser showed."""
    rec = state.get(_record_key(key))
    if rec is not None and rec["drawn"] is not None and time.monotonic() - rec["drawn"] >= ECHO_SECONDS:
        rec = None  # the browser has had the earlier values long since
    # what the browser may still show: the value before this write, and any value written
    # before it whose echo window is still open (the page may write several times before
    # the browser hears of the first, e.g. a layer's share while the global amount moves)
    shown = [v for v in (rec["shown"] if rec is not None else []) if v != value]
    if state.get(key) is not None and state.get(key) != value and state.get(key) not in shown:
        shown.append(state.get(key))
    state[key] = value
    if shown:
        state[_record_key(key)] = {"value": value, "shown": shown, "drawn": None}
    else:
        state.pop(_record_key(key), None)


def drawn(state: MutableMapping, key: str, now: float | None = None) -> None:
    """Widget ``key`` was drawn: its written value is on its way to the browser."""
    rec = state.get(_record_key(key))
    if rec is not None and rec["drawn"] is None:
        rec["drawn"] = time.monotonic() if now is None else now


def is_echo(state: MutableMapping, key: str, now: float | None = None) -> bool:
    """True when widget ``key``'s new value is the browser's stale copy of the value before the
    page's last write; the written value is then put back (the caller leaves the plan as it is).
    False for a move by the person (the record is dropped: later values are theirs)."""
    rec = state.get(_record_key(key))
    now = time.monotonic() if now is None else now
    stale = (rec is not None and state.get(key) in rec["shown"] and state.get(key) != rec["value"]
             and (rec["drawn"] is None or now - rec["drawn"] < ECHO_SECONDS))
    if stale:
        state[key] = rec["value"]
    else:
        state.pop(_record_key(key), None)
    return stale


__all__ = ["ECHO_SECONDS", "wrote", "drawn", "is_echo"]
