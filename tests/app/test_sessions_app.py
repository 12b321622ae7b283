"""A reload finds the work: the URL carries the session id, every plan change is saved,
and a new browser session opened with that id restores the model and its history (AppTest)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from core.io.sessions import load_session
from core.prune import Prune
from tests.helpers.app import APP, new_app, ok, workspace


def test_a_reload_restores_the_model_and_its_plans(own_home):
    at = new_app("digits_mlp")
    sid = at.session_state["session_id"]
    assert at.query_params["session"] == sid
    ws = workspace(at)
    ws.add_step(Prune(sparsity=0.4))
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.25))
    ws.undo()
    saved = load_session(sid)
    assert saved["model"] == "digits_mlp" and saved["models"]["digits_mlp"]["pos"] == 1
    # the same address in a new browser session (a reload)
    again = AppTest.from_file(APP, default_timeout=180)
    again.query_params["session"] = sid
    again.run()
    ok(again)
    assert again.session_state["session_id"] == sid and again.session_state["model_name"] == "digits_mlp"
    ws2 = workspace(again)
    assert ws2.history == ws.history and ws2.plan == ws.plan and ws2.can_redo
    assert any(i.value.startswith("Restored your work saved at") for i in again.info)


def test_an_unknown_or_bad_session_id_starts_afresh(own_home):
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["session"] = "not-a-session"
    at.run()
    ok(at)
    sid = at.session_state["session_id"]
    assert sid != "not-a-session" and len(sid) == 16 and at.query_params["session"] == sid
    assert not workspace(at).plan.steps


def test_a_damaged_or_unreadable_saved_session_is_said_kept_and_not_overwritten(own_home):
    """Issue 22: a session file that fails to read is reported and kept, never silently dropped."""
    from core.io.sessions import sessions_dir

    folder = sessions_dir()
    folder.mkdir(parents=True, exist_ok=True)
    damaged, unreadable = "a" * 16, "b" * 16
    (folder / f"{damaged}.json").write_text("{not json")
    (folder / f"{unreadable}.json").mkdir()
    for sid, kind in ((damaged, "warning"), (unreadable, "error")):
        at = AppTest.from_file(APP, default_timeout=180)
        at.query_params["session"] = sid
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        shown = [e.value for e in getattr(at, kind)]
        assert any(f"{sid}.json" in m and "new session" in m for m in shown), shown
        assert at.session_state["session_id"] != sid  # the file is not overwritten by this session
        workspace(at).add_step(Prune(sparsity=0.3))
    assert (folder / f"{damaged}.json").read_text() == "{not json" and (folder / f"{unreadable}.json").is_dir()
