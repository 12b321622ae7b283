"""Tiny transformers models built from configs (random weights, seeded), saved with a
tokenizer trained here on a few sentences: nothing is downloaded (tests.helpers.hf builds them)."""
from __future__ import annotations

import pytest

from tests.helpers.hf import build, labelled, save, sentences, tokenizer


@pytest.fixture(scope="session")
def hf_folders(tmp_path_factory):
    """name -> folder: bert (encoder, no head), bert-cls (2 classes neg/pos), llama, llama-gqa
    (2 key/value heads for 4 query heads), gpt2; each with its tokenizer."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    bert_tok, lm_tok = tokenizer("bert"), tokenizer("lm")
    return {
        "bert": save(root / "bert", build("bert"), bert_tok),
        "bert-cls": save(root / "bert-cls", build("bert-cls"), bert_tok),
        "llama": save(root / "llama", build("llama"), lm_tok),
        "llama-gqa": save(root / "llama-gqa", build("llama", num_key_value_heads=2), lm_tok),
        "gpt2": save(root / "gpt2", build("gpt2"), lm_tok),
    }


@pytest.fixture(scope="session")
def text_files(tmp_path_factory):
    """name -> path: "plain" (one sentence a line), "labelled" (neg/pos<TAB>text), "numbered"
    (0/1<TAB>text), "lm" (enough text for windows of 16 + 1 tokens)."""
    root = tmp_path_factory.mktemp("text")
    files = {"plain": "\n".join(sentences(60, 1)),
             "labelled": "\n".join(f"{a}\t{b}" for a, b in labelled(80, 2)),
             "numbered": "\n".join(f"{int(a == 'pos')}\t{b}" for a, b in labelled(80, 2)),
             "lm": "\n".join(sentences(150, 3))}
    out = {}
    for k, v in files.items():
        (root / f"{k}.txt").write_text(v + "\n")
        out[k] = root / f"{k}.txt"
    return out
