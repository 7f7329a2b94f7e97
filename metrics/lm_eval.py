"""SDS for lm-eval 0.4 `multiple_choice` tasks (text LLMs): per-doc scoring and its aggregation.

lm-eval sends one loglikelihood request per choice, `(context, target_delimiter + choice)`, and hands a task's
`process_results(doc, results)` one `(summed logprob, is_greedy)` per choice. SDS is the softmax probability
mass on the gold choice of those summed log-likelihoods ("loglik" convention of `radar_tasks.metrics.sds`).

lm-eval does not pass the task's `doc_to_target` to `process_results`, so the gold index must come from the doc:
- `process_results`: the doc has a `gold` field (an int index; see `resolve_gold` for the accepted forms);
- `process_results_first`: the correct choice is the first one (as in M3-Bench);
- `make_process_results(gold_field=..., choices_field=...)`: any other field, e.g. in your task's `utils.py`:
  `process_results = make_process_results(gold_field="label")`, then `!function utils.process_results`.
Make sure the field agrees with the task's `doc_to_target`.

Each doc yields floats, `{"sds": p_gold, "acc": 1.0 or 0.0}`; aggregate both with lm-eval's registered `mean`,
which is the one aggregation lm-eval gives a closed-form stderr (sample std / sqrt(n)). In a task YAML:

    process_results: !function radar_tasks.metrics.lm_eval.process_results
    metric_list:
      - {metric: sds, aggregation: mean, higher_is_better: true}
      - {metric: acc, aggregation: mean, higher_is_better: true}

(`!function` on an importable module needs lm-eval >= 0.4.9 or so; older versions only resolve a .py file next to
the YAML: there, put `from radar_tasks.metrics.lm_eval import process_results` into the task's `utils.py`.)

`acc` follows this project's convention: a tie with the best score counts as correct (lm-eval's own `acc` takes
the first argmax). A doc with a non-finite log-likelihood gets `acc = 0` and no `sds` (logged as a warning).
No lmms-eval import here.
"""

from __future__ import annotations

import logging
import math
import numbers
import string
from collections.abc import Callable, Sequence
from typing import Any

from radar_tasks.metrics import sds

logger = logging.getLogger(__name__)

CONVENTION = "loglik"  # lm-eval 0.4: per choice (summed log-likelihood, is_greedy)

try:  # the very function object lm-eval registers as "mean": only it gets `mean_stderr` (identity lookup)
    from lm_eval.api.metrics import mean as _lm_eval_mean
except ImportError:  # lm-eval not installed: the pure parts of this module still work
    _lm_eval_mean = None


def _plain_mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


#: Aggregation for `aggregation: !function radar_tasks.metrics.lm_eval.sds_mean`. It *is* lm-eval's `mean`, so
#: lm-eval reports `sds_stderr` = sample std / sqrt(n); any other function object would get stderr "N/A".
sds_mean: Callable[[Sequence[float]], float] = _lm_eval_mean or _plain_mean


def resolve_gold(doc: dict, n_choices: int, gold_field: str = "gold", choices_field: str | None = "choices") -> int:
    """Index of the gold choice read from `doc[gold_field]`.

    Accepted values: an int (or integral number); a string equal to one of `doc[choices_field]` (when the doc has
    that field); a string of digits ("2"); a single capital letter ("C" -> 2). Raises ValueError otherwise or when
    the index is out of range.
    """
    if gold_field not in doc:
        raise ValueError(
            f"doc has no gold field {gold_field!r} (fields: {sorted(doc)}); use make_process_results(gold_field=...) "
            "or process_results_first (correct choice first)"
        )
    value = doc[gold_field]
    index: int | None = None
    if isinstance(value, bool):
        index = None
    elif isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer()):
        index = int(value)
    elif isinstance(value, str):
        choices = doc.get(choices_field) if choices_field else None
        text = value.strip()
        if isinstance(choices, (list, tuple)) and value in choices:
            index = list(choices).index(value)
        elif text.isdigit():
            index = int(text)
        elif len(text) == 1 and text in string.ascii_uppercase:
            index = string.ascii_uppercase.index(text)
    if index is None:
        raise ValueError(f"cannot read a gold choice index from {gold_field}={value!r}")
    if not 0 <= index < n_choices:
        raise ValueError(f"gold index {index} (from {gold_field}={value!r}) out of range for {n_choices} choices")
    return index


def score(results: Sequence[Any], gold: int) -> dict[str, float]:
    """`{"sds": p_gold, "acc": 0/1}` from the per-choice lm-eval results; no `sds` when a score is not finite."""
    scores = sds.to_scores(results, CONVENTION)
    if not all(math.isfinite(s) for s in scores):
        logger.warning(f"non-finite log-likelihood among {scores}: item counted wrong in acc, left out of sds")
        return {"acc": 0.0}
    return {"sds": float(sds.item_sds(scores, gold)), "acc": float(sds.item_correct(scores, gold))}


def score_doc(doc: dict, results: Sequence[Any], gold_field: str | None, choices_field: str | None) -> dict[str, float]:
    """`score` of one doc, its gold index read from `doc[gold_field]` (None: the first choice)."""
    n = len(results)
    choices = doc.get(choices_field) if choices_field else None
    if isinstance(choices, (list, tuple)) and len(choices) != n:
        raise ValueError(
            f"{n} results for {len(choices)} choices in doc[{choices_field!r}]: does the task add other "
            "requests (e.g. metric acc_mutual_info), or do the choices differ from doc_to_choice?"
        )
    gold = 0 if gold_field is None else resolve_gold(doc, n, gold_field, choices_field)
    return score(results, gold)


def make_process_results(
    gold_field: str | None = "gold", choices_field: str | None = "choices"
) -> Callable[[dict, Sequence[Any]], dict[str, float]]:
    """An lm-eval `process_results(doc, results)` reading the gold index from `doc[gold_field]`.

    `gold_field=None`: the correct choice is the first one. `choices_field` names the doc's list of choice texts
    (used to map a gold given as the choice text, and to check the number of results); None to skip both.
    """

    def process_results(doc: dict, results: Sequence[Any]) -> dict[str, float]:
        return score_doc(doc, results, gold_field, choices_field)

    process_results.__name__ = "process_results"
    process_results.__doc__ = (
        f"lm-eval process_results: SDS and acc, gold = "
        f"{'the first choice' if gold_field is None else f'doc[{gold_field!r}]'}."
    )
    return process_results


#: `process_results: !function radar_tasks.metrics.lm_eval.process_results` (gold index in `doc["gold"]`).
process_results = make_process_results("gold")

#: `process_results: !function radar_tasks.metrics.lm_eval.process_results_first` (correct choice first).
process_results_first = make_process_results(None)
process_results_first.__name__ = "process_results_first"
