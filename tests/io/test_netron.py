"""Netron view: 127.0.0.1, only the one file is reachable, old views stop, offline assets."""
import logging
import urllib.error
import urllib.request

import pytest

from core.io import netron as nv
from core.models import load_base


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return r.read()


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
    except urllib.error.HTTPError as e:
        return e.code == 404
    except OSError:  # connection refused: the server is gone
        return True
    return False


@pytest.fixture(autouse=True)
def no_servers_left():
    yield
    nv.stop_all()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    x = __import__("core.data", fromlist=["x"]).get_dataset("digits").x_test[:2]
    path = nv.write_onnx_for_view(load_base("digits_mlp"), x, folder / "digits_mlp.onnx")
    (folder / "secret.txt").write_text("a sibling that must not be served")
    return path


def test_netron_serves_the_model_and_refuses_a_sibling_file(onnx_file):
    url = nv.serve_file(onnx_file)
    assert url.startswith("http://127.0.0.1:")
    assert b"<html" in get(url).lower()
    assert get(url + "data/digits_mlp.onnx") == onnx_file.read_bytes()
    assert refused(url + "data/secret.txt")
    assert refused(url + "data/..%2Fsecret.txt") and refused(url + "data/%2E%2E/secret.txt")
    (server,) = nv._servers
    assert [f.name for f in server.folder.iterdir()] == ["digits_mlp.onnx"]


def test_netron_works_offline_with_its_own_assets(onnx_file):
    url = nv.serve_file(onnx_file)
    assert get(url + "index.js") and get(url + "grapher.css")


def test_stop_all_stops_the_server_and_removes_its_folder(onnx_file):
    url = nv.serve_file(onnx_file)
    folder = nv._servers[0].folder
    nv.stop_all()
    assert not folder.exists() and nv.running() == []
    assert refused(url)
    assert onnx_file.exists()  # the original is untouched


def test_a_new_view_stops_the_same_owners_previous_one(onnx_file):
    first = nv.serve_file(onnx_file, owner="session-a")
    other = nv.serve_file(onnx_file, owner="session-b")
    second = nv.serve_file(onnx_file, owner="session-a")
    assert first != second
    assert refused(first)
    assert get(other) and get(second)
    assert [o for o, _ in nv.running()] == ["session-b", "session-a"]
    nv.stop("session-a")
    assert refused(second) and get(other)


def test_at_most_max_servers_run_at_once(onnx_file, monkeypatch):
    monkeypatch.setattr(nv, "MAX_SERVERS", 2)
    urls = [nv.serve_file(onnx_file, owner=f"s{i}") for i in range(3)]
    assert [o for o, _ in nv.running()] == ["s1", "s2"]
    assert refused(urls[0]) and get(urls[2])


def test_view_model_serves_the_base_model_as_onnx():
    import onnx

    x = __import__("core.data", fromlist=["x"]).get_dataset("digits").x_test[:1]  # one example is enough
    url = nv.view_model(load_base("digits_cnn"), x, name="digits_cnn", owner="model-page")
    data = get(url + "data/digits_cnn.onnx")
    graph = onnx.load_from_string(data).graph
    assert any(n.op_type == "Conv" for n in graph.node)
    assert [f.name for f in nv._servers[0].folder.iterdir()] == ["digits_cnn.onnx"]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no model file at"):
        nv.serve_file(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="name must use letters"):
        nv.view_model(load_base("digits_mlp"), None, name="../x")
    assert nv.running() == []


def test_starting_netron_does_not_configure_the_root_logger(onnx_file):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    nv.serve_file(onnx_file)
    assert (list(root.handlers), root.level) == before


def test_two_sessions_each_see_their_own_model(tmp_path):
    a, b = tmp_path / "a" / "model.onnx", tmp_path / "b" / "model.onnx"  # the same name, other bytes
    for p, data in ((a, b"first session"), (b, b"second session")):
        p.parent.mkdir()
        p.write_bytes(data)
    try:
        ua = nv.serve_file(a, owner="session-1")
        ub = nv.serve_file(b, owner="session-2")
        assert ua != ub
        assert get(ua + "data/model.onnx") == b"first session"
        assert get(ub + "data/model.onnx") == b"second session"
        assert get(ua + "data/model.onnx") == b"first session"  # still its own after the second started
        for url in (ua, ub):
            assert refused(url + "data/other.onnx")
            assert refused(url + "..%2F..%2F..%2Fetc%2Fpasswd")
            assert b'content="/data/model.onnx"' in get(url)
    finally:
        nv.stop_all()
