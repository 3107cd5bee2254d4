"""The pipeline's report: `report.md` (a table per category before and after each round, the forgetting check,
the chart, the steps' wall times) and `pipeline_summary.json`, from the results of the finished steps."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from polaris_dpo import report
from polaris_dpo.atomic import atomic_write_json, atomic_write_text
from polaris_dpo.config import CATEGORIES, FAILURE_CATEGORIES

SUMMARY_FILE = "pipeline_summary.json"


def write_report(run_dir: Path, cfg: DictConfig, steps: dict[str, dict], rounds: int) -> dict:
    """`report.md` (a table per category: before, after each round; the chart) and `pipeline_summary.json`."""
    evals = {"before": "eval_before", **{f"round {r}": f"eval_{r}" for r in range(1, rounds + 1)}}
    measured = {label: steps[name]["result"]["metrics"] for label, name in evals.items()}
    last = f"round {rounds}"
    before, after = measured["before"], measured[last]
    chart = report.category_chart(run_dir / "failure_rates.png",
                                  {label: {c: m["categories"][c]["rate"] for c in FAILURE_CATEGORIES}
                                   for label, m in measured.items()},
                                  title="Failure rates on held-out prompts", categories=FAILURE_CATEGORIES)
    settings = after.get("settings", {})
    pairs_path = steps[f"mine_{rounds}"]["result"]["pairs"]
    merged = steps["merge"]["result"]["model"]
    lines = [
        "# polaris-dpo pipeline report", "",
        f"Held-out prompts: {after.get('prompts', '?')}; {settings.get('samples_per_prompt', '?')} samples per prompt "
        f"at temperature {settings.get('temperature', '?')} ({before['n']} samples before, {after['n']} after). "
        "Rates are shares of all samples with a 95 % Wilson interval and the count.", "",
        "## Before and after", "",
        report.category_table({"before": before["categories"], f"after ({last})": after["categories"]}), "",
    ]
    if rounds > 1:
        lines += ["## Each round", "", report.category_table({label: m["categories"] for label, m in measured.items()}),
                  ""]
    forgetting = forgetting_summary(steps, rounds)
    if forgetting:
        lines += ["## Forgetting check: BFCL", "",
                  f"{forgetting['questions']} BFCL questions ({', '.join(forgetting['by_category'])}), one greedy "
                  "answer each, in the job's format. Accuracy is the `ok` share.", "",
                  report.category_table({"before": steps["bfcl_before"]["result"]["metrics"]["categories"],
                                         f"after ({last})": steps[f"bfcl_{rounds}"]["result"]["metrics"]["categories"]}),
                  "", "| BFCL category | before | after |", "|---|---|---|"]
        lines += [f"| {name} | {100 * v['before']:.1f} % | {100 * v['after']:.1f} % |"
                  for name, v in forgetting["by_category"].items()]
        lines += [""]
    lines += [f"![failure rates]({chart.name})", "", "## Steps", "", "| step | wall time (s) |", "|---|---|"]
    lines += [f"| {name} | {info['wall_s']:.1f} |" for name, info in steps.items()]
    lines += ["", f"Pair set (last round): `{pairs_path}`  ", f"Merged model: `{merged}`  ",
              f"Evaluations: {', '.join(f'`{run_dir / name}`' for name in evals.values())}", ""]
    report_path = atomic_write_text(run_dir / "report.md", "\n".join(lines))

    def rates(metrics: dict) -> dict[str, float]:
        return {c: metrics["categories"][c]["rate"] for c in CATEGORIES}

    summary = {
        "before": rates(before),
        "after": rates(after),
        "intervals": {"before": {c: [before["categories"][c]["low"], before["categories"][c]["high"]] for c in CATEGORIES},
                      "after": {c: [after["categories"][c]["low"], after["categories"][c]["high"]] for c in CATEGORIES}},
        "samples": {"before": before["n"], "after": after["n"]},
        "prompts": after.get("prompts"),
        "eval_settings": settings,
        "rounds": [{"round": r, "rates": rates(measured[f"round {r}"]), "samples": measured[f"round {r}"]["n"],
                    "pairs": steps[f"mine_{r}"]["result"]["pairs"],
                    "pair_stats": steps[f"mine_{r}"]["result"].get("stats")} for r in range(1, rounds + 1)],
        "forgetting": forgetting,
        "step_wall_s": {name: info["wall_s"] for name, info in steps.items()},
        "total_wall_s": round(sum(info["wall_s"] for info in steps.values()), 2),
        "paths": {"report": str(report_path), "chart": str(chart), "pairs": pairs_path, "merged_model": merged,
                  "eval_before": str(run_dir / "eval_before"), "eval_after": str(run_dir / evals[last])},
        "seed": int(cfg.seed),
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return {"report": str(report_path), "summary": str(run_dir / SUMMARY_FILE)}


def forgetting_summary(steps: dict[str, dict], rounds: int) -> dict | None:
    """BFCL accuracy (the `ok` share) before and after, with its interval, overall and per BFCL category."""
    if "bfcl_before" not in steps:
        return None
    before = steps["bfcl_before"]["result"]["metrics"]
    after = steps[f"bfcl_{rounds}"]["result"]["metrics"]

    def ok(metrics: dict) -> dict:
        return metrics["categories"]["ok"]

    return {
        "questions": before["n"],
        "before": ok(before)["rate"], "after": ok(after)["rate"],
        "intervals": {"before": [ok(before)["low"], ok(before)["high"]], "after": [ok(after)["low"], ok(after)["high"]]},
        "by_category": {source.removeprefix("BFCL_v4_"): {
            "n": entry["n"], "before": entry["categories"]["ok"]["rate"],
            "after": after["by_source"][source]["categories"]["ok"]["rate"]}
            for source, entry in before["by_source"].items()},
    }
