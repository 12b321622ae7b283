"""Atomic file writes, and cleaning up after writers that were killed.

Every write goes to a temp file beside its target, named ``.<target>.<pid>.<random>.tmp<suffix>``,
and is renamed into place only when complete. A writer that is killed leaves its temp
file behind; :func:`sweep_stale` (run before every write into a folder) removes the
temp files whose writing process is no longer alive. Per-session folders
(:class:`SessionFolder`) carry the owning process id the same way and are removed when
their owner is garbage-collected, at exit, or by the next process's sweep.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TMP = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")  # our temp files
_FOLDER = re.compile(r"^prunescope-(?P<kind>[a-z]+)-(?P<pid>\d+)-")  # our session folders


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OverflowError:
        return False
    return True


def temp_path(target: Path | str, suffix: str | None = None) -> Path:
    """A fresh temp path beside ``target`` that :func:`sweep_stale` knows as ours."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                            f"{target.suffix if suffix is None else suffix}")


def sweep_stale(folder: Path | str) -> list[Path]:
    """Remove the temp files (and temp folders: an hf export's) in ``folder`` left by writers
    that are no longer running.

    Returns:
        The removed paths (a temp file of a live writer is never touched).
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.match(p.name)
        if m and not _alive(int(m["pid"])):
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


@contextmanager
def atomic_path(target: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path in ``target``'s folder; rename it to ``target`` on success.

    On any exception the temp file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent)
    tmp_path = temp_path(target, suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: Path | str, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def replace_together(pairs: list[tuple[Path, Path]]) -> None:
    """Move each ``(temp, target)`` into place, all or none.

    Existing targets are first moved aside; if any move fails, every target gets its
    old file back, so a reader never sees a new file beside an old (or missing) partner.
    """
    for _, target in pairs:  # checked before anything moves: a folder is never moved aside
        if target.exists() and not target.is_file():
            raise IsADirectoryError(21, "not a regular file, so it is not replaced", str(target))
    backups: list[tuple[Path, Path]] = []
    done: list[Path] = []
    try:
        for _, target in pairs:
            if target.exists():
                b = temp_path(target, ".bak")
                os.replace(target, b)
                backups.append((b, target))
        for tmp, target in pairs:
            os.replace(tmp, target)
            done.append(target)
    except BaseException:
        for target in done:
            target.unlink(missing_ok=True)
        for b, target in backups:
            os.replace(b, target)
        raise
    for b, _ in backups:
        b.unlink(missing_ok=True)


class SessionFolder:
    """A temp folder owned by one object (an app session): removed when the owner is
    garbage-collected or the process exits, and by :func:`sweep_dead_folders` after a kill."""

    def __init__(self, kind: str):
        self.path = Path(tempfile.mkdtemp(prefix=f"prunescope-{kind}-{os.getpid()}-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def remove(self) -> None:
        self._finalizer()


def sweep_dead_folders(kind: str, root: Path | str | None = None) -> list[Path]:
    """Remove ``prunescope-<kind>-<pid>-*`` folders in the temp folder whose process is gone."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _FOLDER.match(p.name)
        if m and m["kind"] == kind and p.is_dir() and not _alive(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


__all__ = ["atomic_path", "atomic_write_text", "temp_path", "sweep_stale", "replace_together", "SessionFolder",
           "sweep_dead_folders"]
