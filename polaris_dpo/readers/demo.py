"""The default job's data: `polaris_dpo/assets/demo/demo_conversations.jsonl` (built by scripts/build_demo_data.py).

Rows are conversations in storage form, as this toolkit writes them, with provenance (`source`, `row`: the
glaive row of the template or text exchange they were made from) and what was done to them
(`augmentation`: call | no_call, `noise`). The file was built for one train/eval split (`build.json`):
only there are held-out conversations free of noise and of requests seen in training. Another
`data.eval_fraction` / `data.split_seed` works, with a warning saying so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from polaris_dpo.readers.openai import Reader as OpenAIReader

log = logging.getLogger(__name__)

BUILD_FILE = "build.json"
KEPT = ("source", "row", "augmentation", "noise")


class Reader(OpenAIReader):
    def start_file(self, file: Path | None) -> None:
        build = file.parent / BUILD_FILE if file is not None else None
        if build is None or not build.is_file():
            return
        info = json.loads(build.read_text(encoding="utf-8"))
        wanted = (self.cfg.get("eval_fraction", 0.2), self.cfg.get("split_seed", 0))
        if (info.get("eval_fraction"), info.get("split_seed")) != wanted:
            log.warning("data: %s was built for eval_fraction=%s split_seed=%s, not %s/%s: held-out "
                        "conversations may carry training noise or requests seen in training", file, info.get("eval_fraction"),
                        info.get("split_seed"), *wanted)

    def convert(self, row: dict) -> dict:
        conversation = super().convert(row)
        conversation.update({key: row[key] for key in KEPT if row.get(key) is not None})
        return conversation
