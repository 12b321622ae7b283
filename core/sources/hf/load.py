"""A Hugging Face transformers model from a local folder, as a module prunescope can judge.

The folder is what ``save_pretrained`` writes: ``config.json`` and the weights
(``model.safetensors``, sharded safetensors with their index, or ``pytorch_model.bin``
read with ``weights_only=True``), plus the tokenizer files when present. Nothing is
downloaded and no code from the folder runs (``trust_remote_code=False``; a config that
asks for its own code is refused).

The engine works on ``(N, K)`` outputs, so :class:`HFModel` wraps the transformers model:
its forward takes token ids ``(N, T)`` (int64; right-padded with the pad id) and returns

* ``"classification"``: the logits of a sequence-classification head, ``(N, num_labels)``;
* ``"fidelity"`` (an encoder without such a head): the pooled embedding, ``(N, hidden)``,
  the mean over non-pad tokens (``pooling="mean"``) or the CLS pooler's output
  (``pooling="cls"``); an embedding (``output_kind`` "embedding"), judged by its cosine and
  nearest-neighbour recall@k against the base's embeddings (no argmax over its features);
* ``"language-model"`` (a causal LM): the next-token logits at the last non-pad
  position, ``(N, vocab)``; a label is the true next token, so accuracy is next-token
  accuracy, loss next-token cross-entropy and perplexity ``exp(loss)``. A causal LM asked
  for ``"fidelity"`` gives the same logits, judged against the base's.

GPT-2's ``Conv1D`` layers (a Linear with its weight transposed) are replaced by
``nn.Linear`` with the same function, so weight, neuron and head pruning see them.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from core.errors import FOREIGN_ERRORS, FileError, ModelError, echo, first_line

HF_TASKS = ("classification", "fidelity", "language-model")
POOLINGS = ("mean", "cls")
ACCEPTED = ("a folder written by save_pretrained: config.json and model.safetensors (or sharded safetensors "
            "with model.safetensors.index.json, or pytorch_model.bin holding tensors only), tokenizer files "
            "optional")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")
BLOCK_LISTS = ("encoder.layer", "model.layers", "transformer.h", "layers", "h", "layer")  # under the base model


# what transformers' and torch's readers raise for a folder's reasons (a damaged or foreign
# file, an unknown model_type); caught around those calls alone
_FOLDER_ERRORS = (OSError, EOFError, pickle.UnpicklingError, SafetensorError, *FOREIGN_ERRORS)


def transformers():
    """The ``transformers`` module, or a clear error naming the extra to install."""
    try:
        import transformers as tf
    except ImportError as exc:
        raise ModelError("Hugging Face models need the transformers package: pip install 'prunescope[hf]'") \
            from exc
    return tf


@dataclass(frozen=True)
class HFInfo:
    """What :func:`load_hf` found in a folder (plain data)."""

    folder: str  # absolute path
    model_type: str  # config.model_type, e.g. "bert"
    architecture: str  # the transformers class built, e.g. "BertForSequenceClassification"
    task: str  # "classification" | "fidelity" | "language-model"
    outputs: int  # K of the (N, K) output
    vocab_size: int
    pad_id: int | None  # token id of padding (None: inputs are never padded)
    max_positions: int | None  # longest input the model accepts (position embeddings), None: unbounded
    weights: str  # file name of the weights read
    tokenizer: bool  # the folder holds tokenizer files
    block_container: str | None  # the list of layers, as a path in the wrapper (e.g. "hf.bert.encoder.layer")
    classes: list[str] = field(default_factory=list)  # label names of a classification head (index = label)
    pooling: str | None = None  # "mean" | "cls" for an encoder judged by fidelity
    output_kind: str = "logits"  # "embedding" for the pooled output of an encoder, else "logits" (class scores)


class HFModel(nn.Module):
    """A transformers model whose forward maps token ids ``(N, T)`` to ``(N, K)``.

    Args:
        hf: the transformers model (``hf`` is its module path in this wrapper).
        output: "logits" (a classification head's), "next-token" (a causal LM's logits at the
            last non-pad position) or "pooled" (an encoder's embedding).
        pad_id: the padding token id, masked out of attention; None: no mask.
        pooling: "mean" or "cls" for ``output="pooled"``.
    """

    def __init__(self, hf: nn.Module, output: str, pad_id: int | None, pooling: str = "mean"):
        super().__init__()
        self.hf = hf
        self.output = output
        self.pad_id = pad_id
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():  # a float tensor of whole numbers (a tensors file, a zero probe batch)
            x = x.round().long()
        mask = None if self.pad_id is None else (x != self.pad_id).long()  # (N, T)
        if self.output == "logits":
            return self.hf(input_ids=x, attention_mask=mask).logits
        if self.output == "next-token":
            h = self.hf.base_model(input_ids=x, attention_mask=mask, use_cache=False).last_hidden_state  # (N, T, H)
            if mask is None:
                h = h[:, -1]  # (N, H)
            else:  # the last real token's state (right padding); gather keeps the batch size symbolic for export
                last = (mask.sum(1) - 1).clamp(min=0)  # (N,)
                h = h.gather(1, last[:, None, None].expand(-1, 1, h.shape[-1]))[:, 0]
            return self.hf.get_output_embeddings()(h)  # (N, vocab)
        out = self.hf(input_ids=x, attention_mask=mask)
        if self.pooling == "cls":
            return out.pooler_output
        h = out.last_hidden_state  # (N, T, H)
        if mask is None:
            return h.mean(1)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)


def _validate_folder(folder) -> Path:
    p = Path(folder) if isinstance(folder, (str, Path)) else None
    if p is None:
        raise FileError(f"a Hugging Face model folder must be a path, got {echo(folder)}")
    if not p.is_dir():
        raise FileError(f"Hugging Face model folder {str(p)!r} does not exist or is not a folder; accepted: {ACCEPTED}")
    if not (p / "config.json").is_file():
        raise FileError(f"{str(p)!r} has no config.json; accepted: {ACCEPTED}")
    return p.resolve()


def _read_config(p: Path):
    tf = transformers()
    try:
        raw = json.loads((p / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileError(f"{p / 'config.json'}: not readable JSON ({first_line(exc)})") from exc
    if not isinstance(raw, dict):
        raise FileError(f"{p / 'config.json'}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("auto_map"):
        raise ModelError(f"{str(p)!r}: its config.json asks for model code shipped in the folder (auto_map); "
                         "prunescope never runs code from a model folder. Accepted: architectures built into "
                         f"transformers {tf.__version__}")
    try:
        return tf.AutoConfig.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
    except _FOLDER_ERRORS as exc:  # unknown model_type, a damaged config: the folder's
        raise ModelError(f"{str(p)!r}: transformers {tf.__version__} cannot read this config (model_type "
                         f"{raw.get('model_type')!r}: {first_line(exc)}); accepted: architectures built into "
                         "transformers, e.g. bert, roberta, llama, gpt2, mistral, qwen2") from exc


def _weights_file(p: Path) -> str:
    """The weights file to read; a pickle is checked to hold tensors only (``weights_only``)."""
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (p / name).is_file():
            return name
    if (p / "pytorch_model.bin").is_file():
        try:
            torch.load(str(p / "pytorch_model.bin"), map_location="meta", weights_only=True)
        except _FOLDER_ERRORS as exc:  # transformers / torch reading the folder
            raise FileError(f"{p / 'pytorch_model.bin'}: not a weights-only torch file ({type(exc).__name__}): a "
                            "full pickle runs code when loaded and is refused; accepted: " + ACCEPTED) from exc
        return "pytorch_model.bin"
    found = sorted(x.name for x in p.iterdir())[:12]
    raise FileError(f"{str(p)!r} has no weights (found {found}); accepted: {ACCEPTED}")


def _kind(config) -> str:
    """'classification', 'language-model' or 'encoder', from the config's architectures."""
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        return "classification"
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return "language-model"
    return "encoder"


def _auto_class(tf, kind: str, task: str, p: Path):
    if task == "classification":
        if kind != "classification":
            raise ModelError(f"{str(p)!r}: task 'classification' needs a sequence-classification head "
                             "(config.architectures ending in ForSequenceClassification); this model has none: use "
                             "task 'fidelity' (its pooled embedding)")
        return tf.AutoModelForSequenceClassification
    if task == "language-model":
        if kind != "language-model":
            raise ModelError(f"{str(p)!r}: task 'language-model' needs a causal language model "
                             "(config.architectures ending in ForCausalLM or LMHeadModel)")
        return tf.AutoModelForCausalLM
    if kind == "language-model":  # fidelity of the next-token logits
        return tf.AutoModelForCausalLM
    return tf.AutoModel


def _linear_from_conv1d(m: nn.Module) -> nn.Linear:
    lin = nn.Linear(m.nx, m.nf)
    with torch.no_grad():
        lin.weight.copy_(m.weight.t())
        lin.bias.copy_(m.bias)
    return lin


def _replace_conv1d(model: nn.Module) -> None:
    """GPT-2's ``Conv1D`` (``x @ W + b`` with ``W`` (in, out)) as the equivalent ``nn.Linear``."""
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, _linear_from_conv1d(child))


def _block_container(wrapper: nn.Module) -> str | None:
    mods = dict(wrapper.named_modules())
    base = [n for n, m in mods.items() if m is wrapper.hf.base_model][0]
    for path in BLOCK_LISTS:
        full = f"{base}.{path}"
        if isinstance(mods.get(full), nn.ModuleList) and len(mods[full]) >= 2:
            return full
    return None


def _has_tokenizer(p: Path) -> bool:
    return any((p / f).is_file() for f in TOKENIZER_FILES)


def pad_id_of(folder, config=None) -> int | None:
    """The padding token id of a model folder: its tokenizer's, else ``config.pad_token_id``."""
    p = Path(folder)
    tc = p / "tokenizer_config.json"
    if (p / "tokenizer.json").is_file() or tc.is_file():
        tok = load_tokenizer(p)
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
    pid = getattr(config, "pad_token_id", None) if config is not None else None
    return int(pid) if isinstance(pid, int) and not isinstance(pid, bool) and pid >= 0 else None


def load_tokenizer(folder):
    """The tokenizer saved in a model folder (local files only, no code from the folder).

    Raises:
        FileError: no tokenizer files, or they cannot be read.
    """
    tf = transformers()
    p = Path(folder)
    if not p.is_dir() or not _has_tokenizer(p):
        raise FileError(f"{str(p)!r} holds no tokenizer (one of {', '.join(TOKENIZER_FILES)}); text data needs the "
                        "model's tokenizer saved in its folder (tokenizer.save_pretrained)")
    try:
        return tf.AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
    except _FOLDER_ERRORS as exc:  # the folder's tokenizer files
        raise FileError(f"{str(p)!r}: the tokenizer could not be read ({type(exc).__name__}: {first_line(exc)})") \
            from exc


def load_hf(folder: str | Path, task: str | None = None, *, pooling: str = "mean") -> tuple[HFModel, HFInfo]:
    """Load a transformers model from a local folder as an :class:`HFModel` (eval mode, float32).

    Args:
        folder: the folder ``save_pretrained`` wrote.
        task: "classification" (a sequence-classification head), "language-model" (a causal
            LM), "fidelity" (an encoder's pooled embedding, or an LM's next-token logits
            judged against the base), or None: read from ``config.architectures``.
        pooling: "mean" (over non-pad tokens) or "cls" (the pooler's output), for an encoder
            judged by fidelity.

    Returns:
        ``(model, info)``.

    Raises:
        FileError: no such folder, no config.json, no weights, a pickle that is not weights-only.
        ModelError: transformers missing, an architecture transformers does not know, a config
            asking for code from the folder, a task the model has no head for.
    """
    tf = transformers()
    if task is not None and task not in HF_TASKS:
        raise ModelError(f"task must be one of {HF_TASKS} or None, got {echo(task)}")
    if pooling not in POOLINGS:
        raise ModelError(f"pooling must be one of {POOLINGS}, got {echo(pooling)}")
    p = _validate_folder(folder)
    config = _read_config(p)
    weights = _weights_file(p)
    kind = _kind(config)
    task = task or {"encoder": "fidelity"}.get(kind, kind)
    cls = _auto_class(tf, kind, task, p)
    bars = tf.utils.logging.is_progress_bar_enabled()
    tf.utils.logging.disable_progress_bar()  # no "Loading weights" bar in the CLI's or the app's output
    try:
        hf = cls.from_pretrained(str(p), config=config, local_files_only=True, trust_remote_code=False,
                                 use_safetensors=weights != "pytorch_model.bin", dtype=torch.float32,
                                 attn_implementation="sdpa")
    except _FOLDER_ERRORS as exc:  # a folder from elsewhere: its failure is the folder's
        raise ModelError(f"{str(p)!r}: transformers could not build {cls.__name__} from it "
                         f"({type(exc).__name__}: {first_line(exc)}); accepted: {ACCEPTED}") from exc
    finally:
        if bars:
            tf.utils.logging.enable_progress_bar()
    if task == "fidelity" and kind == "encoder":
        if pooling == "cls" and getattr(hf, "pooler", None) is None:
            raise ModelError(f"{str(p)!r}: pooling 'cls' needs a pooler layer; this {type(hf).__name__} has none: "
                             "use pooling 'mean'")
        if pooling == "mean" and getattr(hf, "pooler", None) is not None:
            hf.pooler = None  # unused: would otherwise run (and look like the output layer to the pruning graph)
    _replace_conv1d(hf)
    hf.eval()
    # A language model reads whole windows of text, never padded: no mask (a tokenizer's pad id is
    # often its end-of-text token, which does occur in the text).
    pad_id = None if kind == "language-model" else pad_id_of(p, config)
    output = "next-token" if kind == "language-model" else "logits" if task == "classification" else "pooled"
    model = HFModel(hf, output, pad_id, pooling).eval()
    probe = torch.ones(1, 2, dtype=torch.long)
    with torch.inference_mode():
        k = int(model(probe).shape[1])
    classes: list[str] = []
    if task == "classification":
        id2label = getattr(config, "id2label", None) or {}
        classes = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(k)]
    max_pos = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    info = HFInfo(folder=str(p), model_type=str(config.model_type), architecture=type(hf).__name__, task=task,
                  outputs=k, vocab_size=int(config.vocab_size), pad_id=pad_id,
                  max_positions=int(max_pos) if isinstance(max_pos, int) else None, weights=weights,
                  tokenizer=_has_tokenizer(p), block_container=_block_container(model), classes=classes,
                  pooling=pooling if task == "fidelity" and kind == "encoder" else None,
                  output_kind="embedding" if output == "pooled" else "logits")
    return model, info


def hf_model(path: str, task: str | None = None, pooling: str = "mean") -> HFModel:
    """The factory behind ``register(..., factory="core.sources.hf:hf_model", kwargs={"path": folder})``:
    :func:`load_hf`'s model (its weights come from the folder, so the entry needs no weights file)."""
    return load_hf(path, task, pooling=pooling)[0]


__all__ = ["HFModel", "HFInfo", "HF_TASKS", "load_hf", "hf_model", "load_tokenizer", "pad_id_of", "transformers"]
