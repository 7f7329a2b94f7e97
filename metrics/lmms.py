"""SDS for lmms-eval: per-doc scoring, aggregations (usable by name from any task YAML) and bootstrap stderrs.

Any wrapper that follows lmms-eval's loglikelihood convention (per choice `(mean NLL, is_greedy)`, stringified or
not) works: `process_results` turns the per-choice losses into an item record, SDS = softmax over -loss.

Names registered with lmms-eval's aggregation registry (see `register`): `radar_sds`, `radar_acc`, `radar_count`.
A task YAML of anyone's can use them with `process_results: !function radar_tasks.metrics.lmms.process_results`.
Nothing here changes lmms-eval itself; that happens in one place, `radar_tasks.tasks.plugin`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from radar_tasks.metrics import items as I
from radar_tasks.metrics import sds as S

# lmms-eval asks for 100000 bootstrap resamples by default: far more than a stderr needs, and slow on 60 tasks.
MAX_BOOTSTRAP_ITERS = int(os.environ.get("RADAR_BOOTSTRAP_ITERS", "1000"))


def _warn_non_finite(doc: dict, record: dict) -> None:
    if record["skipped"] == I.SKIP_NON_FINITE:
        from loguru import logger

        logger.warning(f"{doc.get('source_file', 'doc')}: item {record['id']!r}: model returned a non-finite score "
                       f"{record['scores']}; counted as skipped (wrong in acc, out of SDS)")


def process_results(doc: dict, results: Sequence[Any], convention: str = "loss") -> dict:
    """lmms-eval `process_results` for an M3-Bench doc (one result per choice, correct choice first)."""
    record = I.score_item(doc, results, convention)
    _warn_non_finite(doc, record)
    acc = I.compact(record, "acc")
    return {
        "sds": record,
        "acc": acc,
        "skipped": int(record["skipped"] is not None),
        "items": 1,
        f"sds_{doc['ability']}": I.compact(record, "sds"),
        f"acc_{doc['ability']}": acc,
        f"items_{doc['ability']}": 1,
    }


def process_results_gold(doc: dict, results: Sequence[Any]) -> dict:
    """`process_results` for anyone's lmms-eval multiple_choice task whose doc holds the correct index in `gold`.

    Returns `sds` and `acc` item records, for the `radar_sds` and `radar_acc` aggregations.
    """
    record = I.score_item(doc, results, "loss", gold=int(doc["gold"]))
    _warn_non_finite(doc, record)
    return {"sds": record, "acc": I.compact(record, "acc")}


def leaf_mean(values_of, records: Sequence[dict]) -> float:
    """A leaf task's score: the mean of `values_of(records)`, tagged with its (subset, category)."""
    return I.leaf_score(records, values_of(records), S.mean)


def leaf_stderr(values_of, records: Sequence[dict], iters: int) -> float:
    """The seeded bootstrap stderr of `leaf_mean`, the same for any order of `records`."""
    # Item order differs between 1 and N processes (lmms-eval gathers rank by rank): sort, so the seeded
    # bootstrap gives the same estimate however the run was sharded.
    records = sorted(records, key=lambda r: (str(r.get("subset")), str(r.get("category")), str(r.get("id"))))
    boot = lambda v: S.bootstrap_stderr(v, iters=min(iters, MAX_BOOTSTRAP_ITERS), seed=0)  # noqa: E731
    return I.leaf_score(records, values_of(records), boot)


def _bootstrappable(values_of):
    """An aggregation over item records, carrying its own bootstrap stderr as `.radar_stderr(records, iters)`
    (lmms-eval computes stderrs only for its built-in aggregations: radar_tasks.tasks.plugin hooks this in)."""

    def aggregate(records: Sequence[dict]) -> float:
        return leaf_mean(values_of, records)

    def stderr(records: Sequence[dict], iters: int) -> float:
        return leaf_stderr(values_of, records, iters)

    aggregate.radar_stderr = stderr
    return aggregate


sds_aggregate = _bootstrappable(I.sds_values)
sds_aggregate.__name__ = "sds_aggregate"
acc_aggregate = _bootstrappable(I.acc_values)
acc_aggregate.__name__ = "acc_aggregate"


def count_aggregate(values: Sequence[int]) -> int:
    return int(sum(values))


def group_mean(metrics: Sequence[float], sizes: Sequence[int], weight_by_size: bool = False) -> float:
    """Group aggregation (`aggregate_metric_list`): unweighted mean over M3-Bench subsets."""
    return I.group_mean(metrics, sizes, weight_by_size)


def group_sum(metrics: Sequence[float], sizes: Sequence[int], weight_by_size: bool = False) -> int:
    return int(sum(metrics))


AGGREGATIONS = {"radar_sds": sds_aggregate, "radar_acc": acc_aggregate, "radar_count": count_aggregate}


def register() -> None:
    """Register the aggregations by name with lmms-eval (idempotent: its registry refuses a name twice)."""
    from lmms_eval.api import registry

    for name, fn in AGGREGATIONS.items():
        if name not in registry.AGGREGATION_REGISTRY:
            registry.register_aggregation(name)(fn)
