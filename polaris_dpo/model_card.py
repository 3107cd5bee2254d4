"""The model card (README.md) of a merged model: what it is, how it was made and checked, how to prompt it."""

from __future__ import annotations

import json

from polaris_dpo.redact import scrub
from polaris_dpo.report import numeric_leaves


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _rate(entry: dict | None) -> str:
    if not entry or entry.get("rate") is None:  # absent, or undefined (no prompt of that kind)
        return "–"
    return f"{entry['rate']:.1%} [{entry['low']:.1%}, {entry['high']:.1%}]"


def _category_table(before: dict | None, after: dict | None) -> list[str]:
    """Stage eval's metrics.json: one row per failure category, rate and 95 % interval before and after."""
    b, a = (before or {}).get("categories", {}), (after or {}).get("categories", {})
    lines = [f"Rates over sampled answers on held-out prompts (n = {(before or {}).get('n', '–')} before, "
             f"{(after or {}).get('n', '–')} after), with 95 % Wilson intervals.", "",
             "| category | before | after |", "|---|---|---|"]
    lines += [f"| {category} | {_rate(b.get(category))} | {_rate(a.get(category))} |"
              for category in dict.fromkeys([*b, *a])]
    accuracy = [(before or {}).get("call_accuracy"), (after or {}).get("call_accuracy")]
    if any(accuracy):
        lines.append(f"| call accuracy | {_rate(accuracy[0])} | {_rate(accuracy[1])} |")
    return lines


def _eval_section(before: dict | None, after: dict | None) -> list[str]:
    if not before and not after:
        return ["Not given (pass `--eval-before` / `--eval-after` with eval/metrics.json files)."]
    if all("categories" in m for m in (before, after) if m):
        return _category_table(before, after)
    b, a = numeric_leaves(before or {}), numeric_leaves(after or {})
    lines = ["| metric | before | after |", "|---|---|---|"]
    for key in sorted(set(b) | set(a)):
        lines.append(f"| {key} | {_fmt(b.get(key))} | {_fmt(a.get(key))} |")
    return lines


def _pairs_section(stats: dict | None) -> list[str]:
    if not stats:
        return ["Not given (pass `--pairs pairs/<name>`)."]
    lines = ["| statistic | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(numeric_leaves(stats).items())]
    return lines


def _usage(repo_id: str, fmt) -> list[str]:
    tokens = ", ".join(f"`{t}`" for t in fmt.special_tokens) if fmt else "(see tokenizer_config.json)"
    call = ""
    if fmt is not None:
        example = {"role": "assistant", "content": None,
                   "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                     "arguments": {"city": "Paris"}}}]}
        call = fmt.render_assistant(example)
    return [
        f"The tokenizer carries the chat template the model was trained with (format `{fmt.name if fmt else '?'}`), "
        "so `apply_chat_template` with `tools=` renders exactly what training saw; vLLM and TGI use it too.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
        'tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",',
        '          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]',
        'messages = [{"role": "user", "content": "Weather in Paris?"}]',
        "inputs = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,",
        "                                       return_dict=True, return_tensors=\"pt\")",
        "out = model.generate(**inputs, max_new_tokens=128)",
        "print(tokenizer.decode(out[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=False))",
        "```",
        "",
        f"Special tokens of the format: {tokens}; a turn ends with `{fmt.eos_token if fmt else '?'}` "
        "(listed in generation_config.json, so `generate` stops there). Keep special tokens when decoding: "
        "the call tokens delimit function calls.",
        *(["", "A function call is written as:", "", "```", call, "```"] if call else []),
    ]


def render(*, repo_id: str, base_model: str, verification: dict, records: list[dict], config: dict | None,
           pair_stats: dict | None, eval_before: dict | None, eval_after: dict | None, fmt, license: str) -> str:
    from huggingface_hub import ModelCardData

    data = ModelCardData(license=license, base_model=base_model, library_name="transformers",
                         pipeline_tag="text-generation", tags=["function-calling", "dpo", "polaris-dpo"])
    stages = " → ".join(f"{r.get('stage', '?')} ({r.get('finetune', '?')}"
                        f"{', 4-bit base' if r.get('load_in_4bit') else ''})" for r in records) or "not recorded"
    full = verification.get("full_precision_reference") or {}
    quant = verification.get("four_bit_reference")
    generation = verification.get("generation") or {}
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"A function-calling model fine-tuned from `{base_model}` with polaris-dpo "
        "(SFT, then DPO on pairs mined from the model's own failures), adapters merged into the full-precision base.",
        "",
        "## Base model", "", f"`{base_model}`", "",
        "## Recipe", "", f"Stages: {stages}.", "",
        f"Adapters folded in order: {', '.join(f'`{a}`' for a in verification.get('source', {}).get('adapters', []))}"
        f" into the base in {verification.get('dtype')}.", "",
    ]
    if config:
        lines += ["<details><summary>Config</summary>", "", "```json",
                  json.dumps(scrub(config), indent=2, ensure_ascii=False, default=str), "```", "", "</details>", ""]
    lines += ["## Preference pairs", "", *_pairs_section(pair_stats), "",
              "## Evaluation before and after", "", *_eval_section(eval_before, eval_after), "",
              "## Merge verification", "",
              f"- max |logit difference| against base + adapters (full precision): {_fmt(full.get('max_abs_diff'))} "
              f"(tolerance {_fmt(verification.get('tolerance'))}, {verification.get('prompts')} prompts, "
              f"top-1 agreement {_fmt(full.get('top1_agreement'))})"]
    if quant:
        lines.append(f"- against the 4-bit base the run trained on: {_fmt(quant.get('max_abs_diff'))} "
                     "(information: 4-bit rounding)")
    if generation.get("checked"):
        lines.append(f"- greedy generation on a held-out call prompt parses as a call: {generation.get('parsed')}")
    lines += ["", "## How to prompt", "", *_usage(repo_id, fmt), "",
              "## Licence", "", f"`{license}`. The weights derive from `{base_model}`: its licence and terms apply too.",
              ""]
    return "\n".join(lines)
