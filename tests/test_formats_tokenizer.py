"""The formats' chat templates inside the tiny tokenizer: apply_chat_template == render, assistant masks."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from polaris_dpo import formats, models
from polaris_dpo.config import ModelConfig, TinyModelConfig
from tests.test_formats import IDS, PASSWORD_CHAT, PASSWORD_TOOL, VARIANTS


@pytest.fixture(scope="module")
def tiny_path(tiny_cache):
    cfg = OmegaConf.structured(ModelConfig(tiny=TinyModelConfig(hidden_size=32, intermediate_size=64,
                                                                num_hidden_layers=1, num_attention_heads=2,
                                                                num_key_value_heads=2), cache_dir=str(tiny_cache)))
    return models.resolve_model_path(cfg)


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=IDS)
def test_tokenizer_template_renders_like_python_and_masks_only_assistant_turns(name, options, tiny_path):
    fmt = formats.get(name, **options)
    tokenizer = models.load_tokenizer(tiny_path, fmt)
    assert tokenizer.apply_chat_template(PASSWORD_CHAT, tools=[PASSWORD_TOOL], tokenize=False) == \
        fmt.render(PASSWORD_CHAT, [PASSWORD_TOOL])
    assert tokenizer.apply_chat_template(PASSWORD_CHAT[:2], tools=[PASSWORD_TOOL], tokenize=False,
                                         add_generation_prompt=True) == \
        fmt.render(PASSWORD_CHAT[:2], [PASSWORD_TOOL], add_generation_prompt=True)

    encoded = tokenizer.apply_chat_template(PASSWORD_CHAT, tools=[PASSWORD_TOOL], tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert sum(mask) > 0
    eos_id = tokenizer.convert_tokens_to_ids(fmt.eos_token)
    eos_positions = [i for i, t in enumerate(ids) if t == eos_id]
    assistant_text = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    for reply in (PASSWORD_CHAT[2], PASSWORD_CHAT[4]):
        assert fmt.render_assistant(reply).strip() in assistant_text
    assert any(mask[i] for i in eos_positions), "the end-of-turn token must be trained"
    for excluded in ("You are a helpful assistant.", "Generate a password, 42 characters long", "87cc47fbc865a290d7c7de4be3c893175c51a566b3\"}",
                     "The length of the password"):
        assert excluded not in assistant_text.replace("password: 87cc47fbc865a290d7c7de4be3c893175c51a566b3.", "")
