"""Work that lasts: a session's plans and histories, saved after every change and read
back when the same session is opened again (the app's URL carries its id).

A session file is plain data (``prunescope.session/1``): per model, the history of plans
(recipes), the position in it and the finished sensitivity sweeps, plus the model shown. Files live in ``sessions/`` of
:func:`core.sources.entries.home`, written atomically; reading one checks it like a recipe
(strict JSON, at most 10 MiB, every plan through ``Plan.from_dict``); a damaged file is
skipped with a warning naming it, never run and never deleted; a file that cannot be read
for another reason (permissions) is a ``FileError`` naming it, and any other failure is a
bug that propagates.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from core.errors import FileError, PrunescopeError, echo, first_line

FORMAT = "prunescope.session/1"
MAX_BYTES = 10 << 20
MAX_HISTORY = 500  # history entries kept per model (the oldest are dropped)
_ID = re.compile(r"^[0-9a-f]{16}$")


def sessions_dir() -> Path:
    from core.sources.entries import home

    return home() / "sessions"


def new_session_id() -> str:
    return secrets.token_hex(8)


def valid_id(sid) -> bool:
    return isinstance(sid, str) and bool(_ID.match(sid))


def _path(sid: str) -> Path:
    if not valid_id(sid):
        raise PrunescopeError(f"a session id is 16 hexadecimal characters, got {sid!r}")
    return sessions_dir() / f"{sid}.json"


def save_session(sid: str, models: dict[str, dict], model: str) -> Path:
    """Write a session: ``models`` maps a model name to plain data, ``{"history": [Plan],
    "pos": int, "sweeps": [[key, result dict]]}`` (what ``Workspace.session_entry`` gives, or
    an entry read back and not opened yet); ``model`` is the model shown. At most
    :data:`MAX_HISTORY` plans per model are kept (the newest)."""
    from core.ground.files import atomic_write_text

    out = {}
    for name, e in models.items():
        start = max(0, len(e["history"]) - MAX_HISTORY)
        out[name] = {"history": [p.to_dict() for p in e["history"][start:]], "pos": max(0, e["pos"] - start),
                     "sweeps": list(e.get("sweeps", []))}
    p = _path(sid)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, json.dumps({"format": FORMAT, "saved": time.time(), "model": model, "models": out}))
    return p


class DamagedSession(FileError):
    """A session file whose content is not a valid session (not strict JSON, not UTF-8,
    too large, a wrong shape, a plan or sweep that does not read back)."""


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise DamagedSession(what)


def _read_session(p: Path) -> dict:
    """The session in file ``p``, checked like a recipe.

    Raises:
        DamagedSession: the content is not a valid session (why, without the path).
        OSError: the file cannot be read (permissions, a folder in its place, ...).
    """
    from core.plan import Plan

    size = p.stat().st_size
    _need(size <= MAX_BYTES, f"{size:,} bytes; at most {MAX_BYTES:,}")
    try:
        d = json.loads(p.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise DamagedSession("not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise DamagedSession(f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise DamagedSession("nested too deeply") from exc
    _need(isinstance(d, dict) and d.get("format") == FORMAT,
          f"format {echo(d.get('format') if isinstance(d, dict) else d)}, expected {FORMAT}")
    _need(isinstance(d.get("model"), str) and isinstance(d.get("saved"), (int, float))
          and not isinstance(d.get("saved"), bool) and isinstance(d.get("models"), dict),
          "it needs 'model' (a name), 'saved' (a time) and 'models' (an object)")
    models = {}
    for name, m in d["models"].items():
        _need(isinstance(m, dict) and isinstance(m.get("history"), list) and m["history"]
              and isinstance(m.get("pos"), int) and isinstance(m.get("sweeps", []), list),
              f"model {echo(name)}: it needs 'history' (a list of plans), 'pos' (a whole number) and "
              "optionally 'sweeps' (a list)")
        try:
            plans = [Plan.from_dict(x) for x in m["history"]]
        except PrunescopeError as exc:
            raise DamagedSession(f"model {echo(name)}: {exc}") from exc
        _need(all(pl.model == name for pl in plans), f"the history of {name!r} holds plans of another model")
        sweeps = m.get("sweeps", [])
        _need(all(isinstance(it, list) and len(it) == 2 and isinstance(it[0], list) and isinstance(it[1], dict)
                  for it in sweeps), f"model {echo(name)}: a sweep must be a [key, result object] pair")
        models[name] = {"history": plans, "pos": min(max(0, m["pos"]), len(plans) - 1), "sweeps": sweeps}
    return {"model": d["model"], "saved": float(d["saved"]), "models": models}


def _reject_constant(c: str):
    raise json.JSONDecodeError(f"{c} is not strict JSON", c, 0)


def load_session(sid: str) -> dict | None:
    """``{"model", "saved", "models": {name: {"history": [Plan], "pos", "sweeps": [[key, dict]]}}}``
    (sweeps stay plain data: the workspace reads them), or None
    when there is no such session, or its file is damaged (skipped with a warning that
    names the file; the file is left as it is).

    Raises:
        FileError: the file exists but cannot be read (permissions, a folder in its place):
            it is kept on disk, and the message names it.
        Anything else is a bug and propagates.
    """
    import warnings

    try:
        p = _path(sid)
    except PrunescopeError:
        return None
    if not p.exists():
        return None
    try:
        return _read_session(p)
    except DamagedSession as exc:
        warnings.warn(f"prunescope: session file {p} is damaged and was skipped ({first_line(exc)[:300]}); "
                      "the file is kept")
        return None
    except OSError as exc:
        raise FileError(f"session file {p} could not be read ({exc.strerror or exc}); it is kept as it is") \
            from exc


def recent_sessions(limit: int = 10) -> list[dict]:
    """The most recently saved sessions: ``[{"id", "saved", "model", "steps"}]``, newest first."""
    folder = sessions_dir()
    if not folder.exists():
        return []
    out = []
    for p in sorted(folder.glob("*.json"), key=lambda q: q.stat().st_mtime, reverse=True)[:limit]:
        try:
            s = load_session(p.stem)
        except FileError as exc:  # kept on disk; said, not hidden
            import warnings

            warnings.warn(f"prunescope: {exc}")
            continue
        if s is None:  # damaged: load_session said so
            continue
        cur = s["models"].get(s["model"])
        steps = len(cur["history"][cur["pos"]].steps) if cur else 0
        out.append({"id": p.stem, "saved": s["saved"], "model": s["model"], "steps": steps})
    return out


__all__ = ["save_session", "load_session", "recent_sessions", "MAX_HISTORY", "new_session_id", "valid_id",
           "sessions_dir"]
