"""Work that lasts: a session's plans and histories, saved after every change and read
back when the same session is opened again (the app's URL carries its id).

A session file is plain data (``prunescope.session/1``): per model, the history of plans
(recipes), the position in it and the finished sensitivity sweeps, plus the model shown. Files live in ``sessions/`` of
:func:`core.user_models.home`, written atomically; reading one checks it like a recipe
(strict JSON, at most 10 MiB, every plan through ``Plan.from_dict``); a damaged file is
skipped, never run.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from .errors import PrunescopeError, first_line

FORMAT = "prunescope.session/1"
MAX_BYTES = 10 << 20
MAX_HISTORY = 500  # history entries kept per model (the oldest are dropped)
_ID = re.compile(r"^[0-9a-f]{16}$")


def sessions_dir() -> Path:
    from .user_models import home

    return home() / "sessions"


def new_session_id() -> str:
    return secrets.token_hex(8)


def valid_id(sid) -> bool:
    return isinstance(sid, str) and bool(_ID.match(sid))


def _path(sid: str) -> Path:
    if not valid_id(sid):
        raise PrunescopeError(f"a session id is 16 hexadecimal characters, got {sid!r}")
    return sessions_dir() / f"{sid}.json"


def save_session(sid: str, workspaces: dict, model: str, pending: dict | None = None) -> Path:
    """Write the plans and histories of ``workspaces`` (name -> Workspace) and the model
    shown; ``pending`` (name -> restored entry not yet opened again) is kept as it was."""
    from .io.files import atomic_write_text

    models = {name: {"history": [p.to_dict() for p in e["history"]], "pos": e["pos"],
                     "sweeps": [[list(k), v.to_dict()] for k, v in e.get("sweeps", {}).items()]}
              for name, e in (pending or {}).items() if name not in workspaces}
    for name, ws in workspaces.items():
        start = max(0, len(ws.history) - MAX_HISTORY)
        models[name] = {"history": [p.to_dict() for p in ws.history[start:]], "pos": max(0, ws.pos - start),
                        "sweeps": _sweeps(ws)}
    p = _path(sid)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps({"format": FORMAT, "saved": time.time(), "model": model, "models": models}))
    return p


def _sweeps(ws) -> list:
    """The workspace's finished sensitivity sweeps as data (``[key, result]`` pairs), at
    most 4 MB of them (the newest first)."""
    from .sensitivity import Sensitivity

    keys = tuple(ws.sweeps)
    cached = getattr(ws, "_saved_sweeps", None)
    if cached is not None and cached[0] == keys:  # saving runs after every plan change: serialise once
        return cached[1]
    out, size = [], 0
    for key, s in reversed(list(ws.sweeps.items())):
        if isinstance(s, Sensitivity):
            item = [list(key), s.to_dict()]
            n = len(json.dumps(item))
            if size + n > 4 << 20:
                break
            out.append(item)
            size += n
    ws._saved_sweeps = (keys, out)
    return out


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def load_session(sid: str) -> dict | None:
    """``{"model", "saved", "models": {name: {"history": [Plan], "pos"}}}``, or None when
    there is no such session or its file is not a valid one (with a warning)."""
    import warnings

    from .plan import Plan

    try:
        p = _path(sid)
    except PrunescopeError:
        return None
    if not p.exists():
        return None
    try:
        if p.stat().st_size > MAX_BYTES:
            raise PrunescopeError(f"{p.stat().st_size:,} bytes; at most {MAX_BYTES:,}")
        d = json.loads(p.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        if d.get("format") != FORMAT:
            raise PrunescopeError(f"format {d.get('format')!r}, expected {FORMAT}")
        models = {}
        for name, m in d["models"].items():
            plans = [Plan.from_dict(x) for x in m["history"]]
            if not plans or any(pl.model != name for pl in plans):
                raise PrunescopeError(f"the history of {name!r} holds plans of another model")
            from .sensitivity import Sensitivity

            sweeps = {_tuples(k): Sensitivity.from_dict(v) for k, v in m.get("sweeps", [])}
            models[name] = {"history": plans, "pos": min(max(0, int(m["pos"])), len(plans) - 1), "sweeps": sweeps}
        return {"model": str(d["model"]), "saved": float(d["saved"]), "models": models}
    except Exception as exc:  # noqa: BLE001 - a file from disk: anything wrong with it is its fault
        warnings.warn(f"prunescope: session {sid} could not be read ({first_line(exc)}); starting afresh")
        return None


def restore(ws, entry: dict) -> None:
    """Give ``ws`` a saved history and its finished sweeps (its model is built on first use)."""
    ws.history, ws.pos = list(entry["history"]), entry["pos"]
    ws.sweeps.update(entry.get("sweeps", {}))


def recent_sessions(limit: int = 10) -> list[dict]:
    """The most recently saved sessions: ``[{"id", "saved", "model", "steps"}]``, newest first."""
    folder = sessions_dir()
    if not folder.exists():
        return []
    out = []
    for p in sorted(folder.glob("*.json"), key=lambda q: q.stat().st_mtime, reverse=True)[:limit]:
        s = load_session(p.stem)
        if s is None:
            continue
        cur = s["models"].get(s["model"])
        steps = len(cur["history"][cur["pos"]].steps) if cur else 0
        out.append({"id": p.stem, "saved": s["saved"], "model": s["model"], "steps": steps})
    return out


__all__ = ["save_session", "load_session", "restore", "recent_sessions", "new_session_id", "valid_id",
           "sessions_dir"]
