"""Helpers for the Streamlit app tests (``streamlit.testing.v1.AppTest``): a fresh session
of the app, its readouts and its workspace, the page's error check, background jobs."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")


def new_app(model: str | None = None) -> AppTest:
    """A fresh session of the app, run once (optionally on ``model``)."""
    at = AppTest.from_file(APP, default_timeout=180)
    if model:
        at.session_state["model_name"] = model
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise KeyError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def workspace(at: AppTest):
    return at.session_state["workspaces"][at.session_state["model_name"]]


def ok(at: AppTest) -> None:
    """No exception and no error box on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def finish_job(at: AppTest, key: str) -> None:
    """Wait for a background training job (app.jobs) and run the page that picks it up."""
    try:
        job = at.session_state[key]
    except KeyError:  # the run that saw it end has picked it up already
        return
    job.thread.join(300)
    assert not job.thread.is_alive(), "the training job did not end in 300 s"
    at.run()


def handle_args(at: AppTest, ident: str) -> dict:
    """The arguments the page drew the threshold handle ``ident`` with (app/threshold_drag.py:
    its bins, ``value``, ``at`` (the report's threshold), mode)."""
    import json

    for el in at.get("component_instance"):
        args = json.loads(el.proto.json_args)
        if args.get("id") == ident:
            return args
    raise AssertionError(f"no threshold handle {ident!r}")
