"""Run the benchmarks side by side and write benchmarks/RESULTS.md.

    python -m benchmarks                 # every benchmark that can run here
    python -m benchmarks judge mine      # only these
    python -m benchmarks --quick         # smaller sizes, for a smoke run

Each benchmark module has `run(quick: bool) -> dict` returning {"title", "rows": [(label, value, unit)],
"notes": [...]}; a module that cannot run here (no CUDA for `gpu`) returns {"skipped": reason}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

ORDER = ["judge", "mine", "generate", "dpo_overhead", "new_tokens", "ref_precompute", "gpu"]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PACKAGES = ["torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate"]


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU: {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


def render(results: dict[str, dict], elapsed: float, load_at_start: str = "unknown") -> str:
    lines = [
        "# Benchmark results",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- hardware: {hardware()}",
        f"- python {platform.python_version()}; {versions()}",
        f"- command: `python -m benchmarks {' '.join(sys.argv[1:])}`".rstrip(),
        f"- wall time of the whole run: {elapsed:.0f} s",
        f"- machine load (1-minute load average) at start / end: {load_at_start} / {load_average()} on "
        f"{os.cpu_count()} cores: other jobs shared the machine when this is above the core count, and wall "
        "times are then pessimistic (CPU-time figures much less so)",
        "",
    ]
    for name, result in results.items():
        lines.append(f"## {name}: {result.get('title', '')}".rstrip(": "))
        lines.append("")
        if "wall_s" in result:
            lines += [f"Wall time of this benchmark: {result['wall_s']:.0f} s", ""]
        if "skipped" in result:
            lines += [f"Not measured here: {result['skipped']}", ""]
            continue
        lines += ["| measure | value | unit |", "|---|---:|---|"]
        for label, value, unit in result["rows"]:
            shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
            lines.append(f"| {label} | {shown} | {unit} |")
        lines.append("")
        for note in result.get("notes", []):
            lines.append(f"- {note}")
        if result.get("notes"):
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(ORDER)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(ORDER)}")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = args.names or ORDER
    start, load_at_start = time.perf_counter(), load_average()
    results: dict[str, dict] = {}
    for name in names:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        results[name] = module.run(quick=args.quick)
        results[name]["wall_s"] = time.perf_counter() - t0
        print(json.dumps(results[name], default=str, indent=1), flush=True)
        print(f"   ({results[name]['wall_s']:.1f} s)", flush=True)
    text = render(results, time.perf_counter() - start, load_at_start)
    print(text)
    if not args.no_write:
        RESULTS.write_text(text + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
