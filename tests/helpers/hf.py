"""Helpers for the Hugging Face tests: tiny transformers models built from configs (random
weights, seeded), a word-level tokenizer trained on a few sentences, and the sentences
themselves; nothing is downloaded."""
from __future__ import annotations

import random

import torch

WORDS = ("the a cat dog bird fish sees likes eats chases finds red big small old new happy sad good bad "
         "quick slow house tree river park ball food water sun moon runs sleeps jumps sings").split()
GOOD, BAD = {"happy", "good", "new", "big"}, {"sad", "bad", "old", "small"}


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) for _ in range(n)]


def labelled(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(label name, text): "pos" when the text has more good words than bad ones."""
    out = []
    for s in sentences(n, seed):
        w = s.split()
        out.append(("pos" if sum(x in GOOD for x in w) >= sum(x in BAD for x in w) else "neg", s))
    return out


def tokenizer(kind: str):
    """A word-level tokenizer trained on the corpus: BERT-style ([CLS] text [SEP], [PAD] = 0)
    or LM-style (no special tokens added, <pad> and <eos>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if kind == "bert" else ["<pad>", "<unk>", "<eos>"]
    tok = Tokenizer(models.WordLevel(unk_token=special[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(sentences(200) + [" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=special))
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def save(folder, model, tok=None):
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    if tok is not None:
        tok.save_pretrained(str(folder))
    return folder


def build(arch: str, **over):
    """A tiny model of ``arch`` with seeded random weights."""
    import transformers as tf

    torch.manual_seed(0)
    if arch.startswith("bert"):
        cfg = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                            **({"num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}
                               if arch == "bert-cls" else {}), **over)
        return (tf.BertForSequenceClassification if arch == "bert-cls" else tf.BertModel)(cfg).eval()
    if arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=over.pop("num_key_value_heads", 4),
                             max_position_embeddings=64, pad_token_id=0, eos_token_id=2, bos_token_id=None,
                             tie_word_embeddings=False, **over)
        return tf.LlamaForCausalLM(cfg).eval()
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=2,
                            eos_token_id=2, tie_word_embeddings=False, **over)
        return tf.GPT2LMHeadModel(cfg).eval()
    raise ValueError(arch)


def register_workspace_model(name: str, folder, text_file, seq_len: int = 16) -> tuple[str, str]:
    """Register the folder as model ``name`` (factory core.sources.hf:hf_model) with ``text_file``
    as its dataset ``text:<name>``; returns ``(model name, dataset name)`` for
    :func:`unregister_workspace_model`."""
    from core.sources.datasets import get_dataset
    from core.sources.hf import load_hf, register_text_dataset
    from core.sources.models import register_factory

    _, info = load_hf(folder)
    ds = register_text_dataset(f"text:{name}", text_file, folder, seq_len=seq_len, task=info.task,
                               classes=info.classes or [str(i) for i in range(info.outputs)])
    register_factory("core.sources.hf:hf_model", weights=None, dataset=ds, name=name, task=info.task,
                     input_shape=tuple(get_dataset(ds).x_test.shape[1:]), kwargs={"path": str(folder)})
    return name, ds


def unregister_workspace_model(name: str, ds: str) -> None:
    from core.sources.datasets import DATASETS, get_dataset
    from core.sources.models import MODELS

    MODELS.unregister(name)
    DATASETS.unregister(ds)
    get_dataset.cache_clear()
