"""View a model's graph in Netron, served on 127.0.0.1: each view serves its own file only.

The ``netron`` package keeps the served file on a request-handler class shared by every
server in the process, so two views would both serve the file started last. Each view
here is a small server of its own (:class:`_ViewHandler`): it serves Netron's web
assets from the installed package (no internet is needed) and exactly one model file,
under ``/data/<name>``; any other path is a 404.

Servers are grouped by ``owner`` (the app passes one per browser session): starting a
view stops that owner's previous one, at most :data:`MAX_SERVERS` run at once (the
oldest stops first), and every server stops and its folder is removed at exit.
"""
from __future__ import annotations

import atexit
import http.server
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import netron

from core.errors import PrunescopeError

MAX_SERVERS = 8  # views alive at once over all owners; the oldest stops first
HOST = "127.0.0.1"  # never another interface


ASSETS = Path(netron.__file__).resolve().parent  # Netron's web app, shipped in the package
MIME = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png",
        ".ico": "image/x-icon", ".json": "application/json", ".svg": "image/svg+xml", ".woff": "font/woff",
        ".woff2": "font/woff2", ".ttf": "font/truetype"}


class _ViewHandler(http.server.BaseHTTPRequestHandler):
    """Netron's assets plus one model file. Subclassed per view with ``file`` set."""

    file: Path  # the one model file this view serves

    def do_GET(self):  # noqa: N802 - http.server's name
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        if path.startswith("/data/"):
            if path[len("/data/"):] == self.file.name and self.file.is_file():
                return self._send(200, "application/octet-stream", self.file.read_bytes())
            return self._send(404, "text/plain", b"404")
        if path == "/":
            path = "/index.html"
        target = (ASSETS / path.lstrip("/")).resolve()
        if ASSETS not in target.parents or not target.is_file() \
                or target.suffix not in MIME:
            return self._send(404, "text/plain", b"404")
        body = target.read_bytes()
        if target.name == "index.html":
            meta = "\n".join(['<meta name="type" content="Python">',
                              f'<meta name="version" content="{netron.__version__}">',
                              f'<meta name="file" content="/data/{urllib.parse.quote(self.file.name)}">',
                              f'<meta name="name" content="{self.file.name}">',
                              f'<meta name="identifier" content="{self.file.name}">'])
            body = re.sub(r'<meta name="version" content=".*">', lambda _: meta, body.decode("utf-8")).encode()
        return self._send(200, MIME[target.suffix], body)

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):  # quiet: no request lines on stderr
        pass


@dataclass(frozen=True)
class _Server:
    owner: str  # who started it (one per app session)
    address: tuple[str, int]  # (host, port)
    folder: Path  # temp folder holding only the served file
    httpd: http.server.ThreadingHTTPServer  # the view's own server


_servers: list[_Server] = []
_lock = threading.Lock()


def _stop(s: _Server) -> None:
    try:
        s.httpd.shutdown()
        s.httpd.server_close()
    except OSError:  # already closed
        pass
    shutil.rmtree(s.folder, ignore_errors=True)


def stop(owner: str = "default") -> None:
    """Stop ``owner``'s servers and remove their folders."""
    with _lock:
        mine = [s for s in _servers if s.owner == owner]
        for s in mine:
            _servers.remove(s)
    for s in mine:
        _stop(s)


def stop_all() -> None:
    """Stop every server started here and remove their folders (also runs at exit)."""
    with _lock:
        alive = list(_servers)
        _servers.clear()
    for s in alive:
        _stop(s)


atexit.register(stop_all)


def running() -> list[tuple[str, str]]:
    """``(owner, url)`` of the servers running now, oldest first."""
    with _lock:
        return [(s.owner, f"http://{s.address[0]}:{s.address[1]}/") for s in _servers]


def _start(folder: Path, file: Path, owner: str, timeout: float) -> str:
    """Serve ``file`` (inside ``folder``) with Netron; stop ``owner``'s previous view."""
    stop(owner)
    handler = type("ViewHandler", (_ViewHandler,), {"file": file})
    try:
        httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise PrunescopeError(f"cannot start the graph view on {HOST}: {exc.strerror or exc}") from None
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    address = (HOST, int(httpd.server_address[1]))
    server = _Server(owner, address, folder, httpd)
    with _lock:
        _servers.append(server)
        excess = _servers[:-MAX_SERVERS] if len(_servers) > MAX_SERVERS else []
        del _servers[:len(excess)]
    for s in excess:
        _stop(s)
    url = f"http://{address[0]}:{address[1]}/"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(owner)
            raise PrunescopeError(f"netron did not answer at {url} within {timeout:.0f} s")
        time.sleep(0.05)


def serve_file(path: str | Path, *, owner: str = "default", timeout: float = 20.0) -> str:
    """Serve one model file with Netron on 127.0.0.1; return its URL.

    The file is hard-linked (or copied) into a fresh temp folder, so nothing beside the
    original can be fetched. ``owner``'s previous view is stopped first.

    Raises:
        PrunescopeError: the file does not exist, or the server did not answer in time.
    """
    src = Path(path)
    if not src.is_file():
        raise PrunescopeError(f"no model file at {str(src)!r}")
    folder = Path(tempfile.mkdtemp(prefix="prunescope-netron-"))
    dst = folder / src.name
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)
    return _start(folder, dst, owner, timeout)


def write_onnx_for_view(model, example, path: str | Path) -> Path:
    """Write ``model`` as ONNX to ``path`` for viewing (no recipe, no verification).

    Raises:
        PrunescopeError: the model cannot be written as ONNX (the reason is named).
    """
    from .exporters import EXPORTERS

    import torch

    path = Path(path)
    x = example[:2] if example.shape[0] >= 2 else torch.cat([example, example])  # a batch of 2 stays dynamic
    try:
        EXPORTERS.get("onnx").write(model.eval(), x, path, None)
    except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one clear message
        raise PrunescopeError(f"could not write the model as ONNX for the graph view: "
                         f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                         ) from None
    return path


def view_model(model, example, *, name: str = "model", owner: str = "default", timeout: float = 20.0) -> str:
    """Write ``model`` as ONNX into a fresh folder and serve it; return the URL.

    Args:
        model: any module that exports to ONNX (not changed, but put in eval mode).
        example: an input batch (at least one example) on the model's device.
        name: file name stem (letters, digits, ``-``, ``_``).

    Raises:
        PrunescopeError: a bad name, the model does not export, or netron did not start.
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise PrunescopeError(f"name must use letters, digits, '-' and '_', got {name!r}")
    folder = Path(tempfile.mkdtemp(prefix="prunescope-netron-"))
    try:
        path = write_onnx_for_view(model, example, folder / f"{name}.onnx")
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _start(folder, path, owner, timeout)


__all__ = ["serve_file", "view_model", "write_onnx_for_view", "stop", "stop_all", "running", "MAX_SERVERS"]
