"""`python -m benchmarks.table [RESULTS.json] [--readme README.md]`: the benchmark table in Markdown.

Reads a results file written by `python -m benchmarks` (default `benchmarks/results/latest.json`) and
prints one Markdown table: each row's figure with its unit, its target, whether it met it, and its
detail, under a line that says when and on what machine the figures were measured. With `--readme`
the table replaces the text between `<!-- bench:start -->` and `<!-- bench:end -->` in that file,
so the README shows the latest run and says which one it is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _value(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict) -> str:
    """The results document ``doc`` (``{"time", "machine", "rows"}``) as a Markdown table."""
    m = doc.get("machine", {})
    stamp = doc.get("time", "?")
    when = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}" if len(stamp) >= 13 else stamp
    gpu = m.get("cuda") or "no GPU"
    head = (f"Measured {when} (local time of the run) on {m.get('cpu_cores', '?')} CPU cores, "
            f"{m.get('torch_threads', '?')} torch threads, {gpu}, torch {m.get('torch', '?')}, "
            f"{m.get('platform', '?')}. Ratios compare with a baseline run in the same process.")
    lines = [head, "", "| benchmark | value | target | met | detail |", "| --- | --- | --- | --- | --- |"]
    for r in doc.get("rows", []):
        met = "–" if r.get("value") is None and r.get("ok") else ("yes" if r.get("ok") else "**no**")
        value = f"{_value(r.get('value'))} {r.get('unit', '')}".strip()
        lines.append(f"| {_cell(r.get('name', ''))} | {_cell(value)} | {_cell(r.get('target', ''))} | {met} "
                     f"| {_cell(r.get('detail', ''))} |")
    return "\n".join(lines) + "\n"


def replace_section(text: str, table: str) -> str:
    """``text`` with the part between the bench markers replaced by ``table``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    a, b = text.find(START), text.find(END)
    if a < 0 or b < a:
        raise ValueError(f"the file has no {START} ... {END} section to replace")
    return text[:a + len(START)] + "\n" + table + text[b:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.table")
    ap.add_argument("results", nargs="?", default=str(HERE / "results" / "latest.json"))
    ap.add_argument("--readme", help="replace the table between the bench markers of this file")
    args = ap.parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        print(f"no results file at {path}: run `python -m benchmarks` first", file=sys.stderr)
        return 2
    table = markdown(json.loads(path.read_text()))
    if args.readme:
        readme = Path(args.readme)
        try:
            readme.write_text(replace_section(readme.read_text(), table))
        except ValueError as exc:
            print(f"{readme}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote the table of {path.name} into {readme}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
