"""Text data for a Hugging Face model: a text file, one example per line, tokenized with the
tokenizer saved in the model's folder.

* classification: ``label<TAB>text`` on every line; labels are whole numbers 0..K-1, or
  names (mapped to the model's label names when it has them, else sorted);
* fidelity: one text per line (a leading ``label<TAB>`` is dropped when every line has one);
* language-model: the lines joined (an end-of-text token between lines when the tokenizer
  has one) and cut into windows of ``seq_len + 1`` tokens: ``x`` is the first ``seq_len``,
  ``y`` the token that follows.

Inputs are int64 token ids ``(N, T)``, right-padded with the tokenizer's pad id (lines
longer than ``seq_len`` tokens are truncated). Each example's line of text, as the file gave
it, is remembered by its row of token ids (:func:`original_text`): the views show what the
person wrote, not the tokenizer's decoding of it ("__anext__", not "_ _ anext _ _").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import torch

from core.errors import FileError, PrunescopeError, echo
from core.sources.hf.load import HF_TASKS, load_tokenizer

MAX_TEXT_BYTES = 64 << 20  # a text file larger than this is refused
MIN_EXAMPLES = 8  # as for any data a person brings
MAX_SEQ_LEN = 8192
MAX_REMEMBERED = 1_000_000  # lines remembered by original_text (more: the oldest are forgotten first)
_ORIGINAL: dict[bytes, str] = {}  # digest of a row of token ids -> the line it was read from


class TextData(NamedTuple):
    """Token ids, labels and class names read from a text file."""

    x: torch.Tensor  # (N, T) int64 token ids, right-padded with the pad id
    y: torch.Tensor | None  # (N,) int64 labels (next tokens for a language model); None: no labels
    classes: list[str]  # class names, index = label ([] without labels)


def _lines(p: Path, max_bytes: int) -> list[str]:
    if not p.is_file():
        raise FileError(f"text file {str(p)!r} does not exist")
    size = p.stat().st_size
    if size > max_bytes:
        raise FileError(f"text file {p.name} is {size / 2**20:.1f} MiB; at most {max_bytes / 2**20:.0f} MiB is "
                        "accepted")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileError(f"text file {p.name} is not UTF-8 text (byte {exc.start}); accepted: a UTF-8 text file with "
                        "one example per line, optionally label<TAB>text") from exc
    lines = [ln.strip("\r") for ln in text.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise FileError(f"text file {p.name} is empty; accepted: one example per line, optionally label<TAB>text")
    return lines


def _labels(p: Path, raw: list[str], classes: list[str] | None) -> tuple[torch.Tensor, list[str]]:
    """Label strings -> (labels, class names)."""
    if all(r.strip().lstrip("-").isdigit() for r in raw):
        y = torch.tensor([int(r) for r in raw], dtype=torch.long)
        k = len(classes) if classes else int(y.max()) + 1
        bad = sorted({int(v) for v in y.tolist() if not 0 <= v < k})
        if bad:
            raise FileError(f"text file {p.name}: labels must be whole numbers 0..{k - 1}"
                            f"{' (the model has ' + str(k) + ' classes)' if classes else ''}; got {bad[:10]}")
        if not classes and len(torch.unique(y)) != k:
            missing = sorted(set(range(k)) - set(y.tolist()))[:10]
            raise FileError(f"text file {p.name}: labels must be 0..K-1 with every class present; missing {missing}")
        return y, list(classes) if classes else [str(i) for i in range(k)]
    names = [r.strip() for r in raw]
    if classes:
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise FileError(f"text file {p.name}: labels {echo(unknown[:10])} are not among the model's classes "
                            f"{echo(list(classes))}; use those names or numbers 0..{len(classes) - 1}")
        table = {c: i for i, c in enumerate(classes)}
        return torch.tensor([table[n] for n in names], dtype=torch.long), list(classes)
    found = sorted(set(names))
    table = {c: i for i, c in enumerate(found)}
    return torch.tensor([table[n] for n in names], dtype=torch.long), found


def _max_positions(folder: Path) -> int | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    v = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _vocab_size(folder: Path, tok) -> int:
    try:
        v = json.loads((folder / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError):
        v = None
    return max(len(tok), v if isinstance(v, int) and not isinstance(v, bool) else 0)


def _pad(p: Path, seqs: list[list[int]], pad_id: int | None) -> torch.Tensor:
    t = max(len(s) for s in seqs)
    if pad_id is None and any(len(s) != t for s in seqs):
        raise FileError(f"text file {p.name}: lines tokenize to different lengths and the tokenizer has no pad "
                        "token to fill them; give the tokenizer a pad token (tokenizer.pad_token = ...) and save it "
                        "again")
    x = torch.full((len(seqs), t), pad_id if pad_id is not None else 0, dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return x


def read_text(path: str | Path, tokenizer_folder: str | Path, *, seq_len: int = 64, task: str | None = None,
              classes: list[str] | None = None, max_bytes: int = MAX_TEXT_BYTES) -> TextData:
    """Read a text file as token ids (and labels) with the tokenizer saved in ``tokenizer_folder``.

    Args:
        path: a UTF-8 text file, one example per line (blank lines skipped).
        tokenizer_folder: the model folder (its tokenizer files; its config.json, when there,
            bounds ``seq_len`` and gives a language model's vocabulary size).
        seq_len: tokens per example (classification / fidelity: longer lines are truncated;
            language-model: the window before the predicted token).
        task: "classification" (``label<TAB>text`` lines), "fidelity", "language-model", or
            None: classification when every line has a tab, else fidelity.
        classes: the model's class names (a classification head's labels), to check numeric
            labels against and to map named labels to.
        max_bytes: larger files are refused.

    Returns:
        ``TextData(x, y, classes)``: ``x`` (N, T) int64; ``y`` (N,) int64 or None; for a
        language model ``classes`` are the vocabulary's tokens (index = token id).

    Raises:
        FileError: no such file, too large, not UTF-8, empty, no tokenizer in the folder,
            lines without a label, labels that are not 0..K-1 or the model's class names,
            too few examples, a ``seq_len`` longer than the model accepts.
        PrunescopeError: a bad ``task`` or ``seq_len``.
    """
    if task is not None and task not in HF_TASKS:
        raise PrunescopeError(f"task must be one of {HF_TASKS} or None, got {echo(task)}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= MAX_SEQ_LEN:
        raise PrunescopeError(f"seq_len must be a whole number of tokens in [1, {MAX_SEQ_LEN}], got {echo(seq_len)}")
    p, folder = Path(path), Path(tokenizer_folder)
    lines = _lines(p, max_bytes)
    tok = load_tokenizer(folder)
    limit = _max_positions(folder)
    if limit is not None and seq_len > limit:
        raise FileError(f"seq_len {seq_len} is longer than the model in {folder.name!r} accepts ({limit} positions)")
    tabbed = all("\t" in ln for ln in lines)
    task = task or ("classification" if tabbed else "fidelity")
    if task == "language-model":
        return _windows(p, lines, tok, seq_len, _vocab_size(folder, tok))
    y, names = None, []
    if task == "classification":
        if not tabbed:
            no = next(i for i, ln in enumerate(lines) if "\t" not in ln)
            raise FileError(f"text file {p.name}: line {no + 1} has no label; classification needs label<TAB>text "
                            f"on every line, got {echo(lines[no][:80])}")
        raw, lines = zip(*(ln.split("\t", 1) for ln in lines))
        y, names = _labels(p, list(raw), classes)
    elif tabbed:
        lines = [ln.split("\t", 1)[1] for ln in lines]
    if len(lines) < MIN_EXAMPLES:
        raise FileError(f"text file {p.name} has {len(lines)} examples; at least {MIN_EXAMPLES} are needed")
    seqs = tok(list(lines), truncation=True, max_length=seq_len)["input_ids"]
    if any(len(s) == 0 for s in seqs):
        raise FileError(f"text file {p.name}: a line gives no tokens")
    x = _pad(p, seqs, tok.pad_token_id)
    _remember(x, lines)
    return TextData(x, y, names)


def _digest(row: torch.Tensor) -> bytes:
    return hashlib.blake2b(row.detach().to("cpu", torch.long).contiguous().numpy().tobytes(), digest_size=16).digest()


def _remember(x: torch.Tensor, lines) -> None:
    for row, line in zip(x, lines):
        key = _digest(row)
        _ORIGINAL.pop(key, None)  # re-inserted: the newest file's line, and the last to be forgotten
        _ORIGINAL[key] = line
    while len(_ORIGINAL) > MAX_REMEMBERED:
        del _ORIGINAL[next(iter(_ORIGINAL))]


def original_text(ids: torch.Tensor) -> str | None:
    """The line of text (as the file gave it, its label removed) that the row of token ids
    ``ids`` was read from by :func:`read_text` in this process; None when no text file read
    gave this row (a language model's windows are not lines: None)."""
    return _ORIGINAL.get(_digest(ids.flatten()))


def _windows(p: Path, lines: list[str], tok, seq_len: int, vocab: int) -> TextData:
    eos = tok.eos_token_id
    ids: list[int] = []
    for s in tok(lines, add_special_tokens=False)["input_ids"]:
        ids += s + ([eos] if eos is not None else [])
    n = len(ids) // (seq_len + 1)
    if n < MIN_EXAMPLES:
        raise FileError(f"text file {p.name}: {len(ids)} tokens make {n} windows of {seq_len + 1} tokens; at least "
                        f"{MIN_EXAMPLES} are needed (more text, or a shorter seq_len)")
    w = torch.tensor(ids[: n * (seq_len + 1)], dtype=torch.long).view(n, seq_len + 1)
    names = tok.convert_ids_to_tokens(list(range(len(tok))))
    names = [str(t) for t in names] + [str(i) for i in range(len(names), vocab)]
    return TextData(w[:, :seq_len].contiguous(), w[:, seq_len].contiguous(), names)


def text_splits(name: str, path: str | Path, folder: str | Path, *, seq_len: int = 64, task: str | None = None,
                classes: list[str] | None = None, seed: int = 0):
    """A text file as :class:`core.sources.datasets.DataSplits` (kind "text"): a fixed, seeded 75/25 split,
    stratified by label for classification. Without labels ``y`` is zeros (the fidelity task
    never reads it) and ``classes`` is ``classes`` or ``[]``."""
    from core.sources.datasets import DataSplits

    d = read_text(path, folder, seq_len=seq_len, task=task, classes=classes)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(d.x), generator=g)
    if d.y is not None and task != "language-model" and len(d.classes) <= 1000:
        test = torch.cat([perm[d.y[perm] == c][: max(1, round(0.25 * int((d.y == c).sum())))]
                          for c in range(len(d.classes)) if int((d.y == c).sum())])
    else:
        test = perm[: max(1, round(0.25 * len(d.x)))]
    keep = torch.ones(len(d.x), dtype=torch.bool)
    keep[test] = False
    y = d.y if d.y is not None else torch.zeros(len(d.x), dtype=torch.long)
    return DataSplits(name, d.x[keep], y[keep], d.x[~keep], y[~keep], d.classes or list(classes or []), kind="text",
                      description=f"text from {Path(path).name}" + ("" if d.y is not None else " (no labels)"))


def register_text_dataset(name: str, path: str | Path, folder: str | Path, *, seq_len: int = 64,
                          task: str | None = None, classes: list[str] | None = None) -> str:
    """Register a text file as dataset ``name`` (read once now, to refuse a bad file at once).

    Side effect: ``core.sources.datasets.DATASETS[name]`` is (re)placed. Returns ``name``.
    """
    from core.sources.datasets import register_dataset

    splits = text_splits(name, path, folder, seq_len=seq_len, task=task, classes=classes)
    register_dataset(name)(lambda: splits)
    return name


__all__ = ["TextData", "read_text", "text_splits", "register_text_dataset", "original_text", "MAX_TEXT_BYTES"]
