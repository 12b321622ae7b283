"""Text files as token ids: labels, next-token windows, padding, and clear refusals naming the file."""
from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch

from core.errors import FileError, PrunescopeError
from core.sources.hf import load_tokenizer, read_text, text_splits
from tests.helpers.hf import labelled, sentences


def test_labelled_lines_map_label_names_to_the_models_classes(hf_folders, text_files):
    d = read_text(text_files["labelled"], hf_folders["bert-cls"], seq_len=8, classes=["neg", "pos"])
    want = [int(a == "pos") for a, _ in labelled(80, 2)]
    assert d.classes == ["neg", "pos"] and d.y.tolist() == want
    assert d.x.dtype == torch.int64 and d.x.shape[0] == 80 and d.x.shape[1] <= 8
    assert (d.x[:, 0] == 2).all()  # [CLS] first: the tokenizer's own special tokens
    # without the model's names: sorted names; numbers are labels 0..K-1 as they are
    assert read_text(text_files["labelled"], hf_folders["bert-cls"], seq_len=8).classes == ["neg", "pos"]
    n = read_text(text_files["numbered"], hf_folders["bert-cls"], seq_len=8)
    assert n.y.tolist() == want and n.classes == ["0", "1"]


def test_lines_are_right_padded_with_the_pad_id(hf_folders, text_files):
    d = read_text(text_files["plain"], hf_folders["bert"], seq_len=32)
    tok = load_tokenizer(hf_folders["bert"])
    assert d.y is None and d.classes == []
    for row, line in zip(d.x, sentences(60, 1)):
        ids = tok(line)["input_ids"]
        assert row[:len(ids)].tolist() == ids and (row[len(ids):] == tok.pad_token_id).all()


def test_language_model_windows_hold_the_next_token_as_label(hf_folders, text_files):
    d = read_text(text_files["lm"], hf_folders["llama"], seq_len=16, task="language-model")
    tok = load_tokenizer(hf_folders["llama"])
    ids = []
    for line in sentences(150, 3):
        ids += tok(line, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // 17
    w = torch.tensor(ids[:n * 17]).view(n, 17)
    assert torch.equal(d.x, w[:, :16]) and torch.equal(d.y, w[:, 16])
    assert len(d.classes) == 64 and d.classes[tok.eos_token_id] == "<eos>"


def test_text_splits_are_seeded_and_stratified(hf_folders, text_files):
    a = text_splits("t", text_files["labelled"], hf_folders["bert-cls"], seq_len=8, classes=["neg", "pos"])
    b = text_splits("t", text_files["labelled"], hf_folders["bert-cls"], seq_len=8, classes=["neg", "pos"])
    assert torch.equal(a.x_test, b.x_test) and a.kind == "text" and len(a.x_test) + len(a.x_train) == 80
    y = torch.tensor([int(label == "pos") for label, _ in labelled(80, 2)])
    assert torch.bincount(a.y_test).tolist() == [round(0.25 * int((y == c).sum())) for c in (0, 1)]


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_bad_text_is_refused_naming_the_file(hf_folders, text_files, tmp_path):
    bert, cls = hf_folders["bert"], hf_folders["bert-cls"]
    lines = "\n".join(f"{i % 2}\t{s}" for i, s in enumerate(sentences(20)))
    cases = [
        (dict(path=tmp_path / "none.txt", tokenizer_folder=bert), FileError, "text file .*none.txt.* does not exist"),
        (dict(path=_write(tmp_path, "empty.txt", "\n \n"), tokenizer_folder=bert), FileError,
         "empty.txt is empty; accepted: one example per line"),
        (dict(path=_write(tmp_path, "bin.txt", b"\xff\xfe\x00abc"), tokenizer_folder=bert), FileError,
         "bin.txt is not UTF-8"),
        (dict(path=text_files["plain"], tokenizer_folder=tmp_path), FileError, "holds no tokenizer"),
        (dict(path=text_files["plain"], tokenizer_folder=cls, task="classification"), FileError,
         "plain.txt: line 1 has no label; classification needs label<TAB>text"),
        (dict(path=_write(tmp_path, "gap.txt", lines.replace("1\t", "2\t")), tokenizer_folder=cls), FileError,
         "gap.txt: labels must be 0..K-1 with every class present; missing \\[1\\]"),
        (dict(path=_write(tmp_path, "big.txt", lines.replace("1\t", "5\t")), tokenizer_folder=cls,
              classes=["neg", "pos"]), FileError, "big.txt: labels must be whole numbers 0..1 \\(the model has 2"),
        (dict(path=_write(tmp_path, "names.txt", lines.replace("1\t", "meh\t").replace("0\t", "pos\t")),
              tokenizer_folder=cls, classes=["neg", "pos"]), FileError, "names.txt: labels \\['meh'\\] are not among"),
        (dict(path=_write(tmp_path, "few.txt", "\n".join(sentences(3))), tokenizer_folder=bert), FileError,
         "few.txt has 3 examples; at least 8"),
        (dict(path=_write(tmp_path, "short.txt", "\n".join(sentences(5))), tokenizer_folder=hf_folders["llama"],
              task="language-model", seq_len=60), FileError, "short.txt: .* tokens make .* windows of 61 tokens"),
        (dict(path=text_files["plain"], tokenizer_folder=bert, seq_len=100), FileError,
         "seq_len 100 is longer than the model in 'bert' accepts \\(64 positions\\)"),
        (dict(path=text_files["plain"], tokenizer_folder=bert, max_bytes=100), FileError,
         "plain.txt is 0.0 MiB; at most"),
        (dict(path=text_files["plain"], tokenizer_folder=bert, seq_len=0), PrunescopeError, "seq_len must be"),
        (dict(path=text_files["plain"], tokenizer_folder=bert, task="translation"), PrunescopeError,
         "task must be one of"),
    ]
    for kwargs, err, msg in cases:
        with pytest.raises(err, match=msg):
            read_text(**kwargs)
