"""Build the default job's data, `polaris_dpo/assets/demo/` (demo_conversations.jsonl, build.json): short
conversations made from templates cut out of the bundled glaive sample.

    .venv/bin/python scripts/build_demo_data.py

Deterministic; tests/test_demo_data.py checks that the bundled file is exactly what this builds.

The glaive sample has 300 conversations with 211 calls over 64 functions: far too little, and too long
(median ~480 tokens), for a 4M-parameter model to learn calling from in a few CPU minutes. So each call
episode of glaive (user turn -> call -> function result -> answer) becomes a TEMPLATE: the call's argument
values are found verbatim in the user's text and become slots (also where they recur in the result and the
answer), and so do the result's numbers that the answer repeats. Filling the slots with new values of the
same kind (numbers of similar magnitude, strings glaive uses for that argument) gives new conversations
that keep glaive's phrasing, tool schemas and result/answer wording. Episodes whose values are not in the
user's text verbatim are skipped and counted (`build.json`).

A conversation: the system turn with the episode's glaive tools (sometimes one more, unrelated tool),
optionally one or two exchanges of glaive small talk first (so calls also come mid- and late-conversation,
as in the Polaris data), the call episode, and sometimes a second request (more small talk, or a call to
the extra tool). A share of conversations has no call at all: glaive's text exchanges (small talk, and
refusals where no function fits) under their own tools, so `unwanted_call` is measurable.

The failures real data has, on the training side only:
- a share of final answers (the answer after a function result) is written with a spacing error, first
  choice the Polaris data's `Answer:123` style (`is:42`), else `word,word` / `word ,word`;
- a share of warranted calls is answered in prose instead (the answer written after the result), the
  Polaris README's "retells news instead of calling get_rss_feed": that conversation is cut after the prose
  and keeps the right call as its answer key (`acceptable`), so mining and evaluation score against the call.

The split is by conversation id (`readers.is_held_out`): held-out conversations are unseen conversations
with new values and no noise, but they reuse the training side's templates (functions and phrasings).
"""

from __future__ import annotations

import copy
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from polaris_dpo.atomic import atomic_write_json, atomic_write_jsonl  # noqa: E402

SPACING_RATE = 0.35  # share of final answers (after a function result) given a spacing error
MISSED_CALL_RATE = 0.15  # share of training calls answered in prose instead
CONVERSATIONS = 3000  # conversations built (train and held-out together)
NO_CALL_RATE = 0.2  # share of conversations without a call (text exchanges only)
SMALL_TALK_RATE = 0.4  # share of call conversations with glaive small talk before the call
SECOND_REQUEST_RATE = 0.2  # share of call conversations with one more request after the first
DISTRACTOR_RATE = 0.2  # share of call conversations whose tool list gets one more, unrelated tool
MAX_ANSWER_CHARS = 250  # longer glaive answers after a result are left out: conversations stay short
MAX_CALL_CHARS = 140  # longest call (its JSON, ~60 tokens): a sample of 64 tokens holds any call whole
MAX_TALK_CHARS = 400  # longer small-talk / text-only exchanges are left out
RETRIES = 20  # attempts at a held-out conversation whose request the training side does not have
MIN_TEMPLATES = 5  # functions with fewer usable episodes are left out (the most frequent ones stay)

_SPACING_EDITS = (
    # (name, pattern, replacement): one is applied at one place; the first name is the Polaris style
    ("colon_number", re.compile(r"\b(is|are|was|be|of|costs|Answer|total|comes to|about|approximately) (\d)"),
     r"\1:\2"),
    ("comma_word", re.compile(r"(?<=[a-z]), (?=[a-z])"), ","),
    ("space_before_comma", re.compile(r"(?<=[a-z]), (?=[a-z])"), " , "),
    ("space_before_period", re.compile(r"(?<=[a-z])\.(?=\s|$)"), " ."),
)


def add_spacing_error(text: str, rng: random.Random) -> str | None:
    """`text` with one spacing error of the kinds real data shows, or None when it has no place for one."""
    first, *others = _SPACING_EDITS
    for _name, pattern, repl in (first, *rng.sample(others, len(others))):
        spots = list(pattern.finditer(text))
        if spots:
            spot = rng.choice(spots)
            return text[:spot.start()] + spot.expand(repl) + text[spot.end():]
    return None


# ---------------------------------------------------------------- templates from glaive episodes

@dataclass
class Slot:
    """One value of an episode that is replaced when the template is filled."""
    text: str  # how it is written in the episode (found verbatim)
    value: object  # the value in the call (None for a result number)
    argument: str  # `function.argument` (or `function.result`), the key of the pool strings are drawn from
    path: tuple = ()  # where it sits in the call's arguments (empty for a result number)


@dataclass
class Template:
    function: str
    tools: list[dict]
    messages: list[dict]  # [optional user, assistant text], user, call, tool result, answer
    slots: list[Slot]
    source_row: int


@dataclass
class Pools:
    """What the templates are filled and combined with."""
    strings: dict[str, list[str]]  # argument key -> values glaive uses
    small_talk: list[list[dict]] = field(default_factory=list)  # one user/assistant exchange, no tools
    text_only: list[dict] = field(default_factory=list)  # {"tools", "messages", "row"}: exchanges under tools


def _number_pattern(text: str) -> str:
    return r"(?<![\w.])" + re.escape(text) + r"(?![\w]|\.\d)"


def _string_pattern(text: str) -> str:
    return r"(?<!\w)" + re.escape(text) + r"(?!\w)"


def _pattern(slot: Slot) -> str:
    return _number_pattern(slot.text) if _is_number(slot.value) or slot.value is None else _string_pattern(slot.text)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_texts(value) -> list[str]:
    texts = [str(value)]
    if isinstance(value, float) and value.is_integer():
        texts.insert(0, str(int(value)))
    return texts


def _found(text: str, pattern: str) -> bool:
    return re.search(pattern, text) is not None


def argument_slots(function: str, arguments: dict, user_text: str) -> list[Slot] | None:
    """Slots for the call's arguments, each found verbatim in `user_text`; None when one is not there."""
    slots: list[Slot] = []
    for name, value in arguments.items():
        key = f"{function}.{name}"
        items = [((name, i), v) for i, v in enumerate(value)] if isinstance(value, list) else [((name,), value)]
        for path, item in items:
            if isinstance(item, bool):
                continue  # flags are said in words ("include symbols"): kept as the template has them
            if _is_number(item):
                text = next((t for t in _number_texts(item) if _found(user_text, _number_pattern(t))), None)
            elif isinstance(item, str) and item.strip():
                text = item if _found(user_text, _string_pattern(item)) else None
            else:
                return None
            if text is None:
                return None
            slots.append(Slot(text, item, key, path))
    return slots


def result_numbers(function: str, result: str, answer: str, taken: set[str]) -> list[Slot]:
    """Numbers of the function result that the answer repeats verbatim (and no argument already covers)."""
    try:
        data = json.loads(result)
    except json.JSONDecodeError:
        return []
    found: list[Slot] = []

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif _is_number(node) and node != 0:
            text = str(node)
            if text not in taken and _found(answer, _number_pattern(text)) and _found(result, _number_pattern(text)):
                taken.add(text)
                found.append(Slot(text, None, f"{function}.result"))

    walk(data)
    return found


def episodes(conversation: dict) -> list[tuple[int, int]]:
    """(start, end) of each call episode: [user, call, result, answer], with the exchange before it when that is talk."""
    msgs = conversation["messages"]
    out = []
    for i, m in enumerate(msgs):
        if not (m["role"] == "assistant" and m.get("tool_calls")):
            continue
        if i < 1 or i + 2 >= len(msgs) or msgs[i - 1]["role"] != "user" or len(m["tool_calls"]) != 1:
            continue
        if msgs[i + 1]["role"] != "tool" or msgs[i + 2]["role"] != "assistant" or msgs[i + 2].get("tool_calls") \
                or not msgs[i + 2].get("content"):
            continue
        start = i - 1
        if i >= 3 and msgs[i - 3]["role"] == "user" and msgs[i - 2]["role"] == "assistant" \
                and not msgs[i - 2].get("tool_calls") and not any(x.get("tool_calls") for x in msgs[:i - 3]):
            start = i - 3
        out.append((start, i + 3))
    return out


def make_templates(conversations: list[dict]) -> tuple[list[Template], Counter]:
    """Every glaive call episode that can be slotted; the counter says how many were kept or why not."""
    templates: list[Template] = []
    counts: Counter = Counter()
    for conv in conversations:
        for start, end in episodes(conv):
            msgs = copy.deepcopy(conv["messages"][start:end])
            user, call, result, answer = msgs[-4], msgs[-3], msgs[-2], msgs[-1]
            function = call["tool_calls"][0]["function"]
            counts["episodes"] += 1
            if len(answer["content"]) > MAX_ANSWER_CHARS:
                counts["skipped_long_answer"] += 1
                continue
            slots = argument_slots(function["name"], function["arguments"], user["content"])
            if slots is None:
                counts["skipped_value_not_verbatim"] += 1
                continue
            texts = [s.text for s in slots]
            if len(set(texts)) != len(texts):
                counts["skipped_ambiguous_values"] += 1
                continue
            slots += result_numbers(function["name"], result["content"], answer["content"], set(texts))
            templates.append(Template(function["name"], conv["tools"], msgs, slots, conv.get("row", -1)))
            counts["kept"] += 1
    per_function = Counter(t.function for t in templates)
    kept = [t for t in templates if per_function[t.function] >= MIN_TEMPLATES]
    counts["skipped_rare_function"] = len(templates) - len(kept)
    counts["kept"] = len(kept)
    return kept, counts


def string_pools(conversations: list[dict]) -> dict[str, list[str]]:
    """`function.argument` -> the string values glaive's calls give it (list elements one by one)."""
    strings: dict[str, list[str]] = {}
    for conv in conversations:
        for m in conv["messages"]:
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                for name, value in fn["arguments"].items():
                    for item in value if isinstance(value, list) else [value]:
                        if isinstance(item, str) and item.strip():
                            pool = strings.setdefault(f"{fn['name']}.{name}", [])
                            if item not in pool:
                                pool.append(item)
    return strings


def make_pools(conversations: list[dict], is_eval: Callable[[str], bool]) -> dict[bool, Pools]:
    """The pools of each side of the split (False: train, True: held out). Text exchanges come from glaive
    conversations on that side (by `glaive/<row>`), so held-out no-call prompts are unseen; the argument
    value pools are shared."""
    strings = string_pools(conversations)
    pools = {False: Pools(strings), True: Pools(strings)}
    for conv in conversations:
        msgs = conv["messages"]
        if any(m.get("tool_calls") for m in msgs) or len(msgs) < 2:
            continue
        first = msgs[:2]
        if first[0]["role"] != "user" or first[1]["role"] != "assistant" or not first[1].get("content") \
                or len(first[0]["content"]) + len(first[1]["content"]) > MAX_TALK_CHARS:
            continue
        side = pools[is_eval(f"glaive/{conv.get('row', -1)}")]
        if conv.get("tools"):
            side.text_only.append({"tools": conv["tools"], "messages": first, "row": conv.get("row", -1)})
        else:
            side.small_talk.append(first)
    return pools


# ---------------------------------------------------------------- filling templates

def new_number(value, rng: random.Random):
    """A number of the same kind and similar magnitude (years stay years)."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        v = int(value)
        if 1900 <= v <= 2100:
            new = rng.randint(max(1900, v - 30), min(2100, v + 30))
        elif abs(v) < 10:
            new = rng.randint(1, max(9, abs(v)))
        else:
            digits = len(str(abs(v)))
            round_to = 10 ** (len(str(abs(v))) - len(str(abs(v)).rstrip("0"))) if v % 10 == 0 else 1
            new = rng.randint(max(10 ** (digits - 1), v // 2), max(v + 1, v * 3 // 2))
            new = max(round_to, new // round_to * round_to)
        return new if isinstance(value, int) else float(new)
    decimals = len(repr(value).split(".")[1]) if "." in repr(value) else 2
    return round(rng.uniform(value * 0.5, value * 1.5), min(decimals, 2)) or value


def fill(template: Template, pools: Pools, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """The template's messages with every slot given a new value; returns (messages, tools)."""
    replacements: dict[str, str] = {}
    patterns: list[str] = []
    msgs = copy.deepcopy(template.messages)
    arguments = msgs[-3]["tool_calls"][0]["function"]["arguments"]
    used = {s.text for s in template.slots}
    for slot in template.slots:
        if slot.value is None or _is_number(slot.value):
            for _ in range(10):
                new = new_number(float(slot.text) if "." in slot.text else int(slot.text), rng)
                text = str(new)
                if text not in used or text == slot.text:
                    break
            value = new if slot.value is None else (float(new) if isinstance(slot.value, float) else int(new))
        else:
            options = [v for v in pools.strings.get(slot.argument, []) if v not in used or v == slot.text]
            text = value = rng.choice(options) if options else slot.text
        used.add(text)
        replacements[slot.text] = text
        patterns.append(_pattern(slot))
        if slot.path:
            if len(slot.path) == 1:
                arguments[slot.path[0]] = value
            else:
                arguments[slot.path[0]][slot.path[1]] = value
    if patterns:
        combined = re.compile("|".join(f"(?:{p})" for p in sorted(patterns, key=len, reverse=True)))
        for m in msgs:
            if m.get("content"):
                m["content"] = combined.sub(lambda hit: replacements[hit.group(0)], m["content"])
    return msgs, copy.deepcopy(template.tools)


# ---------------------------------------------------------------- conversations

def tool_names(tools: list[dict]) -> set[str]:
    return {t["function"]["name"] for t in tools or []}


def call_conversation(templates: list[Template], by_function: dict[str, list[Template]], pools: Pools,
                      rng: random.Random) -> dict:
    template = rng.choice(templates)
    episode, tools = fill(template, pools, rng)
    messages: list[dict] = []
    if pools.small_talk and rng.random() < SMALL_TALK_RATE:
        for _ in range(rng.choice((1, 1, 2))):
            messages += copy.deepcopy(rng.choice(pools.small_talk))
    messages += episode
    if rng.random() < DISTRACTOR_RATE:
        others = [f for f in by_function if f not in tool_names(tools)]
        extra = rng.choice(by_function[rng.choice(others)])
        extra_tool = next(t for t in extra.tools if t["function"]["name"] == extra.function)
        tools = [*tools, extra_tool][::rng.choice((1, -1))]
    if rng.random() < SECOND_REQUEST_RATE:
        callable_next = [f for f in tool_names(tools) if f in by_function and f != template.function]
        if callable_next and rng.random() < 0.5:
            messages += fill(rng.choice(by_function[rng.choice(sorted(callable_next))]), pools, rng)[0][-4:]
        elif pools.small_talk:
            messages += copy.deepcopy(rng.choice(pools.small_talk))
    return {"messages": messages, "tools": tools, "row": template.source_row, "augmentation": "call"}


def text_conversation(pools: Pools, rng: random.Random) -> dict:
    item = rng.choice(pools.text_only)
    messages = copy.deepcopy(item["messages"])
    if pools.small_talk and rng.random() < 0.5:
        messages = [*copy.deepcopy(rng.choice(pools.small_talk)), *messages]
    return {"messages": messages, "tools": copy.deepcopy(item["tools"]), "row": item["row"], "augmentation": "no_call"}


def call_turns(messages: list[dict]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls")]


def answer_after(messages: list[dict], call_index: int) -> int | None:
    """Index of the assistant text answer that follows the call's results, if there is one."""
    for j in range(call_index + 1, len(messages)):
        if messages[j]["role"] == "assistant":
            return j if not messages[j].get("tool_calls") and messages[j].get("content") else None
    return None


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


def calls_fit(msgs: list[dict]) -> bool:
    """Every call is at most `MAX_CALL_CHARS` long: a call cut off by the sample length would judge as
    malformed (a text answer cut off is still a text answer)."""
    return all(len(json.dumps(c["function"])) <= MAX_CALL_CHARS for m in msgs for c in m.get("tool_calls") or [])


def request_texts(conversation: dict) -> set[str]:
    """The user turns a conversation is about: those answered by a call, or all of them when it has no call."""
    msgs = conversation["messages"]
    calls = call_turns(msgs)
    return {msgs[i - 1]["content"] for i in calls if msgs[i - 1]["role"] == "user"} if calls else \
        {m["content"] for m in msgs if m["role"] == "user"}


def build(glaive: list[dict], *, is_eval: Callable[[str], bool], seed: int = 0, conversations: int = CONVERSATIONS,
          spacing_rate: float = SPACING_RATE, missed_call_rate: float = MISSED_CALL_RATE) -> tuple[list[dict], dict]:
    """`conversations` demo conversations from canonical glaive conversations, and the template counts.

    `is_eval(conversation_id)` is the split's rule. Training conversations are made first; a held-out one
    whose request a training conversation already has is made again (up to `RETRIES` times, then left
    out and counted), so held-out prompts are unseen. Held-out conversations get no noise.
    """
    rng = random.Random(seed)
    templates, counts = make_templates(glaive)
    pools = make_pools(glaive, is_eval)
    by_function: dict[str, list[Template]] = {}
    for t in templates:
        by_function.setdefault(t.function, []).append(t)

    def one(side: Pools) -> dict:
        if rng.random() < NO_CALL_RATE:
            return text_conversation(side, rng)
        for _ in range(RETRIES):  # a conversation whose filled call came out too long is drawn again
            conv = call_conversation(templates, by_function, side, rng)
            if calls_fit(conv["messages"]):
                return conv
            counts["redrawn_long_call"] += 1
        raise RuntimeError(f"demo data: no call shorter than {MAX_CALL_CHARS} characters in {RETRIES} draws")

    made: dict[str, dict] = {}
    seen: set[str] = set()
    ids = [f"demo-{k:05d}" for k in range(conversations)]
    for cid in ids:
        if is_eval(cid):
            continue
        conv = {"id": cid, "source": "glaive", **one(pools[False])}
        seen |= request_texts(conv)
        calls = call_turns(conv["messages"])
        if calls and rng.random() < missed_call_rate:
            conv = with_missed_call(conv, rng.choice(calls)) or conv
        made[cid] = with_spacing_errors(conv, rng, spacing_rate)
    for cid in ids:
        if not is_eval(cid):
            continue
        for _ in range(RETRIES):
            conv = {"id": cid, "source": "glaive", **one(pools[True])}
            if not request_texts(conv) & seen:
                made[cid] = conv
                break
        else:
            counts["held_out_left_out_seen_in_training"] += 1
    info = {"templates": dict(counts), "functions": dict(sorted(Counter(t.function for t in templates).items())),
            "small_talk": {"train": len(pools[False].small_talk), "eval": len(pools[True].small_talk)},
            "text_only": {"train": len(pools[False].text_only), "eval": len(pools[True].text_only)}}
    return [made[cid] for cid in ids if cid in made], info


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
    return conversations


def write_demo(target_dir: Path, *, eval_fraction: float = 0.2, split_seed: int = 0, seed: int = 0) -> dict:
    """Build the demo conversations and write them (storage form, JSONL) with build.json, atomically."""
    from polaris_dpo import messages, readers

    def held_out(cid: str) -> bool:
        return readers.is_held_out(cid, eval_fraction, split_seed)

    conversations, templates = build(glaive_conversations(), is_eval=held_out, seed=seed)
    atomic_write_jsonl(target_dir / DEMO_FILE, (messages.to_storage(conv) for conv in conversations))
    info = {
        "source": GLAIVE, "eval_fraction": eval_fraction, "split_seed": split_seed, "seed": seed,
        "conversations": CONVERSATIONS, "spacing_rate": SPACING_RATE, "missed_call_rate": MISSED_CALL_RATE,
        "no_call_rate": NO_CALL_RATE, "small_talk_rate": SMALL_TALK_RATE,
        "second_request_rate": SECOND_REQUEST_RATE, "distractor_rate": DISTRACTOR_RATE,
        **templates,
        "counts": {"train": noise_counts([c for c in conversations if not held_out(c["id"])]),
                   "eval": noise_counts([c for c in conversations if held_out(c["id"])])},
    }
    atomic_write_json(target_dir / BUILD_FILE, info)
    return info


if __name__ == "__main__":
    from polaris_dpo import paths

    print(json.dumps(write_demo(Path(paths.asset(DEMO_DIR))), indent=2))
