"""Per-item records and their aggregation into M3-Bench scores (pure: no lmms-eval import).

An item record (what `--log_samples` shows under `sds`) identifies the item itself, because lmms-eval 0.7.3 drops
the doc from the logs. Aggregation follows the reference: SDS = mean p over scored items; acc counts skipped and
unscorable items as wrong; a subset's score is the unweighted mean of its categories, and a group's score the
unweighted mean of its subsets.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from radar_tasks import taxonomy
from radar_tasks.metrics import sds as S

SKIP_TOO_MANY_IMAGES = f"more than {taxonomy.MAX_IMAGES} images"
SKIP_NON_FINITE = "non-finite model score"


class Scored(tuple):
    """One candidate's result as `radar_hf` returns it: lmms-eval's `(loss, is_greedy)` tuple (it unpacks as one),
    carrying what the item record shows besides: `candidate` (the text scored, without the joiner), `prompt` (the
    text given to the model, image markers kept; on the first candidate of an item) and `skipped` (why the item
    was not scored). Results of other wrappers lack them: the record then shows the doc's choices and no prompt."""

    def __new__(cls, values, candidate: str | None = None, prompt: str | None = None, skipped: str | None = None):
        obj = super().__new__(cls, values)
        obj.candidate, obj.prompt, obj.skipped = candidate, prompt, skipped
        return obj

    def __reduce__(self):
        return (Scored, (tuple(self), self.candidate, self.prompt, self.skipped))


def _unwrapped(result):
    return getattr(result, "text", result)  # an lmms-eval GenerationResult that was not unwrapped


def score_item(doc: dict, results: Sequence[Any], convention: str = "loss", gold: int = 0) -> dict:
    """The per-item record of one scored (or skipped) item; `results` has one entry per candidate.

    M3-Bench docs put the correct candidate first (`gold=0`); other tasks' docs may lack the M3-Bench columns.
    `candidates` are the candidate strings as scored, aligned with `scores`; `prompt` the model's input text.
    """
    unwrapped = [_unwrapped(r) for r in results]
    given = [getattr(r, "candidate", None) for r in unwrapped]
    choices = list(doc["choices"]) if doc.get("choices") is not None else None
    record = {
        "id": doc.get("id", doc.get("doc_id")), "subset": doc.get("subset"), "category": doc.get("category"),
        "ability": doc.get("ability"), "p": None, "scores": None, "correct": False, "skipped": None,
        "n_candidates": len(doc.get("choices", results)), "gold": gold, "convention": convention,
        "candidates": given if given and None not in given and not doc.get("skipped") else choices,
        "prompt": getattr(unwrapped[0], "prompt", None) if unwrapped else None,
    }
    if doc.get("skipped"):
        record["skipped"] = SKIP_TOO_MANY_IMAGES
        return record
    if len(results) != record["n_candidates"]:
        raise ValueError(f"item {record['id']!r}: {len(results)} results for {record['n_candidates']} candidates")
    record["skipped"] = next((r.skipped for r in unwrapped if getattr(r, "skipped", None)), None)
    if record["skipped"]:
        return record
    scores = S.to_scores(results, convention)
    record["scores"] = scores
    if not all(math.isfinite(s) for s in scores):
        record["skipped"] = SKIP_NON_FINITE
        return record
    record["p"] = S.item_sds(scores, gold)
    record["correct"] = S.item_correct(scores, gold)
    return record


def compact(record: dict, metric: str) -> dict:
    """What the aggregation of `metric` (`sds` or `acc`) needs of a record: the item's place and its value
    (the per-item log shows the full record once, under `sds`)."""
    value = {"sds": "p", "acc": "correct"}[metric]
    return {k: record[k] for k in ("id", "subset", "category", value)}


def sds_values(records: Sequence[dict]) -> list[float]:
    return [r["p"] for r in records if r["p"] is not None]


def acc_values(records: Sequence[dict]) -> list[float]:
    return [float(bool(r["correct"])) for r in records]


class Score(float):
    """A leaf task's score that remembers which (subset, category) it measures.

    lmms-eval hands a group's aggregation only the leaf values (not their task names), so the value carries
    its place in M3-Bench; that is how groups average subsets instead of leaf tasks. Serializes as a float.
    """

    parts: tuple[tuple[str, str], ...]

    def __new__(cls, value: float, parts):
        obj = super().__new__(cls, value)
        obj.parts = tuple(parts)
        return obj


def leaf_score(records: Sequence[dict], values: Sequence[float], statistic) -> Score:
    parts = sorted({(r.get("subset") or "", r.get("category") or "") for r in records})
    return Score(statistic(values), parts)


def _by_part(values: Sequence[float]) -> dict[tuple[str, int], float] | None:
    """Tagged leaf values keyed (subset, leaf number), for `sds.balanced`; None when a value is not tagged with a
    single subset (another suite's task)."""
    parts: dict[tuple[str, int], float] = {}
    for v in values:
        subsets = {s for s, _ in getattr(v, "parts", None) or ()}
        if len(subsets) != 1:
            return None
        parts[(subsets.pop(), len(parts))] = float(v)
    return parts


def group_mean(values: Sequence[float], sizes: Sequence[int], weight_by_size: bool = False) -> float:
    """A group's score: unweighted mean over subsets of the unweighted mean over each subset's categories
    (a category with no scored item has no score: it is left out).

    Values without M3-Bench tags (other tasks in a user's group) fall back to lmms-eval's plain mean.
    """
    parts = _by_part(values)
    if parts is None:
        weights = sizes if weight_by_size else [1] * len(values)
        return sum(float(v) * w for v, w in zip(values, weights)) / sum(weights)
    return S.balanced(parts)


def group_stderr(stderrs: Sequence[float]) -> float | None:
    """Standard error of `group_mean` from the leaves' standard errors; None when they carry no tags."""
    parts = _by_part(stderrs)
    return None if parts is None else S.balanced_stderr(parts)
