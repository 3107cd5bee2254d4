"""stage sft on the tiny model: the assistant mask, loss falling, which parameters train, saved adapters reload.

Also the shared support of the training tests (test_dpo, test_qlora, test_spectrum, test_resume, test_ddp):
a minimal ChatML format with `{% generation %}` markers and small synthetic function-calling data.
"""

from __future__ import annotations

import json

import pytest
import torch

from polaris_dpo import formats, messages, models
from polaris_dpo.formats.base import ChatFormat

TINY = ("model.tiny.hidden_size=64", "model.tiny.intermediate_size=128", "model.tiny.num_hidden_layers=2",
        "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=2")
QUICK = ("hardware.torch_threads=2", "sft.logging_steps=1", "sft.save_steps=1000", "sft.warmup_ratio=0",
         "sft.lr_scheduler_type=constant", "sft.max_length=256", "dpo.logging_steps=1", "dpo.save_steps=1000",
         "dpo.lr_scheduler_type=constant", "dpo.max_length=256", "train.lora.dropout=0")

CHATML_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n{{ tools | tojson }}<|im_end|>\n{% endif -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'assistant' -%}"
    "<|im_start|>assistant\n{% generation %}"
    "{%- if message.content %}{{ message.content }}{% endif -%}"
    "{%- if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>{\"name\": \"{{ call.function.name }}\", "
    "\"arguments\": {% if call.function.arguments is string %}{{ call.function.arguments }}"
    "{% else %}{{ call.function.arguments | tojson }}{% endif %}}</tool_call>{% endfor %}{% endif -%}"
    "<|im_end|>{% endgeneration %}\n"
    "{%- else -%}"
    "<|im_start|>{{ message.role }}\n{{ message.content or '' }}<|im_end|>\n"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)


class ChatMLTest(ChatFormat):
    """The smallest format with the contract's chat template (stands in until the real formats land)."""

    name = "chatml_test"
    special_tokens = ["<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
    eos_token = "<|im_end|>"
    chat_template = CHATML_TEMPLATE
    response_template = formats.get("native").response_template  # the same <tool_call> syntax


def use_test_format(monkeypatch) -> ChatMLTest:
    fmt = ChatMLTest()
    monkeypatch.setattr(formats, "from_config", lambda _cfg: fmt)
    return fmt


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
CITIES = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Rome", "Dakar"]


def conversations(n: int = 8) -> list[dict]:
    """Function-calling conversations in canonical form: call, result, answer."""
    rows = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        rows.append({"id": f"c{i}", "source": "synthetic", "row": i, "tools": [WEATHER_TOOL], "messages": [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]},
            {"role": "tool", "name": "get_weather", "content": json.dumps({"temp": 10 + i})},
            {"role": "assistant", "content": f"It is {10 + i} degrees in {city}."},
        ]})
    return rows


def write_pairs(folder, n: int = 8):
    """A pair set folder (train.jsonl): chosen calls the function, rejected answers in prose."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as handle:
        for i in range(n):
            city = CITIES[i % len(CITIES)]
            row = {"prompt": [{"role": "user", "content": f"What is the weather in {city}?"}],
                   "chosen": [{"role": "assistant", "content": None, "tool_calls": [
                       {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]}],
                   "rejected": [{"role": "assistant", "content": f"The weather in {city} is nice, I think."}],
                   "tools": [WEATHER_TOOL], "category": "missed_call", "chosen_source": "reference",
                   "source": "synthetic", "source_row": i, "example_id": f"c{i}#0", "model": "tiny",
                   "sampling": "{}", "seed": 0}
            handle.write(json.dumps(messages.to_storage(row)) + "\n")
    return folder


def adapter_tensors(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


# ------------------------------------------------------------------------------------------ tests


def test_assistant_mask_covers_calls_and_answers_only(make_cfg, monkeypatch):
    fmt = use_test_format(monkeypatch)
    cfg = make_cfg(*TINY)
    tokenizer = models.load_tokenizer(models.model_path_for(cfg, fmt), fmt)
    conv = messages.to_storage(conversations(1)[0])
    out = tokenizer.apply_chat_template(conv["messages"], tools=json.loads(conv["tools"]), tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True,
                                        chat_template=fmt.chat_template)
    ids, mask = out["input_ids"], out["assistant_masks"]
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert trained == ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>'
                       "It is 10 degrees in Paris.<|im_end|>")
    untrained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert '"temp": 10' in untrained and "get_weather" in untrained and "What is the weather" in untrained


def test_assistant_mask_on_real_glaive_rows(make_cfg, monkeypatch, shared_data):
    readers = pytest.importorskip("polaris_dpo.readers")
    if not hasattr(readers, "read"):
        pytest.skip("readers.read is not built yet")
    fmt = use_test_format(monkeypatch)
    cfg = make_cfg(*TINY, "data=glaive", "data.limit=20")
    tokenizer = models.load_tokenizer(models.model_path_for(cfg, fmt), fmt)
    checked = 0
    for conv in readers.read(cfg.data, cfg.run_dir):
        row = messages.to_storage(conv)
        out = tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
        trained = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
        for message in row["messages"]:
            if message["role"] == "assistant":
                for call in message.get("tool_calls") or []:
                    assert call["function"]["name"] in trained
                if message.get("content"):
                    assert message["content"].strip()[:20] in trained
            elif message["role"] == "tool" and message.get("content") and len(message["content"]) > 12:
                assert message["content"] not in trained
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("new_tokens", ["rows", "head"])
def test_sft_lora_trains_adapter_and_format_rows_only(make_cfg, monkeypatch, tmp_path, new_tokens):
    from polaris_dpo.stages import sft

    fmt = use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TINY, *QUICK, "sft.max_steps=12", "sft.learning_rate=1e-2",
                   "sft.per_device_train_batch_size=4", f"train.lora.new_tokens={new_tokens}")
    result = sft.run(cfg, conversations=conversations(8))
    out = tmp_path / "run" / "sft"
    assert result["output_dir"] == str(out)
    metrics = result["metrics"]
    assert metrics["final_loss"] < 0.9 * metrics["first_loss"], metrics

    record = json.loads((out / "training.json").read_text())
    assert record["adapter_chain"] == [str(out)] and record["base_model"] == models.model_path_for(cfg, fmt)
    assert record["finetune"] == "lora" and record["format"]["name"] == cfg.format.name

    tensors = adapter_tensors(out)
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: every adapter moved
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["response_template"] == fmt.response_template
    token_ids = models.load_tokenizer(str(out), fmt).convert_tokens_to_ids(fmt.special_tokens)
    base, tokenizer = models.load_trained(record["base_model"], cfg, fmt)
    model, _ = models.load_trained(str(out), cfg, fmt)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    trained_embed = model.get_input_embeddings()
    trained_rows = trained_embed(torch.tensor(token_ids))
    assert not torch.allclose(trained_rows, base.get_input_embeddings()(torch.tensor(token_ids)))
    other = torch.tensor([5, 6, 7])  # an ordinary token's row is untouched
    assert torch.equal(trained_embed(other), base.get_input_embeddings()(other))
    head_keys = [k for k in tensors if "lm_head" in k]
    trained_head, base_head = model.get_output_embeddings(), base.get_output_embeddings()
    if new_tokens == "rows":  # the head's new-token rows train, every other row stays the base model's
        assert head_keys and all("trainable_tokens" in k for k in head_keys)
        assert not torch.allclose(trained_head(trained_rows)[:, token_ids], base_head(trained_rows)[:, token_ids])
        assert torch.equal(trained_head.token_adapter.get_merged_weights(["default"])[other],
                           base_head.weight[other])
    else:  # the whole head trains and is saved whole
        assert head_keys and all(k.endswith("lm_head.weight") for k in head_keys)
        assert not torch.equal(trained_head.weight[other], base_head.weight[other])
    assert all("lora_" in k or "trainable_tokens" in k or k.endswith("lm_head.weight") for k in tensors)
    layer = "model.layers.0.self_attn.q_proj"  # the base weights under the adapter are untouched
    assert torch.equal(model.get_submodule(f"base_model.model.{layer}").base_layer.weight,
                       base.get_submodule(layer).weight)


def test_sft_full_finetune_changes_weights(make_cfg, monkeypatch):
    from polaris_dpo.stages import sft

    fmt = use_test_format(monkeypatch)
    cfg = make_cfg("stage=sft", *TINY, *QUICK, "train.finetune=full", "sft.max_steps=4", "sft.learning_rate=1e-3",
                   "sft.per_device_train_batch_size=4")
    result = sft.run(cfg, conversations=conversations(8))
    assert result["adapter_chain"] == [] and result["base_model"] == result["output_dir"]
    base, _ = models.load_trained(models.model_path_for(cfg, fmt), cfg, fmt)
    tuned, _ = models.load_trained(result["output_dir"], cfg, fmt)
    for (name, p0), (_, p1) in zip(base.named_parameters(), tuned.named_parameters(), strict=True):
        if "norm" not in name:
            assert not torch.equal(p0, p1), name


def test_final_loss_falls_back_to_the_runs_mean_loss_when_no_step_was_logged():
    from types import SimpleNamespace

    from polaris_dpo.training import final_metrics

    state = SimpleNamespace(log_history=[{"train_runtime": 3.0, "train_loss": 7.68, "step": 2}], global_step=2)
    metrics = final_metrics(SimpleNamespace(state=state))
    assert metrics["final_loss"] == 7.68 and metrics["global_step"] == 2 and "first_loss" not in metrics
