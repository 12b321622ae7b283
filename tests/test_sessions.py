"""Work that lasts: a session's plans and histories saved and read back; damaged or
foreign files are skipped, never run."""
from __future__ import annotations

import json

import pytest

from core.io.sessions import load_session, new_session_id, recent_sessions, save_session, sessions_dir
from core.prune import Prune
from core.workspace import Workspace


@pytest.fixture
def sessions(own_home):
    return sessions_dir()


def test_plans_and_history_round_trip(sessions):
    ws = Workspace("digits_mlp", "cpu")
    ws.add_step(Prune(sparsity=0.3))
    ws.add_step(Prune(criterion="l1", granularity="neuron", sparsity=0.2))
    ws.undo()  # the position in the history is kept too
    sid = new_session_id()
    save_session(sid, {"digits_mlp": ws.session_entry()}, "digits_mlp")
    got = load_session(sid)
    assert got["model"] == "digits_mlp"
    again = Workspace("digits_mlp", "cpu")
    again.restore_session(got["models"]["digits_mlp"])
    assert again.history == ws.history and again.pos == ws.pos == 1 and again.plan == ws.plan
    assert again.metrics(latency=False).sparsity == pytest.approx(0.3, abs=0.01)
    again.redo()
    assert again.plan == ws.history[2]
    assert [r["id"] for r in recent_sessions()] == [sid] and recent_sessions()[0]["steps"] == 1


def test_a_workspace_tells_its_listeners_about_every_move():
    ws = Workspace("digits_mlp", "cpu")
    seen = []
    ws.listeners.append(lambda w: seen.append(len(w.plan.steps)))
    ws.add_step(Prune(sparsity=0.3))
    ws.undo()
    ws.redo()
    ws.reset()
    assert seen == [1, 0, 1, 0]


def test_damaged_or_foreign_session_files_are_skipped(sessions):
    sessions.mkdir(parents=True, exist_ok=True)
    bad = {"a" * 16: "{not json", "b" * 16: json.dumps({"format": "other"}),
           "c" * 16: json.dumps({"format": "prunescope.session/1", "saved": 1, "model": "digits_mlp",
                                 "models": {"digits_mlp": {"history": [{"format": "prunescope.plan/1",
                                                                         "model": "digits_cnn", "steps": []}],
                                                           "pos": 0}}}),
           "d" * 16: json.dumps({"format": "prunescope.session/1", "saved": 1, "model": "digits_mlp",
                                 "models": {"digits_mlp": {"history": [{"format": "prunescope.plan/1",
                                                                         "model": "digits_mlp",
                                                                         "steps": [{"op": "exec"}]}], "pos": 0}}})}
    for sid, text in bad.items():
        (sessions / f"{sid}.json").write_text(text)
        with pytest.warns(UserWarning, match=rf"session file .*{sid}\.json is damaged and was skipped"):
            assert load_session(sid) is None
        assert (sessions / f"{sid}.json").read_text() == text  # skipped, never deleted
    assert load_session("../../etc/passwd") is None and load_session("f" * 16) is None


@pytest.mark.parametrize("text", [
    "[]", json.dumps({"format": "prunescope.session/1", "saved": 1, "model": "m", "models": []}),
    json.dumps({"format": "prunescope.session/1", "saved": 1, "model": "digits_mlp",
                "models": {"digits_mlp": {"history": [], "pos": 0}}}),
    json.dumps({"format": "prunescope.session/1", "saved": 1, "model": "digits_mlp",
                "models": {"digits_mlp": {"history": [{"format": "prunescope.plan/1", "model": "digits_mlp"}],
                                          "pos": 0, "sweeps": [["k", 1]]}}}),
    b"\xff\xfe".decode("latin-1"), '{"format": NaN}'])
def test_a_session_file_of_the_wrong_shape_is_damaged_not_a_crash(sessions, text):
    sessions.mkdir(parents=True, exist_ok=True)
    sid = "e" * 16
    (sessions / f"{sid}.json").write_text(text, encoding="latin-1")
    with pytest.warns(UserWarning, match="is damaged and was skipped"):
        assert load_session(sid) is None


def test_a_bug_while_reading_a_session_propagates_and_the_file_is_kept(sessions, monkeypatch):
    """Issue 22: a bug in Plan.from_dict silently threw the session away."""
    from core.plan import Plan

    sid = new_session_id()
    save_session(sid, {"digits_mlp": Workspace("digits_mlp", "cpu").session_entry()}, "digits_mlp")
    text = (sessions / f"{sid}.json").read_text()

    def boom(d):
        return 1 // 0

    monkeypatch.setattr(Plan, "from_dict", staticmethod(boom))
    with pytest.raises(ZeroDivisionError):
        load_session(sid)
    assert (sessions / f"{sid}.json").read_text() == text


def test_a_session_file_that_cannot_be_read_is_a_file_error_naming_it_and_kept(sessions):
    from core.errors import FileError

    sid = "9" * 16
    (sessions / f"{sid}.json").mkdir(parents=True)  # exists, cannot be read as a file
    with pytest.raises(FileError, match=rf"session file .*{sid}\.json could not be read.*kept"):
        load_session(sid)
    assert (sessions / f"{sid}.json").is_dir()
    with pytest.warns(UserWarning, match="could not be read"):
        assert recent_sessions() == []


def test_finished_sweeps_are_saved_with_the_session(sessions):
    ws = Workspace("digits_cnn", "cpu")
    s = ws.sensitivity("l1", "channel", (0.3, 0.6))
    sid = new_session_id()
    save_session(sid, {"digits_cnn": ws.session_entry()}, "digits_cnn")
    again = Workspace("digits_cnn", "cpu")
    again.restore_session(load_session(sid)["models"]["digits_cnn"])
    assert list(again.sweeps) == list(ws.sweeps)
    got = again.sensitivity("l1", "channel", (0.3, 0.6))  # found, not run again
    assert got.layers == s.layers and got.source == s.source and got.seconds == s.seconds


def test_a_sweep_stopped_at_a_budget_comes_back_under_its_own_key(sessions):
    ws = Workspace("digits_mlp", "cpu")
    s = ws.sensitivity("l1", "neuron", (0.2, 0.4, 0.6, 0.8), stop_harm=4)
    sid = new_session_id()
    save_session(sid, {"digits_mlp": ws.session_entry()}, "digits_mlp")
    again = Workspace("digits_mlp", "cpu")
    again.restore_session(load_session(sid)["models"]["digits_mlp"])
    (key, got), = again.sweeps.items()
    assert key == ws.sensitivity_spec("l1", "neuron", (0.2, 0.4, 0.6, 0.8), stop_harm=4).key
    assert got.stop_harm == 4 and got.layers == s.layers
    assert again.finished_sweep("l1", "neuron", (0.2, 0.4, 0.6, 0.8)) is None  # not taken for a full sweep
    assert again.finished_sweep("l1", "neuron", (0.2, 0.4, 0.6, 0.8), for_drop=1) is got
    assert again.finished_sweep("l1", "neuron", (0.2, 0.4, 0.6, 0.8), for_drop=2) is None  # 4 points: not 7

def test_a_saved_sweep_that_does_not_read_back_is_left_out_with_a_warning(sessions):
    """Sweeps are plain data in the file; the workspace reads them, and a damaged one costs
    only itself: the plans and the other sweeps come back."""
    ws = Workspace("digits_cnn", "cpu")
    ws.add_step(Prune(sparsity=0.3))
    ws.sensitivity("l1", "channel", (0.3,))
    entry = ws.session_entry()
    entry["sweeps"] = entry["sweeps"] + [[["bad"], {"model": "digits_cnn"}]]
    sid = new_session_id()
    save_session(sid, {"digits_cnn": entry}, "digits_cnn")
    again = Workspace("digits_cnn", "cpu")
    with pytest.warns(UserWarning, match="a saved sweep of digits_cnn was left out"):
        again.restore_session(load_session(sid)["models"]["digits_cnn"])
    assert again.plan == ws.plan and list(again.sweeps) == list(ws.sweeps)
