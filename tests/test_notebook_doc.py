"""Every python block of docs/notebook.md runs, in order, in one namespace."""
import re
from pathlib import Path

import plotly.graph_objects as go

DOC = Path(__file__).resolve().parents[1] / "docs" / "notebook.md"


def test_notebook_doc_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), ns)
    assert ns["m"].params < ns["base"].params
    for name in ("overview", "histogram", "per_class", "pareto", "influence", "drop_one"):
        assert isinstance(ns[name], go.Figure), name
    assert [r.format for r in ns["results"] if r.verified] == ["safetensors", "onnx", "pt2", "torchscript"]
    assert ns["url"].startswith("http://127.0.0.1:")
