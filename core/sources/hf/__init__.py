"""Hugging Face transformers models from a local folder, and text data for them
(the optional extra ``prunescope[hf]``: transformers and tokenizers).

``load_hf(folder)`` gives a module mapping token ids ``(N, T)`` to ``(N, K)`` and what was
found; ``hf_model`` is its factory for ``register(..., factory="core.sources.hf:hf_model",
kwargs={"path": folder})``; ``read_text`` / ``text_splits`` / ``register_text_dataset``
turn a text file into token ids and labels. Importing this package does not import
transformers (only loading a model or a tokenizer does).
"""
from core.sources.hf.load import HF_TASKS, HFInfo, HFModel, hf_model, load_hf, load_tokenizer, pad_id_of
from core.sources.hf.text import (
    MAX_TEXT_BYTES,
    TextData,
    original_text,
    read_text,
    register_text_dataset,
    text_splits,
)

__all__ = ["HF_TASKS", "HFInfo", "HFModel", "hf_model", "load_hf", "load_tokenizer", "pad_id_of", "MAX_TEXT_BYTES",
           "TextData", "original_text", "read_text", "register_text_dataset", "text_splits"]
