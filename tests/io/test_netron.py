"""Netron views: one folder served by the app's own server, one unguessable page and one
model file per view, Netron's assets offline, no cookie prompt, no telemetry, old views go.

(That the app's server serves the folder, and that the page shows the graph without a
prompt, is checked in a real browser: tests/e2e/test_pages.py.)"""
import datetime as dt
import re

import pytest

from core.io import netron as nv
from core.sources.bases import load_base


@pytest.fixture(autouse=True)
def no_views_left():
    yield
    for v in nv.views():
        nv.drop(v.owner)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    x = __import__("core.sources.datasets", fromlist=["x"]).get_dataset("digits").x_test[:2]
    path = nv.write_onnx_for_view(load_base("digits_mlp"), x, folder / "digits_mlp.onnx")
    (folder / "secret.txt").write_text("a sibling that must not be served")
    return path


def _meta(page: str) -> dict[str, str]:
    return dict(re.findall(r'<meta name="([^"]+)" content="([^"]*)">', page))


def test_a_view_is_one_page_and_one_file_under_a_random_token(onnx_file):
    v = nv.serve_file(onnx_file, owner="s", key="graph")
    root = nv.site()
    assert re.fullmatch(r"[0-9a-f]{32}", v.token)
    assert [p.name for p in (root / "data" / v.token).iterdir()] == ["digits_mlp.onnx"]
    assert (root / "data" / v.token / "digits_mlp.onnx").read_bytes() == onnx_file.read_bytes()
    assert not any(p.name == "secret.txt" for p in root.rglob("*"))
    assert _meta((root / v.page).read_text())["file"] == f"data/{v.token}/digits_mlp.onnx"


def test_the_page_has_no_cookie_prompt_no_telemetry_and_no_update_nag(onnx_file):
    v = nv.serve_file(onnx_file)
    page = (nv.site() / v.page).read_text()
    meta = _meta(page)
    assert meta["version"] == "0.0.0"  # Netron's development mode: no telemetry requests
    stamp = dt.datetime.strptime(meta["date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()) < 120
    assert page.count('<meta name="date"') == 1 and page.count('<meta name="version"') == 1
    # the consent cookie is set by a same-origin script that runs before Netron's own
    assert page.index(nv.SCRIPT) < page.index('src="index.js"')
    assert "consent=" in (nv.site() / nv.SCRIPT).read_text()
    assert "script-src 'self'" in page  # Netron's CSP stays: no inline script was added


def test_netron_assets_are_in_the_site(onnx_file):
    root = nv.site()
    for name in ("index.js", "browser.js", "view.js", "grapher.css", "onnx.js", "onnx-proto.js"):
        assert (root / name).is_file(), name
    assert not list(root.glob("*.py"))


def test_a_new_view_replaces_the_same_owners_view_under_the_same_key(onnx_file):
    first = nv.serve_file(onnx_file, owner="a", key="base")
    other_key = nv.serve_file(onnx_file, owner="a", key="current")
    other_owner = nv.serve_file(onnx_file, owner="b", key="base")
    second = nv.serve_file(onnx_file, owner="a", key="base")
    assert [(v.owner, v.key) for v in nv.views()] == [("a", "current"), ("b", "base"), ("a", "base")]
    assert not (nv.site() / first.page).exists() and not (nv.site() / "data" / first.token).exists()
    assert all((nv.site() / v.page).exists() for v in (other_key, other_owner, second))
    nv.drop("a")
    assert [v.owner for v in nv.views()] == ["b"]
    assert not (nv.site() / second.page).exists()


def test_at_most_max_views_are_kept(onnx_file, monkeypatch):
    monkeypatch.setattr(nv, "MAX_VIEWS", 2)
    made = [nv.serve_file(onnx_file, owner=f"s{i}") for i in range(3)]
    assert [v.owner for v in nv.views()] == ["s1", "s2"]
    assert not (nv.site() / made[0].page).exists() and (nv.site() / made[2].page).exists()


def test_view_model_writes_the_model_as_onnx():
    import onnx

    x = __import__("core.sources.datasets", fromlist=["x"]).get_dataset("digits").x_test[:1]  # one example is enough
    v = nv.view_model(load_base("digits_cnn"), x, name="digits_cnn", owner="model-page")
    graph = onnx.load(str(nv.site() / "data" / v.token / "digits_cnn.onnx")).graph
    assert sum(n.op_type == "Conv" for n in graph.node) == 3


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no model file at"):
        nv.serve_file(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="name must use letters"):
        nv.view_model(load_base("digits_mlp"), None, name="../x")
    assert nv.views() == []


def test_two_sessions_each_see_their_own_model(tmp_path):
    a, b = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"  # the same name, other bytes
    for p, data in ((a, b"first session"), (b, b"second session")):
        p.parent.mkdir()
        p.write_bytes(data)
    va = nv.serve_file(a, owner="session-1")
    vb = nv.serve_file(b, owner="session-2")
    assert va.page != vb.page
    assert (nv.site() / "data" / va.token / "model.onnx").read_bytes() == b"first session"
    assert (nv.site() / "data" / vb.token / "model.onnx").read_bytes() == b"second session"


def test_serve_http_serves_the_view_and_nothing_else(onnx_file):
    """For a notebook: a server on 127.0.0.1 over the site folder; no listing, no escape."""
    import urllib.error
    import urllib.request

    v = nv.serve_file(onnx_file)
    url = nv.serve_http(v)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith(v.page)
        with urllib.request.urlopen(url, timeout=5) as r:
            assert b"data/" + v.token.encode() in r.read()
        base = url.rsplit("/", 1)[0]
        with urllib.request.urlopen(f"{base}/data/{v.token}/digits_mlp.onnx", timeout=5) as r:
            assert r.read() == onnx_file.read_bytes()
        for bad in ("/data/", f"/data/{v.token}/", "/..%2F..%2Fetc%2Fpasswd", "/data/../../secret.txt"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(base + bad, timeout=5)
    finally:
        nv.stop_http()
