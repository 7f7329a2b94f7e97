"""SDS for lmms-eval: per-doc scoring, aggregations (usable by name from any task YAML) and bootstrap stderrs.

Any wrapper that follows lmms-eval's loglikelihood convention (per choice `(mean NLL, is_greedy)`, stringified or
not) works: `process_results` turns the per-choice losses into an item record, SDS = softmax over -loss.

Names registered with lmms-eval's aggregation registry (see `register`): `radar_sds`, `radar_acc`, `radar_count`.
A task YAML of anyone's can use them with `process_results: !function radar_tasks.metrics.lmms.process_results`.
Nothing here changes lmms-eval itself; that happens in one place, `radar_tasks.tasks.plugin`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from radar_tasks.metrics import items

MAX_BOOTSTRAP_ITERS = items.MAX_BOOTSTRAP_ITERS  # $RADAR_BOOTSTRAP_ITERS, else 1000 (items.py)


def _warn_non_finite(doc: dict, record: dict) -> None:
    message = items.non_finite_warning(doc, record)
    if message:
        from loguru import logger

        logger.warning(message)


def process_results(doc: dict, results: Sequence[Any], convention: str = "loss") -> dict:
    """lmms-eval `process_results` for an M3-Bench doc (one result per choice, correct choice first)."""
    record = items.score_item(doc, results, convention)
    _warn_non_finite(doc, record)
    return items.metric_values(doc, record)


def process_results_gold(doc: dict, results: Sequence[Any]) -> dict:
    """`process_results` for anyone's lmms-eval multiple_choice task whose doc holds the correct index in `gold`.

    Returns `sds` and `acc` item records, for the `radar_sds` and `radar_acc` aggregations.
    """
    record = items.score_item(doc, results, "loss", gold=int(doc["gold"]))
    _warn_non_finite(doc, record)
    return {"sds": record, "acc": items.compact(record, "acc")}


def leaf_stderr(values_of, records: Sequence[dict], iters: int) -> float:
    """The seeded bootstrap stderr of `items.leaf_mean`, the same for any order of `records` (`items.leaf_stderr`),
    with at most MAX_BOOTSTRAP_ITERS resamples."""
    return items.leaf_stderr(records, values_of, min(iters, MAX_BOOTSTRAP_ITERS))


def _bootstrappable(values_of):
    """An aggregation over item records, carrying its own bootstrap stderr as `.radar_stderr(records, iters)`
    (lmms-eval computes stderrs only for its built-in aggregations: radar_tasks.tasks.plugin hooks this in)."""

    def aggregate(records: Sequence[dict]) -> float:
        return items.leaf_mean(records, values_of)

    def stderr(records: Sequence[dict], iters: int) -> float:
        return leaf_stderr(values_of, records, iters)

    aggregate.radar_stderr = stderr
    return aggregate


sds_aggregate = _bootstrappable(items.sds_values)
sds_aggregate.__name__ = "sds_aggregate"
acc_aggregate = _bootstrappable(items.acc_values)
acc_aggregate.__name__ = "acc_aggregate"


def group_mean(metrics: Sequence[float], sizes: Sequence[int], weight_by_size: bool = False) -> float:
    """Group aggregation (`aggregate_metric_list`): unweighted mean over M3-Bench subsets."""
    return items.group_mean(metrics, sizes, weight_by_size)


count_aggregate = items.count_aggregate  # the `radar_count` aggregation
group_sum = items.group_sum


AGGREGATIONS = {"radar_sds": sds_aggregate, "radar_acc": acc_aggregate, "radar_count": count_aggregate}


def register() -> None:
    """Register the aggregations by name with lmms-eval (idempotent: its registry refuses a name twice)."""
    from lmms_eval.api import registry

    for name, fn in AGGREGATIONS.items():
        if name not in registry.AGGREGATION_REGISTRY:
            registry.register_aggregation(name)(fn)
