"""The Soft Discrimination Score (SDS) and its companions, as pure functions (no lmms-eval import).

An item has K candidates, the correct one first. Each candidate gets a score, higher is better:
- lmms-eval wrappers report a *loss* (mean token NLL of the candidate): score = -loss ("loss" convention);
- lm-eval 0.4 wrappers report the summed log-likelihood: score = loglik ("loglik" convention);
- the paper averages raw logits of the candidate tokens: score = that mean ("score" convention, already a score).
p = softmax(scores); the item's SDS is p[0]; the item is correct when scores[0] is a maximum (ties count as correct).
"""

from __future__ import annotations

import ast
import math
from typing import Any, Iterable, Sequence

import numpy as np

CONVENTIONS = ("loss", "loglik", "score")


class NonFiniteScoreError(ValueError):
    """A model returned NaN or inf for a candidate: the item cannot be scored."""


def parse_result(result: Any) -> float:
    """First number of one per-candidate result: a number, a `(value, is_greedy)` tuple, or its string form.

    lmms-eval 0.7.3 stringifies loglikelihood results ("(0.73, False)"); other wrappers hand the tuple through.
    """
    if hasattr(result, "text"):  # lmms-eval GenerationResult that was not unwrapped
        result = result.text
    if isinstance(result, str):
        text = result.strip()
        try:
            result = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            # literal_eval does not know nan/inf
            result = tuple(float(x) for x in text.strip("()[]").split(",")[:1])
    if isinstance(result, (tuple, list)):
        if not result:
            raise ValueError("empty likelihood result")
        result = result[0]
    return float(result)


def to_scores(results: Sequence[Any], convention: str = "loss") -> list[float]:
    """Per-candidate scores (higher is better) from the per-candidate results of one item."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown score convention {convention!r}; expected one of {CONVENTIONS}")
    values = [parse_result(r) for r in results]
    return [-v if convention == "loss" else v for v in values]


def softmax(scores: Sequence[float]) -> list[float]:
    x = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise NonFiniteScoreError(f"non-finite candidate score in {list(scores)}")
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def item_sds(scores: Sequence[float], correct: int = 0) -> float:
    """Probability mass on the correct candidate."""
    return softmax(scores)[correct]


def item_correct(scores: Sequence[float], correct: int = 0) -> bool:
    """argmax is the correct candidate; a tie with the best score counts as correct (as the reference)."""
    if not all(math.isfinite(s) for s in scores):
        raise NonFiniteScoreError(f"non-finite candidate score in {list(scores)}")
    return scores[correct] >= max(scores)


def mean(values: Iterable[float]) -> float:
    v = list(values)
    return float(np.mean(v)) if v else float("nan")


def bootstrap_stderr(values: Sequence[float], iters: int = 1000, seed: int = 0) -> float:
    """Standard deviation of the mean over `iters` resamples with replacement (seeded: runs are reproducible)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or iters < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(iters)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: at most ~16 MB of indices at a time
    for start in range(0, iters, chunk):
        stop = min(iters, start + chunk)
        means[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    return float(means.std(ddof=1))


def balanced_mean(parts: dict[Any, Sequence[float]]) -> float:
    """Unweighted mean over parts of each part's unweighted mean (M3-Bench: categories -> subsets -> total)."""
    return mean(mean(v) for v in parts.values())


def balanced_stderr(part_stderrs: Sequence[float]) -> float:
    """Standard error of an unweighted mean of independent estimates: sqrt(sum se_i^2) / n."""
    se = np.asarray(part_stderrs, dtype=np.float64)
    return float(np.sqrt(np.sum(se**2)) / se.size) if se.size else float("nan")
