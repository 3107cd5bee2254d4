"""The default job's training data: the bundled glaive conversations, re-cut and given the failures real data has.

What real function-calling data (the Polaris model's, glaive's) does and the clean glaive sample does not:

- calls come in the middle or at the end of a conversation, after small talk, not only on the first
  turn: each call conversation is also used with one or two exchanges of another conversation's small
  talk in front of it (`late_call` variants), and cut right after its call (`ends_at_call`);
- a share of final answers (the answer after a function result) is written with spacing errors, in the
  style of the Polaris data's `Answer:123` (`is:15`, `units,and`, `word ,word`);
- a share of warranted calls is answered in prose instead: the assistant skips the call and writes the
  answer it would have written after the result (the "retells news instead of calling get_rss_feed" of
  the Polaris README). Such a conversation is cut after that turn and keeps the right call as its answer
  key (`acceptable`), so the noise is in what SFT learns, never in what mining and evaluation score against.

Nothing is invented: every message is glaive's (or glaive's with a space moved). Variants of one glaive
conversation always land on the same side of the train/eval split as it (their ids are chosen so), so
held-out prompts stay unseen. Held-out conversations get no variants and no noise in the answer key.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

SPACING_RATE = 0.35  # share of final answers (after a function result) given a spacing error
MISSED_CALL_RATE = 0.2  # share of training call turns answered in prose instead
VARIANTS = 6  # re-cut variants per training conversation with a call
DISTRACTOR_RATE = 0.3  # share of variants that get one more (unrelated) tool in their list
EVAL_VARIANTS = 2  # late_call variants per held-out conversation with a call (no noise)

_SPACING_EDITS = (
    # (name, pattern, replacement): one is applied at one place; the first name is the Polaris style
    ("colon_number", re.compile(r"\b(is|are|was|be|of|costs|Answer|total|comes to) (\d)"), r"\1:\2"),
    ("comma_word", re.compile(r"(?<=[a-z]), (?=[a-z])"), ","),
    ("space_before_comma", re.compile(r"(?<=[a-z]), (?=[a-z])"), " , "),
)


def add_spacing_error(text: str, rng: random.Random) -> str | None:
    """`text` with one spacing error of the kinds real data shows, or None when it has no place for one."""
    for name, pattern, repl in _SPACING_EDITS:
        if name != "colon_number" and rng.random() < 0.5:
            continue
        spots = list(pattern.finditer(text))
        if spots:
            spot = rng.choice(spots)
            return text[:spot.start()] + spot.expand(repl) + text[spot.end():]
    return None


def call_turns(messages: list[dict]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls")]


def answer_after(messages: list[dict], call_index: int) -> int | None:
    """Index of the assistant text answer that follows the call's results, if there is one."""
    for j in range(call_index + 1, len(messages)):
        if messages[j]["role"] == "assistant":
            return j if not messages[j].get("tool_calls") and messages[j].get("content") else None
    return None


def small_talk(conversation: dict, exchanges: int) -> list[dict]:
    """The first `exchanges` user/assistant-text exchanges of a conversation without calls."""
    msgs = [m for m in conversation["messages"] if m["role"] != "system"]
    out: list[dict] = []
    for i in range(0, len(msgs) - 1, 2):
        user, reply = msgs[i], msgs[i + 1]
        if user["role"] != "user" or reply["role"] != "assistant" or reply.get("tool_calls"):
            break
        out += [user, reply]
        if len(out) // 2 == exchanges:
            break
    return out


def with_missed_call(conversation: dict, call_index: int) -> dict | None:
    """The conversation cut after `call_index`, whose call is replaced by the answer given after its result."""
    msgs = conversation["messages"]
    answer = answer_after(msgs, call_index)
    if answer is None:
        return None
    call = msgs[call_index]["tool_calls"]
    out = dict(conversation)
    out["messages"] = [*msgs[:call_index], {"role": "assistant", "content": msgs[answer]["content"]}]
    out["acceptable"] = [{"name": c["function"]["name"],
                          "arguments": {k: [v] for k, v in c["function"]["arguments"].items()}} for c in call]
    out["noise"] = [*conversation.get("noise", []), "missed_call"]
    return out


def with_spacing_errors(conversation: dict, rng: random.Random, rate: float) -> dict:
    msgs = copy.deepcopy(conversation["messages"])
    noise = list(conversation.get("noise", []))
    for i in range(1, len(msgs)):
        if msgs[i]["role"] == "assistant" and msgs[i - 1]["role"] == "tool" and msgs[i].get("content") \
                and not msgs[i].get("tool_calls") and rng.random() < rate:
            edited = add_spacing_error(msgs[i]["content"], rng)
            if edited is not None:
                msgs[i]["content"] = edited
                noise.append("bad_spacing")
    return {**conversation, "messages": msgs, "noise": noise}


def tool_names(conversation: dict) -> set[str]:
    return {t["function"]["name"] for t in conversation.get("tools") or []}


def late_call(conv: dict, chat_only: list[dict], rng: random.Random) -> dict:
    """The conversation with one or two exchanges of another's small talk in front: its first call moves later."""
    variant = copy.deepcopy(conv)
    prefix = small_talk(rng.choice(chat_only), rng.choice((1, 1, 2)))
    system = [m for m in variant["messages"][:1] if m["role"] == "system"]
    variant["messages"] = [*system, *copy.deepcopy(prefix), *variant["messages"][len(system):]]
    return variant


def ends_at_call(conv: dict, rng: random.Random) -> dict:
    """The conversation cut right after one of its calls and that call's results: the call is its last act."""
    variant = copy.deepcopy(conv)
    msgs = variant["messages"]
    end = rng.choice(call_turns(msgs)) + 1
    while end < len(msgs) and msgs[end]["role"] == "tool":
        end += 1
    variant["messages"] = msgs[:end]
    return variant


def build(conversations: list[dict], *, is_eval: Callable[[str], bool], seed: int = 0,
          variants: int = VARIANTS, eval_variants: int = EVAL_VARIANTS, spacing_rate: float = SPACING_RATE,
          missed_call_rate: float = MISSED_CALL_RATE, distractor_rate: float = DISTRACTOR_RATE) -> list[dict]:
    """Demo conversations from canonical glaive conversations.

    `is_eval(conversation_id)` is the split's rule. Every conversation is kept; each one with a call is
    also re-cut into variants whose ids are chosen to fall on the same side of the split as it. Training
    conversations get `variants` variants and the noise; held-out ones get `eval_variants` `late_call`
    variants (more held-out prompts with a call mid-conversation) and no noise.
    """
    rng = random.Random(seed)

    def side_pool(held_out: bool):
        chat = [c for c in conversations if is_eval(c["id"]) == held_out and not c.get("tools") and small_talk(c, 1)]
        tools = [t for c in conversations if is_eval(c["id"]) == held_out for t in c.get("tools") or []]
        return chat, tools

    pools = {False: side_pool(False), True: side_pool(True)}

    def variant_id(base: str, tag: str, held_out: bool) -> str:
        for k in range(1000):
            candidate = f"{base}/{tag}{k}"
            if is_eval(candidate) == held_out:
                return candidate
        raise RuntimeError(f"no id on the same side of the split found for a variant of {base}")

    out: list[dict] = []
    for conv in conversations:
        held_out = is_eval(conv["id"])
        chat_only, tool_pool = pools[held_out]
        recut = [conv]
        if call_turns(conv["messages"]):
            for v in range(eval_variants if held_out else variants):
                if held_out or v % 2 == 0:
                    variant, kind = late_call(conv, chat_only, rng), "late_call"
                else:
                    variant, kind = ends_at_call(conv, rng), "ends_at_call"
                if rng.random() < distractor_rate and tool_pool:
                    extra = rng.choice(tool_pool)
                    if extra["function"]["name"] not in tool_names(variant):
                        variant["tools"] = [*variant["tools"], extra][::rng.choice((1, -1))]
                variant["id"] = variant_id(conv["id"], kind, held_out)
                variant["augmentation"] = kind
                recut.append(variant)
        for item in recut:
            if not held_out:
                calls = call_turns(item["messages"])
                if calls and rng.random() < missed_call_rate:
                    item = with_missed_call(item, rng.choice(calls)) or item
                item = with_spacing_errors(item, rng, spacing_rate)
            out.append(item)
    return out


def noise_counts(conversations: list[dict]) -> dict[str, int]:
    """How many conversations carry each kind of noise and augmentation (for the data card and tests)."""
    counts: dict[str, int] = {"conversations": len(conversations)}
    for conv in conversations:
        for tag in [*conv.get("noise", []), conv.get("augmentation", "original")]:
            counts[tag] = counts.get(tag, 0) + 1
    return counts


# ---------------------------------------------------------------- the bundled file

DEMO_DIR = "demo"  # under polaris_dpo/assets/
DEMO_FILE = "demo_conversations.jsonl"
BUILD_FILE = "build.json"  # how the file was made: the split it is consistent with, rates, counts
GLAIVE = "glaive/glaive_toolcall_en_demo.json"


def glaive_conversations() -> list[dict]:
    """The bundled glaive sample as canonical conversations (through the sharegpt reader)."""
    from omegaconf import OmegaConf

    from polaris_dpo import paths, readers

    data_cfg = OmegaConf.create({"reader": "sharegpt", "path": paths.asset(GLAIVE), "root": None, "limit": None,
                                 "quarantine": None})
    conversations, counts = readers.read_all(data_cfg)
    if counts["quarantined"]:
        raise ValueError(f"{GLAIVE}: {counts['quarantined']} rows could not be read")
    for conv in conversations:
        conv["source"] = "glaive"
    return conversations


def write_demo(target_dir: Path, *, eval_fraction: float = 0.2, split_seed: int = 0, seed: int = 0) -> dict:
    """Build the demo conversations and write them (storage form, JSONL) with build.json, atomically."""
    from polaris_dpo import messages, readers

    conversations = build(glaive_conversations(),
                          is_eval=lambda cid: readers.is_held_out(cid, eval_fraction, split_seed), seed=seed)
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target_dir / f".{DEMO_FILE}.tmp"
    with tmp.open("w", encoding="utf-8") as handle:
        for conv in conversations:
            handle.write(json.dumps(messages.to_storage(conv), ensure_ascii=False) + "\n")
    tmp.replace(target_dir / DEMO_FILE)
    held_out = [c for c in conversations if readers.is_held_out(c["id"], eval_fraction, split_seed)]
    info = {
        "source": GLAIVE, "eval_fraction": eval_fraction, "split_seed": split_seed, "seed": seed,
        "variants": VARIANTS, "eval_variants": EVAL_VARIANTS, "spacing_rate": SPACING_RATE,
        "missed_call_rate": MISSED_CALL_RATE, "distractor_rate": DISTRACTOR_RATE,
        "counts": {"train": noise_counts([c for c in conversations if c not in held_out]),
                   "eval": noise_counts(held_out)},
    }
    tmp = target_dir / f".{BUILD_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(target_dir / BUILD_FILE)
    return info


if __name__ == "__main__":
    from polaris_dpo import paths

    print(json.dumps(write_demo(Path(paths.asset(DEMO_DIR))), indent=2))
