"""`transformers serve` on a merged tiny model answers an OpenAI client with parsed tool_calls.

The merged folder is made as the merge stage makes it (test_merge_helpers' adapter chain, merged with
the polaris format), then its weights are trained for a few seconds on two replies, a call and a text
answer, so that greedy decoding writes them; the server, a real subprocess, must turn the call back
into `tool_calls` through the response template saved in tokenizer_config.json.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from test_merge_helpers import EXAMPLES, WEATHER_TOOL, build_chain

from polaris_dpo import formats, merging

FMT = formats.get("polaris")
CALL_PROMPT = [{"role": "user", "content": "Weather in Paris?"}]
CALL_REPLY = {"role": "assistant", "content": None,
              "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
TEXT_PROMPT = [{"role": "user", "content": "Hi there"}]
TEXT_REPLY = {"role": "assistant", "content": "Hello!"}
SERVER_START_S = 180


def merged_model(cfg, run_dir: Path) -> Path:
    build_chain(cfg, run_dir)
    out = run_dir / "merged"
    merging.merge_and_verify(merging.chain_for_run(run_dir), out, EXAMPLES, cfg.model, cfg.hardware,
                             merging.MergeSettings(), fmt=FMT)
    return out


def teach_replies(folder: Path, max_steps: int = 150, target_loss: float = 0.02) -> None:
    """Train every weight of the model in `folder` on (prompt, reply) pairs until greedy decoding writes the
    replies, and save it back; the prompts are tokenized as transformers serve tokenizes them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    batch = []
    for prompt, reply in ((CALL_PROMPT, CALL_REPLY), (TEXT_PROMPT, TEXT_REPLY)):
        prompt_ids = tokenizer.apply_chat_template(prompt, tools=[WEATHER_TOOL], add_generation_prompt=True,
                                                   tokenize=True, return_dict=True)["input_ids"]
        reply_ids = tokenizer(FMT.render_assistant(reply), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + reply_ids])
        labels = ids.clone()
        labels[0, :len(prompt_ids)] = -100
        batch.append((ids, labels, len(prompt_ids), reply_ids))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(max_steps):
        optimizer.zero_grad()
        loss = sum(model(input_ids=ids, labels=labels).loss for ids, labels, _, _ in batch)
        if loss.item() < target_loss:
            break
        loss.backward()
        optimizer.step()
    model.eval()
    for ids, _, prompt_len, reply_ids in batch:
        with torch.no_grad():
            out = model.generate(input_ids=ids[:, :prompt_len], max_new_tokens=len(reply_ids) + 4, do_sample=False)
        assert out[0, prompt_len:].tolist() == reply_ids, "the tiny model did not learn its replies"
    model.generation_config.do_sample = False
    model.save_pretrained(folder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"transformers serve did not answer /health within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def served_model(make_cfg, tmp_path):
    """(base_url, model id) of `transformers serve` running the taught merged model; stopped afterwards."""
    folder = merged_model(make_cfg(), tmp_path / "run")
    teach_replies(folder)
    port, log = free_port(), tmp_path / "serve.log"
    command = [str(Path(sys.executable).with_name("transformers")), "serve", str(folder),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_until_healthy(process, port, log)
        yield f"http://127.0.0.1:{port}/v1", str(folder)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_served_model_answers_with_tool_calls_and_with_text(served_model):
    from openai import OpenAI

    base_url, model = served_model
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)

    called = client.chat.completions.create(model=model, messages=CALL_PROMPT, tools=[WEATHER_TOOL],
                                            temperature=0, max_tokens=48)
    choice = called.choices[0]
    assert choice.message.tool_calls, f"no tool_calls; content was {choice.message.content!r}"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    assert not choice.message.content and choice.finish_reason == "tool_calls"

    answered = client.chat.completions.create(model=model, messages=TEXT_PROMPT, tools=[WEATHER_TOOL],
                                              temperature=0, max_tokens=48)
    choice = answered.choices[0]
    assert choice.message.content == "Hello!" and not choice.message.tool_calls
    assert choice.finish_reason == "stop"
