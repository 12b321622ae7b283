"""What the app tells the person: queued and immediate messages, and the one adapter from
an exception to a message (the person's mistake plainly; a bug with its traceback)."""
from __future__ import annotations

import traceback
from collections.abc import Callable

import streamlit as st

from core.errors import PrunescopeError


def flash(kind: str, message: str, detail: str | None = None) -> None:
    """Queue a message to show on the next render (survives callbacks and reruns).

    ``kind`` is an ``st`` call ("error", "warning", "info", "success"); ``detail`` (a
    traceback) goes in an expander under it.
    """
    st.session_state.setdefault("_flash", []).append((kind, message, detail))


def message_ui(kind: str, message: str, detail: str | None = None) -> None:
    """Show one message, with its detail (a traceback) folded away."""
    getattr(st, kind)(message)
    if detail:
        with st.expander("Traceback (this is a bug in prunescope; the plan is unchanged)"):
            st.code(detail, language="text")


def show_flashes() -> None:
    """The queued messages, inside one container drawn on every run: the elements after it
    keep their places whether or not there are messages (a shifted element is drawn anew,
    so an open expander would close and a slider held by the keyboard lose its focus)."""
    items = st.session_state.pop("_flash", [])
    with st.container():
        for item in items:
            message_ui(*item)


def error_message(exc: BaseException) -> tuple[str, str | None]:
    """The one adapter from an exception to what the app shows: ``(message, traceback)``.

    A ``PrunescopeError`` is the person's mistake: its message, no traceback. Anything
    else is a bug: a short line and the traceback (shown folded).
    """
    if isinstance(exc, PrunescopeError):
        return str(exc), None
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"Internal error ({type(exc).__name__}: {str(exc)[:300]}). The plan is unchanged.", tb


def run_action(fn: Callable, *args, success: str | None = None, now: bool = False, **kwargs):
    """Run ``fn`` and return its result, or None when it raised.

    The error is shown with :func:`error_message`: queued for the next render (the
    default: callbacks cannot draw), or drawn here with ``now=True``. The plan is kept.
    """
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every error is shown; bugs with their traceback
        msg, tb = error_message(exc)
        if now:
            message_ui("error", msg, tb)
        else:
            flash("error", msg, tb)
        return None
    if success:
        flash("success", success)
    return out


__all__ = ["flash", "message_ui", "show_flashes", "error_message", "run_action"]
