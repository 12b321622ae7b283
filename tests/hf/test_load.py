"""Loading a transformers model from a local folder: (N, K) outputs equal to the transformers
model's own, and clear refusals of what is not accepted."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("transformers")

import torch
import transformers as tf

from core.errors import FileError, ModelError
from core.sources.hf import hf_model, load_hf

IDS = torch.tensor([[5, 9, 12, 7, 3, 0, 0], [4, 8, 15, 16, 23, 10, 6]])  # the first row is padded (pad id 0)


def test_an_encoder_without_head_gives_its_mean_pooled_embedding(hf_folders):
    model, info = load_hf(hf_folders["bert"])
    assert (info.task, info.outputs, info.pooling, info.pad_id) == ("fidelity", 32, "mean", 0)
    assert info.block_container == "hf.encoder.layer" and info.tokenizer and info.weights == "model.safetensors"
    ref = tf.BertModel.from_pretrained(str(hf_folders["bert"])).eval()
    mask = (IDS != 0).long()
    with torch.no_grad():
        h = ref(input_ids=IDS, attention_mask=mask).last_hidden_state
        want = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        torch.testing.assert_close(model(IDS), want)
        cls = load_hf(hf_folders["bert"], pooling="cls")[0](IDS)
        torch.testing.assert_close(cls, ref(input_ids=IDS, attention_mask=mask).pooler_output)


def test_a_classification_head_gives_its_logits_and_label_names(hf_folders):
    model, info = load_hf(hf_folders["bert-cls"])
    assert (info.task, info.outputs, info.classes) == ("classification", 2, ["neg", "pos"])
    assert info.block_container == "hf.bert.encoder.layer"
    ref = tf.BertForSequenceClassification.from_pretrained(str(hf_folders["bert-cls"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), ref(input_ids=IDS, attention_mask=(IDS != 0).long()).logits)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_language_model_gives_the_next_token_logits_at_the_last_position(hf_folders, arch):
    model, info = load_hf(hf_folders[arch])
    assert (info.task, info.outputs, info.pad_id) == ("language-model", 64, None)
    assert info.block_container == {"llama": "hf.model.layers", "gpt2": "hf.transformer.h"}[arch]
    ref = tf.AutoModelForCausalLM.from_pretrained(str(hf_folders[arch])).eval()
    x = IDS[1:].repeat(3, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(input_ids=x).logits[:, -1], rtol=1e-4, atol=1e-5)
        fid, fid_info = load_hf(hf_folders[arch], task="fidelity")  # the same logits, judged against the base
        assert fid_info.task == "fidelity" and fid_info.pooling is None
        torch.testing.assert_close(fid(x), model(x))
    if arch == "gpt2":  # Conv1D became nn.Linear: weight, neuron and head pruning see it
        assert not any(type(m).__name__ == "Conv1D" for m in model.modules())
        assert isinstance(model.hf.transformer.h[0].attn.c_attn, torch.nn.Linear)


def test_the_factory_takes_the_folder_as_keyword_and_float_token_ids_are_read_as_ids(hf_folders):
    model = hf_model(path=str(hf_folders["llama"]))
    with torch.no_grad():
        torch.testing.assert_close(model(IDS[1:].float()), model(IDS[1:]))
        assert model(torch.zeros(2, 16)).shape == (2, 64)  # the probe batch user_models.register sends


def test_a_weights_only_pickle_loads(hf_folders, tmp_path):
    folder = shutil.copytree(hf_folders["llama"], tmp_path / "bin")
    sd = tf.LlamaForCausalLM.from_pretrained(str(folder)).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(sd, folder / "pytorch_model.bin")
    model, info = load_hf(folder)
    assert info.weights == "pytorch_model.bin"
    with torch.no_grad():
        torch.testing.assert_close(model(IDS[1:]), load_hf(hf_folders["llama"])[0](IDS[1:]))


class _Payload:  # a pickled object: weights_only=True refuses it
    pass


def _copy(hf_folders, tmp_path, name="bert"):
    return shutil.copytree(hf_folders[name], tmp_path / name)


def test_what_is_not_accepted_is_refused_naming_the_folder_and_what_is_accepted(hf_folders, tmp_path):
    with pytest.raises(FileError, match="does not exist or is not a folder.*config.json"):
        load_hf(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileError, match="has no config.json; accepted: a folder written by save_pretrained"):
        load_hf(empty)
    f = _copy(hf_folders, tmp_path)
    (f / "model.safetensors").unlink()
    with pytest.raises(FileError, match="has no weights .*accepted"):
        load_hf(f)
    torch.save({"w": torch.zeros(1), "x": _Payload()}, f / "pytorch_model.bin")
    with pytest.raises(FileError, match="pytorch_model.bin: not a weights-only torch file.*full pickle.*refused"):
        load_hf(f)
    f = _copy(hf_folders, tmp_path, "bert-cls")
    cfg = json.loads((f / "config.json").read_text())
    (f / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "modeling_evil.Evil"}}))
    with pytest.raises(ModelError, match="code shipped in the folder.*never runs code"):
        load_hf(f)
    (f / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-model"}))
    with pytest.raises(ModelError, match="cannot read this config.*'no-such-model'.*accepted: architectures built"):
        load_hf(f)
    (f / "config.json").write_text("{not json")
    with pytest.raises(FileError, match="config.json: not readable JSON"):
        load_hf(f)
    with pytest.raises(ModelError, match="task 'classification' needs a sequence-classification head"):
        load_hf(hf_folders["bert"], task="classification")
    with pytest.raises(ModelError, match="task 'language-model' needs a causal language model"):
        load_hf(hf_folders["bert"], task="language-model")
    with pytest.raises(ModelError, match="task must be one of"):
        load_hf(hf_folders["bert"], task="regression")
