"""Per-item records and their aggregation into M3-Bench scores (pure: no lmms-eval import).

An item record (what `--log_samples` shows under `sds`) identifies the item itself, because lmms-eval 0.7.3 drops
the doc from the logs. Aggregation follows the reference: SDS = mean p over scored items; acc counts skipped and
unscorable items as wrong; a subset's score is the unweighted mean of its categories, and a group's score the
unweighted mean of its subsets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from radar_tasks import taxonomy
from radar_tasks.metrics import catalogue, sds

SKIP_TOO_MANY_IMAGES = f"more than {taxonomy.MAX_IMAGES} images"
SKIP_NON_FINITE = "non-finite model score"
# lmms-eval asks for 100000 bootstrap resamples by default: far more than a stderr needs, and slow on 60 tasks.
MAX_BOOTSTRAP_ITERS = int(os.environ.get("RADAR_BOOTSTRAP_ITERS", "1000"))
# What every per-item value of a mean metric holds besides its field: the item's place (lmms-eval drops the doc
# from the logs, and groups need the subset and category).
PLACE = ("id", "subset", "category")


class CandidateResult(tuple):
    """One candidate's result as `radar_hf` returns it: lmms-eval's `(loss, is_greedy)` tuple (it unpacks as one),
    carrying what the item record shows besides: `candidate` (the text scored, without the joiner), `prompt` (the
    text given to the model, image markers kept; on the first candidate of an item) and `skipped` (why the item
    was not scored) and `dropped` (a reference quirk left this candidate out: it holds no probability and does not
    count towards the item's chance level); `nll_sum` (the continuation's summed NLL in nats, whatever the score
    sign) and `bytes` (the UTF-8 bytes of the continuation as scored: the joiner and the candidate), which give its
    bits per byte. Results of other wrappers lack them: the record then shows the doc's choices, no prompt and no
    bits per byte."""

    def __new__(
        cls,
        values,
        candidate: str | None = None,
        prompt: str | None = None,
        skipped: str | None = None,
        dropped: bool = False,
        nll_sum: float | None = None,
        n_bytes: int | None = None,
    ):
        obj = super().__new__(cls, values)
        obj.candidate, obj.prompt, obj.skipped, obj.dropped = candidate, prompt, skipped, dropped
        obj.nll_sum, obj.bytes = nll_sum, n_bytes
        return obj

    def __reduce__(self):
        return (
            CandidateResult,
            (tuple(self), self.candidate, self.prompt, self.skipped, self.dropped, self.nll_sum, self.bytes),
        )


def score_item(doc: dict, results: Sequence[Any], convention: str = "loss", gold: int = 0) -> dict:
    """The per-item record of one scored (or skipped) item; `results` has one entry per candidate.

    M3-Bench docs put the correct candidate first (`gold=0`); other tasks' docs may lack the M3-Bench columns.
    `candidates` are the candidate strings as scored, aligned with `scores`; `prompt` the model's input text.
    `brier` is over the same softmax as `p`; `nll_sum` and `bytes` (of the correct continuation as scored) and their
    `bpb` come only with results that carry them (`CandidateResult` of radar_hf), whatever the score convention.
    """
    unwrapped = [sds.unwrap(r) for r in results]
    given = [getattr(r, "candidate", None) for r in unwrapped]
    choices = list(doc["choices"]) if doc.get("choices") is not None else None
    record = {
        "id": doc.get("id", doc.get("doc_id")),
        "subset": doc.get("subset"),
        "category": doc.get("category"),
        "ability": doc.get("ability"),
        "p": None,
        "scores": None,
        "correct": False,
        "skipped": None,
        # K of the chance level 1/K: the candidates that took part (a quirk may leave some out)
        "n_candidates": sum(not getattr(r, "dropped", False) for r in unwrapped) if unwrapped else len(choices or ()),
        "gold": gold,
        "convention": convention,
        "candidates": given if given and None not in given and not doc.get("skipped") else choices,
        "prompt": getattr(unwrapped[0], "prompt", None) if unwrapped else None,
        "brier": None,
        "nll_sum": None,
        "bytes": None,
        "bpb": None,
    }
    if doc.get("skipped"):
        record["skipped"] = SKIP_TOO_MANY_IMAGES
        return record
    expected = len(choices) if choices is not None else len(results)
    if len(results) != expected:
        raise ValueError(f"item {record['id']!r}: {len(results)} results for {expected} candidates")
    record["skipped"] = next((r.skipped for r in unwrapped if getattr(r, "skipped", None)), None)
    if record["skipped"]:
        return record
    scores = sds.to_scores(unwrapped, convention)
    record["scores"] = scores
    if not all(math.isfinite(s) for s in scores):
        record["skipped"] = SKIP_NON_FINITE
        return record
    record["p"] = sds.item_sds(scores, gold)
    record["correct"] = sds.item_correct(scores, gold)
    record["brier"] = sds.item_brier(scores, gold, [not getattr(r, "dropped", False) for r in unwrapped])
    record["nll_sum"] = getattr(unwrapped[gold], "nll_sum", None)
    record["bytes"] = getattr(unwrapped[gold], "bytes", None)
    record["bpb"] = sds.bits_per_byte(record["nll_sum"], record["bytes"])
    return record


def compact(record: dict, metric: str) -> dict:
    """What the aggregation of a mean `metric` (`sds`, `acc`, ...) needs of a record: the item's place and the
    field the metric averages (the per-item log shows the full record once, under `catalogue.RECORD_METRIC`)."""
    field = catalogue.by_name(metric).value
    return {**{k: record[k] for k in PLACE}, field: record.get(field)}  # a hand-made record may lack a new field


def item_value(metric: catalogue.Metric, record: dict):
    """`metric`'s per-item value: what its leaf aggregation reads of the record (a mean), or the item's count."""
    return compact(record, metric.name) if metric.aggregation is catalogue.MEAN else metric.value(record)


def metric_values(doc: dict, record: dict) -> dict:
    """The per-doc values of every catalogue metric (what `process_results` returns): the item record under
    `catalogue.RECORD_METRIC`, what each other metric's aggregation needs of it under the other keys, the split of
    the doc's ability included."""
    return {
        key: record if key == catalogue.RECORD_METRIC else item_value(metric, record)
        for key, metric in catalogue.leaf_metrics([doc["ability"]])
    }


def non_finite_warning(doc: dict, record: dict) -> str | None:
    """The line logged for an item whose model score is NaN/inf (None for any other item)."""
    if record["skipped"] != SKIP_NON_FINITE:
        return None
    return (
        f"{doc.get('source_file', 'doc')}: item {record['id']!r}: model returned a non-finite score "
        f"{record['scores']}; counted as skipped (wrong in acc, out of SDS)"
    )


NO_BPB = (
    "bpb: the wrapper returned only a mean NLL per candidate (no summed NLL, no token count), so the correct "
    "answer's bits per byte are unknown and `bpb` is left out (N/A); radar_hf returns both"
)


def bpb_missing(record: dict) -> str | None:
    """Why a scored item has no `bpb` (its wrapper gave no summed NLL), or None (logged once per process)."""
    return NO_BPB if record["p"] is not None and record.get("nll_sum") is None else None


def mean_values(records: Sequence[dict], field: str) -> list[float]:
    """The values a leaf's mean is over: each record's `field`, where it has one (`p` is None for an item not
    scored, which SDS leaves out; `correct` is False for it: acc counts it wrong)."""
    return [float(r[field]) for r in records if r[field] is not None]


class LeafScore(float):
    """A leaf task's score that remembers which (subset, category) it measures, and over how many values (`n`).

    lmms-eval hands a group's aggregation only the leaf values (not their task names), so the value carries
    its place in M3-Bench; that is how groups average subsets instead of leaf tasks. `n` tells a group's stderr a
    category of one scored value (no stderr of its own, a fixed mean) from one of none (no score). Serializes as
    a float.
    """

    parts: tuple[tuple[str, str], ...]
    n: int | None

    def __new__(cls, value: float, parts, n: int | None = None):
        obj = super().__new__(cls, value)
        obj.parts = tuple(parts)
        obj.n = n
        return obj


def leaf_score(records: Sequence[dict], values: Sequence[float], statistic) -> LeafScore:
    parts = sorted({(r.get("subset") or "", r.get("category") or "") for r in records})
    return LeafScore(statistic(values), parts, len(values))


def leaf_mean(records: Sequence[dict], values_of) -> LeafScore:
    """A leaf task's score: the mean of `values_of(records)`, tagged with its (subset, category)."""
    return leaf_score(records, values_of(records), sds.mean)


def leaf_stderr(records: Sequence[dict], values_of, iters: int) -> LeafScore:
    """Seeded bootstrap standard error of a leaf's mean of `values_of(records)`, tagged like its score.

    Item order differs between 1 and N processes (lmms-eval gathers rank by rank): the records are sorted first, so
    the estimate is the same however the run was sharded.
    """
    records = sorted(records, key=lambda r: (str(r.get("subset")), str(r.get("category")), str(r.get("id"))))
    return leaf_score(records, values_of(records), lambda v: sds.bootstrap_stderr(v, iters=iters, seed=0))


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


def count_aggregate(values: Sequence[int]) -> int:
    """A count metric of a leaf (`items`, `skipped`): the sum over its items."""
    return int(sum(values))


def group_sum(metrics: Sequence[float], sizes: Sequence[int], weight_by_size: bool = False) -> int:
    """A count metric of a group: the sum over its leaves, whatever the weighting."""
    return int(sum(metrics))


def group_mean(values: Sequence[float], sizes: Sequence[int], weight_by_size: bool = False) -> float:
    """A group's score: unweighted mean over subsets of the unweighted mean over each subset's categories
    (a category with no scored item has no score: it is left out).

    Values without M3-Bench tags (other tasks in a user's group) fall back to lmms-eval's plain mean.
    """
    parts = _by_part(values)
    if parts is None:
        weights = sizes if weight_by_size else [1] * len(values)
        return sum(float(v) * w for v, w in zip(values, weights)) / sum(weights)
    return sds.balanced(parts)


def group_stderr(stderrs: Sequence[float]) -> float | None:
    """Standard error of `group_mean` from the leaves' tagged bootstrap standard errors; None when they carry no
    tags (another suite's tasks).

    A group's stderr is that of a stratified bootstrap: items resampled within each category, the balanced mean
    recomputed. Its variance is each category's bootstrap variance times its weight squared in the balanced mean
    (`sds.balanced_stderr`), which is computed here from the leaves' stderrs (no Monte Carlo noise between
    categories). A category of one value (`n` 1) has no stderr of its own but the same mean in every resample: it
    counts with 0, and with its weight; a category of none (no score) is left out, as in the mean. NaN when a
    category of two or more values has no stderr (stderrs turned off) or when no category has two values. Leaves
    whose count is unknown (`n` None) count with their stderr when it is finite, else are left out.
    """
    if _by_part(stderrs) is None:
        return None
    parts: dict[tuple[str, int], float] = {}
    counts = [getattr(se, "n", None) for se in stderrs]
    for i, (se, n) in enumerate(zip(stderrs, counts)):
        subset = next(iter(se.parts))[0]
        if n is None:
            if math.isfinite(se):
                parts[(subset, i)] = float(se)
        elif n == 1:
            parts[(subset, i)] = 0.0
        elif n >= 2:
            if not math.isfinite(se):
                return math.nan
            parts[(subset, i)] = float(se)
    if all(n is not None and n < 2 for n in counts):
        return math.nan
    return sds.balanced_stderr(parts)
