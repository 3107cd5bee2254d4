"""Verdicts -> chosen/rejected pairs, and pair sets on disk: the package's API, one module a job.

Per prompt, `mined_pairs` (the model's samples, `mined`), `synthetic_pairs` (each reference perturbed
into each category, `synthetic`) and `preference_pairs` (When2Call, `preference`) return a
`PromptOutcome` (`outcome`): candidate pairs, an optional counterweight candidate, and one ledger entry
per sample or perturbation, so that the counts add up (`ledger`). A pair row is built in `rows`.
`PairSetWriter` writes a pair set folder atomically, `load` reads one (`pair_set`; its card and chart:
`card`).
"""

from polaris_dpo.pairs.ledger import check_ledger, format_ledger, move, new_ledger, record
from polaris_dpo.pairs.mined import mined_pairs
from polaris_dpo.pairs.outcome import PromptOutcome
from polaris_dpo.pairs.pair_set import PairSetWriter, load
from polaris_dpo.pairs.preference import preference_pairs
from polaris_dpo.pairs.rows import (
    CHOSEN_SOURCES,
    NO_FITTING_FUNCTION,
    is_test_prompt,
    pair_key,
    pair_row,
    prompt_key,
    reference_answer,
)
from polaris_dpo.pairs.synthetic import perturb, rendered_text, synthetic_pairs

__all__ = ["CHOSEN_SOURCES", "NO_FITTING_FUNCTION", "PairSetWriter", "PromptOutcome", "check_ledger",
           "format_ledger", "is_test_prompt", "load", "mined_pairs", "move", "new_ledger", "pair_key", "pair_row",
           "perturb", "preference_pairs", "prompt_key", "record", "reference_answer", "rendered_text",
           "synthetic_pairs"]
