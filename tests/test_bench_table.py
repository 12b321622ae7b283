"""The README's benchmark table is written from a results file (`python -m benchmarks.table`)."""
from __future__ import annotations

import json

import pytest

from benchmarks.table import END, START, main, markdown, replace_section

DOC = {"time": "20261205-071500",
       "machine": {"cpu_cores": 2, "torch_threads": 2, "torch": "2.14.1", "platform": "Linux-x", "cuda": None},
       "rows": [{"name": "global threshold", "value": 21.456, "unit": "x faster", "target": ">=20x", "ok": True,
                 "detail": "ours 300 ms | torch 6400 ms"},
                {"name": "structured step", "value": 1.31, "unit": "x", "target": "<=1.2x", "ok": False,
                 "detail": "noisy"},
                {"name": "sweep on Ray", "value": None, "unit": "", "target": "", "ok": True, "detail": "skipped"}]}


def test_the_table_says_when_where_and_which_rows_missed():
    t = markdown(DOC)
    assert "2026-12-05 07:15" in t and "2 CPU cores" in t and "no GPU" in t
    assert "| global threshold | 21.5 x faster | >=20x | yes | ours 300 ms \\| torch 6400 ms |" in t
    assert "| structured step | 1.31 x | <=1.2x | **no** | noisy |" in t
    assert "| sweep on Ray | – | " in t


def test_the_readme_section_is_replaced_between_the_markers_only(tmp_path):
    res = tmp_path / "r.json"
    res.write_text(json.dumps(DOC))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold table\n{END}\nafter\n")
    assert main([str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n" + START) and text.endswith(END + "\nafter\n")
    assert "old table" not in text and "global threshold" in text


def test_a_readme_without_markers_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="bench:start"):
        replace_section("no markers here", "t")
    readme = tmp_path / "README.md"
    readme.write_text("plain")
    res = tmp_path / "r.json"
    res.write_text(json.dumps(DOC))
    assert main([str(res), "--readme", str(readme)]) == 2
    assert readme.read_text() == "plain"


def test_a_missing_results_file_says_what_to_run(tmp_path, capsys):
    assert main([str(tmp_path / "none.json")]) == 2
    assert "python -m benchmarks" in capsys.readouterr().err
