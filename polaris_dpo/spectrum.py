"""Spectrum / laser partial freezing: rank weight matrices by signal-to-noise ratio, train the best.

For each weight matrix W (m x n), from its singular values s:
    noise scale  = IQR(s) / 1.349
    threshold    = noise scale * (1 + sqrt(beta)),   beta = min(m, n) / max(m, n)
    SNR          = sum(s > threshold) / sum(s <= threshold)
    score        = SNR / max(s)
Modules are ranked by score within their type (q_proj, down_proj, ...) and the top fraction of each
type is trained, with the embeddings and the LM head. Scans are cached per model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from polaris_dpo.atomic import atomic_write_json

log = logging.getLogger(__name__)

SPECTRUM_JSON = "spectrum.json"


def snr(weight) -> tuple[float, float]:
    """(SNR, largest singular value) of one weight matrix, in float32."""
    import torch

    singular = torch.linalg.svdvals(weight.detach().float())
    m, n = weight.shape
    beta = min(m, n) / max(m, n)
    q1, q3 = torch.quantile(singular, torch.tensor([0.25, 0.75]))
    threshold = float(q3 - q1) / 1.349 * (1 + math.sqrt(beta))
    signal = float(singular[singular > threshold].sum())
    noise = float(singular[singular <= threshold].sum())
    ratio = signal / noise if noise > 0 else math.inf
    return ratio, float(singular.max())


def _weight(module):
    """The full-precision weight of a Linear (4-bit weights dequantised)."""
    weight = module.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, quant_state)
    return weight


def linear_modules(model) -> dict[str, object]:
    """Every linear layer of the transformer body (the LM head and embeddings are always trained)."""
    import torch

    head = model.get_output_embeddings()
    found = {}
    for name, module in model.named_modules():
        if module is head or not isinstance(module, torch.nn.Linear):
            continue
        found[name] = module
    return found


def scan(model) -> dict[str, dict]:
    """{module name: {"type", "snr", "max_singular", "score", "shape"}} for every linear layer."""
    scores = {}
    for name, module in linear_modules(model).items():
        weight = _weight(module)
        ratio, top = snr(weight)
        scores[name] = {"type": name.split(".")[-1], "snr": ratio, "max_singular": top,
                        "score": ratio / top if top > 0 else 0.0, "shape": list(weight.shape)}
    return scores


def choose(scores: dict[str, dict], top_fraction: float) -> list[str]:
    """The top `top_fraction` of each module type by score (at least one per type)."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"train.spectrum.top_fraction={top_fraction}: expected a share in (0, 1]")
    by_type: dict[str, list[str]] = {}
    for name, entry in scores.items():
        by_type.setdefault(entry["type"], []).append(name)
    chosen = []
    for names in by_type.values():
        names.sort(key=lambda n: scores[n]["score"], reverse=True)
        chosen.extend(names[: max(1, math.ceil(top_fraction * len(names)))])
    return sorted(chosen)


def _cache_file(cache_dir: str, model_id: str, scores_key: list[str]) -> Path:
    key = json.dumps({"model": model_id, "modules": scores_key, "v": 1})
    if Path(model_id).is_dir():  # a local folder: its weights files identify the version
        key += json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                 for p in Path(model_id).glob("*.safetensors")))
    return Path(cache_dir).expanduser() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def cached_scan(model, model_id: str, cache_dir: str) -> dict[str, dict]:
    names = sorted(linear_modules(model))
    cache = _cache_file(cache_dir, model_id, names)
    if cache.is_file():
        log.info("spectrum: scan of %s read from %s", model_id, cache)
        return json.loads(cache.read_text())
    scores = scan(model)
    atomic_write_json(cache, scores, sort_keys=True)
    log.info("spectrum: scanned %d matrices of %s (cached in %s)", len(scores), model_id, cache)
    return scores


def select(model, spectrum_cfg, model_id: str, output_dir: Path) -> list[str]:
    """Scan (or read the cache), choose the top fraction per type, record it in `output_dir/spectrum.json`."""
    scores = cached_scan(model, model_id, spectrum_cfg.cache_dir)
    chosen = choose(scores, spectrum_cfg.top_fraction)
    atomic_write_json(Path(output_dir) / SPECTRUM_JSON, {"model": model_id, "top_fraction": spectrum_cfg.top_fraction,
                                                   "apply": spectrum_cfg.apply, "chosen": chosen, "scores": scores}, sort_keys=True)
    log.info("spectrum: training %d of %d matrices (top %.0f%% per type) with %s", len(chosen), len(scores),
             100 * spectrum_cfg.top_fraction, spectrum_cfg.apply)
    return chosen


def freeze_all_but(model, chosen: list[str]) -> None:
    """Full fine-tuning of the chosen modules, the input embeddings and the LM head; all else frozen."""
    model.requires_grad_(False)
    modules = dict(model.named_modules())
    for name in chosen:
        modules[name].requires_grad_(True)
    model.get_input_embeddings().requires_grad_(True)
    model.get_output_embeddings().requires_grad_(True)
