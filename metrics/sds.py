"""The Soft Discrimination Score (SDS) and its companions, as pure functions (no lmms-eval import).

An item has K candidates, the correct one first. Each candidate gets a score, higher is better:
- lmms-eval wrappers report a *loss* (mean token NLL of the candidate): score = -loss ("loss" convention);
- lm-eval 0.4 wrappers report the summed log-likelihood: score = loglik ("loglik" convention);
- the paper averages raw logits of the candidate tokens: score = that mean ("score" convention, already a score).
p = softmax(scores); the item's SDS is p[0]; the item is correct when scores[0] is a maximum (ties count as correct).
Its Brier score is sum_k (p_k - y_k)^2 over the same p (y the one-hot correct answer); its bits per byte are the
correct continuation's summed NLL in nats / (ln 2 x its UTF-8 bytes), whatever the score convention.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

CONVENTIONS = ("loss", "loglik", "score")


class NonFiniteScoreError(ValueError):
    """A model returned NaN or inf for a candidate: the item cannot be scored."""


def unwrap(result: Any) -> Any:
    """The result itself of an lmms-eval GenerationResult that the evaluator did not unwrap (else `result`)."""
    return getattr(result, "text", result)


def parse_result(result: Any) -> float:
    """First number of one per-candidate result: a number, a `(value, is_greedy)` tuple, or its string form.

    lmms-eval 0.7.3 stringifies loglikelihood results ("(0.73, False)"); other wrappers hand the tuple through.
    """
    result = unwrap(result)
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


def item_brier(scores: Sequence[float], correct: int = 0, taking_part: Sequence[bool] | None = None) -> float:
    """Brier score of the item: sum over the candidates of (p_k - y_k)^2, p the SDS softmax over the candidates
    that take part (`taking_part`; default all: a candidate a protocol quirk drops has no probability), y one-hot
    on `correct`. 0 is a sure correct answer, 2 a sure wrong one; a uniform p over K gives 1 - 1/K."""
    kept = [i for i in range(len(scores)) if taking_part is None or taking_part[i]]
    if correct not in kept:
        raise ValueError(f"the correct candidate {correct} takes no part in {list(scores)}")
    p = softmax([scores[i] for i in kept])
    return float(sum((pk - (1.0 if i == correct else 0.0)) ** 2 for i, pk in zip(kept, p)))


def bits_per_byte(nll_sum: float | None, n_bytes: int | None) -> float | None:
    """The correct continuation's bits per byte: summed NLL (nats) / (ln 2 x UTF-8 bytes); None when either is
    unknown, the continuation has no bytes, or the NLL is not finite."""
    if nll_sum is None or not n_bytes or not math.isfinite(nll_sum):
        return None
    return float(nll_sum) / (math.log(2) * int(n_bytes))


def item_correct(scores: Sequence[float], correct: int = 0) -> bool:
    """argmax is the correct candidate; a tie with the best score counts as correct (as the reference)."""
    if not all(math.isfinite(s) for s in scores):
        raise NonFiniteScoreError(f"non-finite candidate score in {list(scores)}")
    return scores[correct] >= max(scores)


def mean(values: Iterable[float]) -> float:
    v = list(values)
    return float(np.mean(v)) if v else float("nan")


def bootstrap_means(values: Sequence[float], iters: int, rng: np.random.Generator) -> np.ndarray:
    """`iters` means of resamples (with replacement, same size) of `values`; all NaN when `values` is empty."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.full(iters, np.nan)
    out = np.empty(iters)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: at most ~16 MB of indices at a time
    for start in range(0, iters, chunk):
        stop = min(iters, start + chunk)
        out[start:stop] = x[rng.integers(0, x.size, size=(stop - start, x.size))].mean(axis=1)
    return out


def bootstrap_stderr(values: Sequence[float], iters: int = 1000, seed: int = 0) -> float:
    """Standard deviation of the mean over `iters` resamples with replacement (seeded: runs are reproducible)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or iters < 2:
        return float("nan")
    return float(bootstrap_means(x, iters, np.random.default_rng(seed)).std(ddof=1))


def balanced(parts: Mapping[tuple[str, str], float | np.ndarray]):
    """M3-Bench's balanced mean: unweighted mean over subsets of the unweighted mean over each subset's categories.

    `parts` maps (subset, category) to a value, or to an array of bootstrap replicates (element-wise). NaN parts
    (a category without scored items) are left out. NaN when nothing is left.
    """
    by_subset: dict[str, list] = {}
    for (subset, _category), v in parts.items():
        a = np.asarray(v, dtype=np.float64)
        if a.ndim == 0 and not np.isfinite(a):
            continue
        by_subset.setdefault(subset, []).append(a)
    if not by_subset:
        return math.nan
    subset_means = [np.mean(np.stack(v), axis=0) for v in by_subset.values()]
    out = np.mean(np.stack(subset_means), axis=0)
    return float(out) if np.ndim(out) == 0 else out


def balanced_stderr(parts: Mapping[tuple[str, str], float]) -> float:
    """Standard error of `balanced` from independent per-category standard errors: sqrt(sum se_i^2) / n at each
    level (categories of a subset, then subsets). Non-finite stderrs are left out."""
    by_subset: dict[str, list[float]] = {}
    for (subset, _category), se in parts.items():
        if se is None or not math.isfinite(se):
            continue
        by_subset.setdefault(subset, []).append(float(se))
    if not by_subset:
        return math.nan

    def root_sum_square_over_n(se):
        se = np.asarray(se, dtype=np.float64)
        return float(np.sqrt(np.sum(se**2)) / se.size)

    return root_sum_square_over_n([root_sum_square_over_n(v) for v in by_subset.values()])
