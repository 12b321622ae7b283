"""Netron views of model graphs, served by the app's own server (same origin as the page).

Netron's web app ships in the ``netron`` package. This module keeps one folder per
process (:func:`site`): Netron's assets, hard-linked (else copied) once, and for each view
a page ``<token>.html`` plus its one model file under ``data/<token>/``. The token is
random, so a view's URL cannot be guessed. The app registers the folder as a Streamlit
component, whose files the Streamlit server serves at ``component/<name>/<file>``: a
view then works wherever the app page works (offline, behind the same proxy, from a
browser on another machine), and nothing outside the folder can be reached (Streamlit
resolves every path inside the component's root).

Each view's page differs from Netron's ``index.html`` only in its ``<meta>`` tags and
one script:

* ``file``: the view's model file, opened at start;
* ``version`` 0.0.0 (Netron's development mode: no telemetry requests) and ``date`` the
  time of writing (Netron blocks with "Please update" 180 days after its build date);
* ``prunescope-netron.js``, run before Netron, sets Netron's consent cookie, so no cookie
  prompt is shown and Netron asks no outside server where the browser is.

Views are grouped by ``(owner, key)`` (the app passes one owner per browser session and
one key per place on a page): a new view replaces that pair's previous one, at most
:data:`MAX_VIEWS` are kept (the oldest go first), and the folder is removed at exit.
"""
from __future__ import annotations

import atexit
import datetime as dt
import functools
import html
import http.server
import os
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import netron

from core.errors import PrunescopeError

MAX_VIEWS = 32  # views kept over all owners; the oldest are removed first
ASSETS = Path(netron.__file__).resolve().parent  # Netron's web app, shipped in the package
SERVED = {".html", ".js", ".css", ".png", ".ico", ".json", ".svg", ".woff", ".woff2", ".ttf"}
SCRIPT = "prunescope-netron.js"
# Netron shows its cookie prompt unless a 'consent' cookie is set; Netron's page allows
# only same-origin scripts (CSP script-src 'self'), hence a file rather than inline code.
_SCRIPT_TEXT = "document.cookie = 'consent=' + Date.now() + '; max-age=2592000; path=/; SameSite=Lax';\n"


@dataclass(frozen=True)
class View:
    owner: str  # who made it (one per app session)
    key: str  # which place on a page shows it
    token: str  # random: the page is <token>.html, the file is under data/<token>/
    file_name: str  # the model file's name

    @property
    def page(self) -> str:
        """The view's page, relative to the site folder."""
        return f"{self.token}.html"


_root: Path | None = None
_views: list[View] = []
_lock = threading.Lock()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def site() -> Path:
    """The folder served for Netron views (made on first use: Netron's assets, the script)."""
    global _root
    with _lock:
        if _root is None:
            root = Path(tempfile.mkdtemp(prefix="prunescope-netron-"))
            for f in ASSETS.iterdir():
                if f.is_file() and f.suffix in SERVED:
                    _link_or_copy(f, root / f.name)
            (root / SCRIPT).write_text(_SCRIPT_TEXT)
            (root / "data").mkdir()
            _root = root
        return _root


def _page_html(view: View) -> str:
    """Netron's index.html with this view's meta tags and the consent script."""
    text = (ASSETS / "index.html").read_text(encoding="utf-8")
    name = html.escape(view.file_name, quote=True)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    meta = "\n".join(['<meta name="type" content="Python">', '<meta name="version" content="0.0.0">',
                      f'<meta name="date" content="{now}">',
                      f'<meta name="file" content="data/{view.token}/{name}">',
                      f'<meta name="name" content="{name}">', f'<meta name="identifier" content="{name}">',
                      f'<script type="text/javascript" src="{SCRIPT}"></script>'])
    text = re.sub(r'<meta name="date" content="[^"]*">\s*', "", text)
    return re.sub(r'<meta name="version" content="[^"]*">', lambda _: meta, text, count=1)


def _remove(view: View, root: Path) -> None:
    (root / view.page).unlink(missing_ok=True)
    shutil.rmtree(root / "data" / view.token, ignore_errors=True)


def serve_file(path: str | Path, *, owner: str = "default", key: str = "graph") -> View:
    """Add a view of one model file (hard-linked or copied into the site); return it.

    ``owner``'s previous view under ``key`` is removed first.

    Raises:
        PrunescopeError: no file at ``path``.
    """
    src = Path(path)
    if not src.is_file():
        raise PrunescopeError(f"no model file at {str(src)!r}")
    root = site()
    view = View(owner, key, secrets.token_hex(16), src.name)
    folder = root / "data" / view.token
    folder.mkdir()
    _link_or_copy(src, folder / src.name)
    (root / view.page).write_text(_page_html(view), encoding="utf-8")
    with _lock:
        old = [v for v in _views if (v.owner, v.key) == (owner, key)]
        for v in old:
            _views.remove(v)
        _views.append(view)
        excess = _views[:-MAX_VIEWS] if len(_views) > MAX_VIEWS else []
        del _views[:len(excess)]
    for v in old + excess:
        _remove(v, root)
    return view


def write_onnx_for_view(model, example, path: str | Path) -> Path:
    """Write ``model`` as ONNX to ``path`` for viewing (no recipe, no verification).

    Raises:
        PrunescopeError: the model cannot be written as ONNX (the reason is named).
    """
    import torch

    from core.io.exporters import EXPORTERS, export_errors

    path = Path(path)
    x = example[:2] if example.shape[0] >= 2 else torch.cat([example, example])  # a batch of 2 stays dynamic
    try:
        EXPORTERS.get("onnx").write(model.eval(), x, path, None)
    except export_errors() as exc:  # the exporter failing on this model: one clear message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PrunescopeError(f"could not write the model as ONNX for the graph view: "
                              f"{exc.__class__.__name__}: {first}") from exc
    return path


def view_model(model, example, *, name: str = "model", owner: str = "default", key: str = "graph") -> View:
    """Write ``model`` as ONNX and add a view of it; return the view.

    Args:
        model: any module that exports to ONNX (not changed, but put in eval mode).
        example: an input batch (at least one example) on the model's device.
        name: file name stem (letters, digits, ``-``, ``_``).

    Raises:
        PrunescopeError: a bad name, or the model does not export.
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise PrunescopeError(f"name must use letters, digits, '-' and '_', got {name!r}")
    folder = Path(tempfile.mkdtemp(prefix="prunescope-onnx-"))
    try:
        path = write_onnx_for_view(model, example, folder / f"{name}.onnx")
        return serve_file(path, owner=owner, key=key)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Files of the site folder only (the standard handler keeps paths inside ``directory``)."""

    def log_message(self, format, *args):  # quiet: no request lines on stderr
        pass

    def list_directory(self, path):  # no listings: a view's name is its secret
        self.send_error(404)


_httpd: http.server.ThreadingHTTPServer | None = None


def serve_http(view: View) -> str:
    """The view's URL from a small server on 127.0.0.1 (started once): for a notebook or a
    script, where no app serves the site. Stop it with :func:`stop_http`.

    Raises:
        PrunescopeError: the server cannot start.
    """
    global _httpd
    root = site()
    with _lock:
        if _httpd is None:
            handler = functools.partial(_SiteHandler, directory=str(root))
            try:
                _httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            except OSError as exc:
                raise PrunescopeError(f"cannot start the graph server on 127.0.0.1: {exc.strerror or exc}") from exc
            _httpd.daemon_threads = True
            threading.Thread(target=_httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        port = _httpd.server_address[1]
    return f"http://127.0.0.1:{port}/{view.page}"


def stop_http() -> None:
    """Stop the server of :func:`serve_http` (the views stay)."""
    global _httpd
    with _lock:
        httpd, _httpd = _httpd, None
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()


def views() -> list[View]:
    """The views kept now, oldest first."""
    with _lock:
        return list(_views)


def drop(owner: str, key: str | None = None) -> None:
    """Remove ``owner``'s views (only the one under ``key`` when given)."""
    with _lock:
        gone = [v for v in _views if v.owner == owner and key in (None, v.key)]
        for v in gone:
            _views.remove(v)
    root = _root
    if root is not None:
        for v in gone:
            _remove(v, root)


def remove_site() -> None:
    """Remove every view and the site folder (also runs at exit)."""
    global _root
    with _lock:
        root, _root = _root, None
        _views.clear()
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


atexit.register(remove_site)
atexit.register(stop_http)

__all__ = ["site", "serve_file", "serve_http", "stop_http", "view_model", "write_onnx_for_view", "views", "drop",
           "remove_site", "View", "MAX_VIEWS"]
