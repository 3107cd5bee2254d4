#!/usr/bin/env python
"""Merge a run's adapters, verify, write a model card, and push the folder to the Hugging Face Hub.

    python scripts/merge_and_upload.py --run-dir outputs/pipeline/<run> --repo-id me/polaris-7b-dpo --private \
        --pairs pairs/mined --eval-before <run>/eval_sft/metrics.json --eval-after <run>/eval/metrics.json
    python scripts/merge_and_upload.py --run-dir ... --repo-id ... --dry-run     # list files and destination only
    python scripts/merge_and_upload.py --merged-dir <run>/merged --repo-id ...   # retry an upload, no merge

Trailing `key=value` arguments are Hydra overrides of the job config (model=..., data=..., merge.dtype=...).
A merged folder whose verification.json passed for the same inputs (base, dtype, adapter bytes) is not merged
again. The token comes from HF_TOKEN or the login cache (`hf auth login`); it is handed to HfApi only and is
never printed, logged or written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from polaris_dpo import lineage, merging, model_card  # noqa: E402
from polaris_dpo.compose import compose  # noqa: E402

log = logging.getLogger("merge_and_upload")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_argument_group("what to merge (one of)")
    source.add_argument("--run-dir", type=Path, help="a run folder (its newest dpo, else sft, chain) or a stage output folder, as merge.source takes")
    source.add_argument("--source", type=Path, help="a stage output folder with training.json")
    source.add_argument("--adapters", nargs="+", type=Path, help="adapter folders folded in order")
    parser.add_argument("--merged-dir", type=Path,
                        help="merged folder (default <run-dir>/merged); reused when its verification.json matches")
    parser.add_argument("--repo-id", help="Hub repository, e.g. me/polaris-7b-dpo")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", default=None, help="branch to push to (created when missing; default main)")
    parser.add_argument("--dry-run", action="store_true", help="merge, verify, write the card; list files and destination")
    parser.add_argument("--pairs", type=Path, help="pair set folder (its stats.json goes into the card)")
    parser.add_argument("--eval-before", type=Path, help="metrics.json of the eval before DPO (or of the base)")
    parser.add_argument("--eval-after", type=Path, help="metrics.json of the eval of the final model")
    parser.add_argument("--license", default="other", help="licence id for the card (default: other = the base's)")
    parser.add_argument("--commit-message", default="Upload model merged and verified by polaris-dpo")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the job config, e.g. model=mistral-7b")
    args = parser.parse_args(argv)
    if not (args.run_dir or args.source or args.adapters or args.merged_dir):
        parser.error("give --run-dir, --source, --adapters, or --merged-dir of an already verified merge")
    if not args.dry_run and not args.repo_id:
        parser.error("--repo-id is needed to upload (or use --dry-run)")
    return args


def _read_json(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    if path.is_dir():
        path = path / "stats.json"
    if not path.is_file():
        raise SystemExit(f"{what}: {path} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


def job_config(args):
    run_dir = args.run_dir or (args.merged_dir.parent if args.merged_dir else Path.cwd())
    overrides = list(args.overrides)
    if args.adapters:
        overrides.append("merge.adapters=[" + ",".join(str(a) for a in args.adapters) + "]")
    if args.source:
        overrides.append(f"merge.source={args.source}")
    return compose(overrides, run_dir=str(run_dir))


def merged_folder(args, cfg) -> tuple[Path, dict]:
    """The verified merged folder: reused when it matches the inputs, merged (and verified) otherwise."""
    from polaris_dpo.stages import merge as merge_stage

    merged_dir = (args.merged_dir or Path(cfg.run_dir) / cfg.merge.output).resolve()
    has_source = bool(args.run_dir or args.source or args.adapters)
    if not has_source:  # upload retry: the folder must have verified already
        record = json.loads((merged_dir / merging.VERIFICATION_RECORD).read_text()) \
            if (merged_dir / merging.VERIFICATION_RECORD).is_file() else None
        if not record or not record.get("passed"):
            raise SystemExit(f"{merged_dir}: no passed {merging.VERIFICATION_RECORD}; give --run-dir to merge")
        log.info("using the verified merge in %s", merged_dir)
        return merged_dir, record
    chain = merge_stage.resolve_chain(cfg)
    record = merging.existing_verification(merged_dir, merging.fingerprint(chain, cfg.merge.dtype))
    if record is not None:
        log.info("%s already holds a verified merge of these adapters: not merging again", merged_dir)
        return merged_dir, record
    cfg.merge.output = str(merged_dir)  # an absolute output replaces <run_dir>/<output>
    return merged_dir, merge_stage.run(cfg)


def write_card(args, cfg, merged_dir: Path, verification: dict) -> Path:
    from omegaconf import OmegaConf

    from polaris_dpo import formats

    sources = [Path(a) for a in verification.get("source", {}).get("adapters", [])]
    records = [r for r in (lineage.read_record(p) for p in sources) if r is not None]
    fmt_cfg = OmegaConf.merge(cfg.format, records[-1]["format"]) if records and records[-1].get("format") else cfg.format
    run_config = Path(cfg.run_dir) / "config.yaml"
    config = (OmegaConf.to_container(OmegaConf.load(run_config)) if run_config.is_file()
              else {"records": records})
    text = model_card.render(
        repo_id=args.repo_id or merged_dir.name, base_model=verification["source"]["base_model"],
        verification=verification, records=records, config=config,
        pair_stats=_read_json(args.pairs, "--pairs"), eval_before=_read_json(args.eval_before, "--eval-before"),
        eval_after=_read_json(args.eval_after, "--eval-after"), fmt=formats.from_config(fmt_cfg),
        license=args.license)
    card = merged_dir / "README.md"
    tmp = merged_dir / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(card)
    return card


def upload_operations(merged_dir: Path) -> list:
    """The commit operations that upload every file of the folder (hidden and temporary files left out)."""
    from huggingface_hub import CommitOperationAdd

    files = sorted(p for p in merged_dir.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(merged_dir).parts))
    return [CommitOperationAdd(path_in_repo=p.relative_to(merged_dir).as_posix(), path_or_fileobj=str(p)) for p in files]


def token_source() -> str:
    """Where the token will come from, for messages (never the token itself)."""
    from huggingface_hub import get_token

    if os.environ.get("HF_TOKEN"):
        return "HF_TOKEN"
    return "the login cache" if get_token() else "nowhere (set HF_TOKEN or run `hf auth login`)"


def describe(args, operations) -> str:
    destination = f"https://huggingface.co/{args.repo_id}" if args.repo_id else "(no --repo-id given)"
    total = sum(os.path.getsize(op.path_or_fileobj) for op in operations)
    lines = [f"destination: {destination} (revision {args.revision or 'main'}, "
             f"{'private' if args.private else 'public'}), token from {token_source()}",
             f"{len(operations)} files, {total / 1e6:.1f} MB:"]
    lines += [f"  {op.path_in_repo}  ({os.path.getsize(op.path_or_fileobj)} bytes)" for op in operations]
    return "\n".join(lines)


def upload(args, operations):
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise SystemExit("no Hugging Face token: set HF_TOKEN or run `hf auth login` (nothing was uploaded)")
    api = HfApi(token=token)
    api.create_repo(args.repo_id, private=args.private, repo_type="model", exist_ok=True)
    if args.revision and args.revision != "main":
        api.create_branch(args.repo_id, branch=args.revision, repo_type="model", exist_ok=True)
    return api.create_commit(args.repo_id, operations=operations, commit_message=args.commit_message,
                             revision=args.revision, repo_type="model")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    cfg = job_config(args)
    merged_dir, verification = merged_folder(args, cfg)
    write_card(args, cfg, merged_dir, verification)
    operations = upload_operations(merged_dir)
    print(describe(args, operations))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    commit = upload(args, operations)
    print(f"uploaded: {commit.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
