"""stage mine: prompts -> samples -> verdicts -> chosen/rejected pairs in `pairs/<name>/`.

    python -m polaris_dpo stage=mine                         # sample the model on the data's train split
    python -m polaris_dpo stage=mine mine.source=synthetic   # no model: perturb every reference
    python -m polaris_dpo stage=mine mine.source=when2call data=when2call data.path=<When2Call JSONL>

Streams and resumes: prompts are processed in chunks of about `mine.checkpoint_every`; each chunk's
pairs go to an append-only shard in `<pairs_dir>/.<name>.work/` and a small `state.json` records how
many prompts are done. A run started again with the same config skips those prompts, and since every
sample's seed depends only on (seed, example id, sample number), its pairs are those of a run that
was never stopped. At the end the shards are read twice (counts, then rows) to dedupe, balance, add
counterweight pairs and split by prompt, and the pair set is written atomically.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from omegaconf import OmegaConf

from polaris_dpo import pairs, readers, training
from polaris_dpo.atomic import atomic_write_json, atomic_write_jsonl
from polaris_dpo.config import FAILURE_CATEGORIES
from polaris_dpo.messages import examples as examples_of
from polaris_dpo.redact import config_yaml

log = logging.getLogger(__name__)

SOURCES = ("model", "synthetic", "when2call")
STATE_VERSION = 1


# ---------------------------------------------------------------- config checks and the work folder

def check_config(m) -> None:
    if m.source not in SOURCES:
        raise ValueError(f"mine.source={m.source!r}: expected one of {', '.join(SOURCES)}")
    if m.backend not in ("transformers", "vllm"):
        raise ValueError(f"mine.backend={m.backend!r}: expected transformers | vllm")
    unknown = [c for c in m.categories if c not in FAILURE_CATEGORIES]
    if unknown:
        raise ValueError(f"mine.categories: unknown {unknown}; choose from {', '.join(FAILURE_CATEGORIES)}")
    if not 0.0 <= m.counterweight < 1.0:
        raise ValueError(f"mine.counterweight={m.counterweight}: a share in [0, 1)")
    if not 0.0 <= m.test_fraction < 1.0:
        raise ValueError(f"mine.test_fraction={m.test_fraction}: a share in [0, 1)")
    if m.samples_per_prompt < 1 or m.batch_size < 1 or m.checkpoint_every < 1:
        raise ValueError("mine.samples_per_prompt, mine.batch_size and mine.checkpoint_every must be >= 1")
    if m.max_pairs_per_category is not None and m.max_pairs_per_category < 1:
        raise ValueError(f"mine.max_pairs_per_category={m.max_pairs_per_category}: at least 1, or null for no cap")


MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")


def model_folder_identity(path: str | None) -> list | None:
    """Name, size and mtime of a local model folder's weight, adapter and config files: retrained in place,
    it differs. None for a hub id."""
    if not path or not Path(path).is_dir():
        return None
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(Path(path).iterdir())
            if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES]


def fingerprint(cfg, model_path: str | None) -> str:
    """What decides the pairs: a resumed run must match it, or it starts afresh."""
    m = OmegaConf.to_container(cfg.mine, resolve=True)
    for key in ("checkpoint_every", "name", "pairs_dir", "batch_size", "overwrite"):
        m.pop(key, None)
    body = {"mine": m, "model_path": model_path, "seed": cfg.seed, "v": STATE_VERSION,
            "model_files": model_folder_identity(model_path or cfg.model.name_or_path),
            **{k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "format", "judge", "model")}}
    body["data"].pop("quarantine", None)
    body["model"].pop("cache_dir", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_state(work: Path, print_: str) -> dict:
    state_path = work / "state.json"
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if state.get("fingerprint") == print_:
            log.info("mine: resuming after %d prompts (%s)", state["prompts_done"], work)
            return state
        log.warning("mine: %s was left by a run with another config; starting afresh", work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return {"fingerprint": print_, "prompts_done": 0, "shards": [], "ledger": pairs.new_ledger(), "failures": 0,
            "data_counts": {}}


def _records(work: Path, shards: list[str]) -> Iterator[dict]:
    for name in shards:
        with (work / name).open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


# ---------------------------------------------------------------- prompts

def train_examples(cfg, reading) -> Iterator[dict]:
    """Prediction points of the data's train side (conversations not held out for eval), streamed."""
    for conversation in reading:
        if not readers.is_held_out(conversation["id"], cfg.data.eval_fraction, cfg.data.split_seed):
            yield from examples_of(conversation)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


# ---------------------------------------------------------------- the three sources

class ModelSource:
    """Samples the model and judges every sample."""

    def __init__(self, cfg, fmt, state):
        from polaris_dpo import models, sample

        m = cfg.mine
        self.cfg, self.fmt, self.m, self.sample = cfg, fmt, m, sample
        self.model_path = m.model_path or models.model_path_for(cfg, fmt)
        self.sampling = {"backend": m.backend, "temperature": m.temperature, "top_p": m.top_p,
                         "n": 1 if m.temperature <= 0 else m.samples_per_prompt, "max_new_tokens": m.max_new_tokens}
        if m.backend == "vllm":
            self.llm = sample.load_vllm(self.model_path)
        else:
            self.model, self.tokenizer = models.load_trained(self.model_path, cfg, fmt, merge_adapter=True)
            if not cfg.model.load_in_4bit:
                self.model.to(cfg.hardware.device)
        total = m.max_prompts * self.sampling["n"] if m.max_prompts else None
        self.bar = sample.progress_bar(total=total, desc="mine")
        self.bar.update(state["prompts_done"] * self.sampling["n"])
        self.failures = state["failures"]

    @property
    def chunk_size(self) -> int:
        return math.ceil(self.m.checkpoint_every / self.m.batch_size) * self.m.batch_size

    def _generate(self, batch: list[dict]) -> Iterator[list[str]]:
        args = dict(n=self.sampling["n"], temperature=self.m.temperature, top_p=self.m.top_p,
                    max_new_tokens=self.m.max_new_tokens, batch_size=self.m.batch_size, seed=self.cfg.seed,
                    progress=self.bar)
        if self.m.backend == "vllm":
            return self.sample.generate_vllm(self.llm, self.fmt, batch, **args)
        return self.sample.generate(self.model, self.tokenizer, self.fmt, batch, **args)

    def outcomes(self, chunk: list[dict]) -> list[pairs.PromptOutcome]:
        results: list[pairs.PromptOutcome | None] = [None] * len(chunk)
        renderable = []
        for i, example in enumerate(chunk):
            try:
                self.sample.render_prompt(self.fmt, example)
                renderable.append(i)
            except Exception as err:  # a prompt the format cannot render is the data's problem, not the run's
                results[i] = _quarantined(example, f"prompt does not render in format {self.fmt.name}: {err}")
        batch = [chunk[i] for i in renderable]
        for i, samples in zip(renderable, self._generate(batch), strict=True):
            results[i] = self._judge(chunk[i], samples)
        return results

    def _judge(self, example: dict, samples: list[str]) -> pairs.PromptOutcome:
        from polaris_dpo.judge import judge

        verdicts = [judge(text, example, self.fmt, self.cfg.judge) for text in samples]
        self.failures += sum(v.category != "ok" for v in verdicts)
        self.bar.set_postfix(failures=self.failures, refresh=False)
        provenance = [{"model": self.model_path, "sampling": self.sampling,
                       "seed": self.sample.prompt_seed(self.cfg.seed, str(example["id"]), j)}
                      for j in range(len(samples))]
        return pairs.mined_pairs(example, samples, verdicts, categories=self.m.categories,
                                 max_pairs=self.m.max_pairs_per_prompt, provenance=provenance,
                                 counterweight=self.m.counterweight > 0)

    def info(self) -> dict:
        return {"model": self.model_path, "sampling": self.sampling}

    def close(self):
        self.bar.close()


class SyntheticSource:
    """No model: each reference perturbed into each category, kept when the judge agrees."""

    def __init__(self, cfg, fmt, state):
        self.cfg, self.fmt, self.m = cfg, fmt, cfg.mine
        self.failures = state["failures"]
        self.chunk_size = self.m.checkpoint_every

    def outcomes(self, chunk: list[dict]) -> list[pairs.PromptOutcome]:
        provenance = {"model": "synthetic", "seed": self.cfg.seed}
        return [pairs.synthetic_pairs(example, self.fmt, categories=self.m.categories, judge_options=self.cfg.judge,
                                      provenance=provenance, max_pairs=self.m.max_pairs_per_prompt)
                for example in chunk]

    def info(self) -> dict:
        return {"model": "none (synthetic perturbation of the references)", "sampling": {}}

    def close(self):
        pass


class PreferenceSource:
    """Labelled preference rows (When2Call): the right answer against each wrong one."""

    def __init__(self, cfg, fmt, state):
        if cfg.data.reader != "when2call":
            raise ValueError(f"mine.source=when2call reads preference rows: set data=when2call "
                             f"(data.reader is {cfg.data.reader!r})")
        self.cfg, self.m, self.failures = cfg, cfg.mine, state["failures"]
        self.chunk_size = self.m.checkpoint_every

    def outcomes(self, chunk: list[dict]) -> list[pairs.PromptOutcome]:
        provenance = {"model": "when2call", "seed": self.cfg.seed}
        return [pairs.preference_pairs(example, provenance, self.cfg.judge) for example in chunk]

    def info(self) -> dict:
        return {"model": "none (When2Call preference data)", "sampling": {}}

    def close(self):
        pass


def _quarantined(example: dict, reason: str) -> pairs.PromptOutcome:
    return pairs.PromptOutcome(quarantine=[{"example_id": example["id"], "source": example.get("source"),
                                            "row": example.get("row"), "reason": reason}])


# ---------------------------------------------------------------- the run

def run(cfg) -> dict:
    m = cfg.mine
    check_config(m)
    fmt = training.load_format(cfg, m.model_path if m.source == "model" else None)  # as the model was trained
    pairs_dir = Path(m.pairs_dir)
    work = pairs_dir / f".{m.name}.work"
    existing = pairs_dir / m.name
    if (existing / "train.jsonl").is_file() and not m.overwrite:
        raise FileExistsError(f"mine.name={m.name}: the pair set {existing} exists (a DPO run may have trained on it); "
                              f"choose another mine.name, or replace it with mine.overwrite=true")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    source_cls = {"model": ModelSource, "synthetic": SyntheticSource, "when2call": PreferenceSource}[m.source]
    state = load_state(work, fingerprint(cfg, m.model_path))
    source = source_cls(cfg, fmt, state)
    try:
        reading = readers.read(cfg.data, run_dir)
        stream = itertools.islice(train_examples(cfg, reading), state["prompts_done"], m.max_prompts)
        for chunk in _chunks(stream, source.chunk_size):
            records = []
            for outcome in source.outcomes(chunk):
                pairs.record(state["ledger"], outcome)
                records += [{"pair": row} for row in outcome.pairs]
                records += [{"counterweight": outcome.counterweight}] if outcome.counterweight else []
                records += [{"quarantine": q} for q in outcome.quarantine]
            name = f"shard-{len(state['shards']):06d}.jsonl"
            atomic_write_jsonl(work / name, records)
            state["shards"].append(name)
            state["prompts_done"] += len(chunk)
            state["failures"] = source.failures
            atomic_write_json(work / "state.json", state, sort_keys=True)
        state["data_counts"] = dict(reading.counts) if state["prompts_done"] else state["data_counts"]
    finally:
        source.close()
    if state["ledger"]["prompts"]["read"] == 0 and reading.nothing_kept():
        raise ValueError(f"mine: no prompts to mine: {reading.nothing_kept()}")
    if state["ledger"]["prompts"]["read"] == 0:
        raise ValueError(f"mine: no prompts to mine in data.reader={cfg.data.reader} (path {cfg.data.path}); "
                         f"data.eval_fraction={cfg.data.eval_fraction} holds out that share of conversations "
                         "(BFCL's default 1.0 holds out all: set data.eval_fraction=0 to mine it)")
    info = {**source.info(), "source": m.source, "seed": cfg.seed,
            "data": f"{cfg.data.reader}: {cfg.data.root or ''}/{cfg.data.path or cfg.data.hub_id}",
            "config": config_yaml(cfg),
            "summary": _summary(m)}
    target, stats = finalize(work, state, pairs_dir / m.name, m, cfg.seed, info, run_dir)
    shutil.rmtree(work, ignore_errors=True)
    result = {"pairs": str(target), "stats": stats}
    atomic_write_json(run_dir / "mine.json", result, sort_keys=True)
    return result


def _summary(m) -> str:
    return {"model": "Pairs mined from the model's own failures: chosen is its output corrected where the judge "
                     "knows the correction, else the reference; rejected is the failed sample.",
            "synthetic": "Synthetic pairs: every reference perturbed into each failure category (no model); "
                         "chosen is the reference.",
            "when2call": "Pairs from When2Call preference rows: chosen is the labelled right answer, rejected "
                         "each other candidate."}[m.source]


def category_caps(counts: Counter, m) -> tuple[dict[str, int], str]:
    """Pairs kept per category (`mine.balance`: the smallest category's size; `mine.max_pairs_per_category`: at
    most that many) and the ledger's name for the pairs a cap leaves out."""
    caps = [cap for cap in (min(counts.values()) if m.balance and counts else None, m.max_pairs_per_category)
            if cap is not None]
    cap = min(caps, default=None)
    reason = "balance" if m.balance and cap == min(counts.values(), default=None) else "category_cap"
    return {c: n if cap is None else min(n, cap) for c, n in counts.items()}, reason


def spread_pick(index: int, keep: int, total: int) -> bool:
    """Whether the index-th (from 1) of `total` items is one of `keep` taken evenly across them."""
    return total > 0 and (index * keep) // total > ((index - 1) * keep) // total


def finalize(work: Path, state: dict, target: Path, m, seed: int, info: dict, run_dir: Path):
    """Shards -> pair set: exact duplicates dropped, categories balanced, counterweight added, split by prompt."""
    ledger = state["ledger"]
    seen: set[str] = set()
    counts: Counter = Counter()
    cw_candidates = 0
    for record in _records(work, state["shards"]):
        if "pair" in record:
            key = pairs.pair_key(record["pair"])
            if key not in seen or not m.dedupe:
                seen.add(key)
                counts[record["pair"]["category"]] += 1
        elif "counterweight" in record:
            cw_candidates += pairs.pair_key(record["counterweight"]) not in seen
    kept, cap_reason = category_caps(counts, m)
    regular, text_pairs = sum(kept.values()), kept.get("unwanted_call", 0)
    needed = max(0, math.ceil((m.counterweight * regular - text_pairs) / (1 - m.counterweight) - 1e-9))
    needed = min(needed, cw_candidates) if m.source == "model" else 0

    seen.clear()
    offered: Counter = Counter()
    cw_index = cw_added = 0
    quarantine_path = run_dir / "mine_quarantine.jsonl"
    quarantine_tmp = quarantine_path.with_name(f".{quarantine_path.name}.tmp")
    with pairs.PairSetWriter(target) as writer, quarantine_tmp.open("w", encoding="utf-8") as quarantine:
        for record in _records(work, state["shards"]):
            if "quarantine" in record:
                quarantine.write(json.dumps(record["quarantine"], ensure_ascii=False) + "\n")
                continue
            row = record.get("pair") or record["counterweight"]
            key = pairs.pair_key(row)
            if "counterweight" in record:
                if key in seen:
                    continue
                cw_index += 1
                if spread_pick(cw_index, needed, cw_candidates):
                    seen.add(key)
                    cw_added += 1
                    writer.add(row, "test" if pairs.is_test_prompt(row, m.test_fraction, seed) else "train")
                continue
            category = row["category"]
            if m.dedupe and key in seen:
                pairs.move(ledger, category, "pair", "duplicate")
                continue
            seen.add(key)
            offered[category] += 1
            if not spread_pick(offered[category], kept[category], counts[category]):
                pairs.move(ledger, category, "pair", cap_reason)
                continue
            writer.add(row, "test" if pairs.is_test_prompt(row, m.test_fraction, seed) else "train")
        ledger["counterweight"]["added"] = cw_added
        problems = pairs.check_ledger(ledger, writer.by_category())
        if problems:
            raise RuntimeError("mine: counts do not add up: " + "; ".join(problems))
        stats = {"ledger": ledger, "data": state.get("data_counts", {}), "source": m.source,
                 "counterweight": {"share": m.counterweight, "needed": needed, "candidates": cw_candidates,
                                   "added": cw_added}}
        writer.commit(stats, info)
    os.replace(quarantine_tmp, quarantine_path)
    print(f"polaris-dpo mine: wrote {target}\n{pairs.format_ledger(ledger)}")
    stats = json.loads((target / "stats.json").read_text())
    return target, stats
