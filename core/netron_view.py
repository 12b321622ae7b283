"""View a model's graph in Netron, served on 127.0.0.1 from a folder holding only that file.

Netron serves every file beside the one it is given, so each view copies its file into
a fresh temp folder. Starting a new view stops the previous one; all stop at exit.
"""
from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import netron

_servers: list[tuple[tuple[str, int], Path]] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_all() -> None:
    """Stop every server started here and remove their folders."""
    while _servers:
        addr, folder = _servers.pop()
        try:
            netron.stop(addr)
        except Exception:  # already stopped
            pass
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(stop_all)


def serve_file(path: str | Path, *, keep_others: bool = False, timeout: float = 20.0) -> str:
    """Serve one model file with Netron on 127.0.0.1; return its URL.

    Raises:
        ValueError: the file does not exist, or the server did not answer in time.
    """
    src = Path(path)
    if not src.is_file():
        raise ValueError(f"no model file at {str(src)!r}")
    if not keep_others:
        stop_all()
    folder = Path(tempfile.mkdtemp(prefix="prunescope-netron-"))
    dst = folder / src.name
    shutil.copy2(src, dst)
    port = _free_port()
    addr = netron.start(str(dst), ("127.0.0.1", port), browse=False)
    addr = tuple(addr) if addr else ("127.0.0.1", port)
    _servers.append((addr, folder))
    url = f"http://{addr[0]}:{addr[1]}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return url
        except OSError:
            time.sleep(0.1)
    stop_all()
    raise ValueError("netron did not start in time")


def onnx_for_view(model, example, folder: str | Path | None = None, name: str = "model") -> Path:
    """Write ``model`` as ONNX for viewing (no verification); returns the path."""
    from .export import export_model
    from .plan import Plan

    folder = Path(folder or tempfile.mkdtemp(prefix="prunescope-view-"))
    r = export_model(model, Plan(name), "onnx", folder / f"{name}.onnx", example, verify=False)
    if r.error:
        raise ValueError(f"could not write ONNX for the graph view: {r.error}")
    return Path(r.path)
