"""SDS for lmms-eval: per-doc scoring, aggregations (usable by name from any task YAML) and bootstrap stderrs.

Any wrapper that follows lmms-eval's loglikelihood convention (per choice `(mean NLL, is_greedy)`, stringified or
not) works: `process_results` turns the per-choice losses into an item record, SDS = softmax over -loss.

The aggregations are the metric catalogue's (`radar_tasks.metrics.catalogue`): one leaf aggregation per mean metric
(`sds_aggregate`, `acc_aggregate`, ...) and `count_aggregate` for the counts, attributes of this module under those
names (the template's `metric_list` names them), and the group aggregations `group_mean` and `group_sum`. Each leaf
aggregation is also registered with lmms-eval's aggregation registry (see `register`) under its catalogue name
(`radar_sds`, `radar_acc`, `radar_bpb`, `radar_brier`, `radar_count`): a task YAML of anyone's can use them with
`process_results: !function radar_tasks.metrics.lmms.process_results`.
Nothing here changes lmms-eval itself; that happens in one place, `radar_tasks.tasks.plugin`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from radar_tasks.metrics import catalogue, items

_said: set[str] = set()  # what was logged once per process


def _warn_once(what: str, message: str) -> None:
    if what not in _said:
        from loguru import logger

        _said.add(what)
        logger.warning(message)


def _warn_non_finite(doc: dict, record: dict) -> None:
    message = items.non_finite_warning(doc, record)
    if message:
        from loguru import logger

        logger.warning(message)


def process_results(doc: dict, results: Sequence[Any], convention: str = "loss") -> dict:
    """lmms-eval `process_results` for an M3-Bench doc (one result per choice, correct choice first)."""
    record = items.score_item(doc, results, convention)
    _warn_non_finite(doc, record)
    reason = items.bpb_missing(record)  # another wrapper's plain results: bpb left out, said once
    if reason:
        _warn_once("bpb", reason)
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
    with at most `items.MAX_BOOTSTRAP_ITERS` resamples ($RADAR_BOOTSTRAP_ITERS, else 1000)."""
    return items.leaf_stderr(records, values_of, min(iters, items.MAX_BOOTSTRAP_ITERS))


def _bootstrappable(values_of):
    """An aggregation over item records, carrying its own bootstrap stderr as `.radar_stderr(records, iters)`
    (lmms-eval computes stderrs only for its built-in aggregations: radar_tasks.tasks.plugin hooks this in)."""

    def aggregate(records: Sequence[dict]) -> float:
        return items.leaf_mean(records, values_of)

    def stderr(records: Sequence[dict], iters: int) -> float:
        return leaf_stderr(values_of, records, iters)

    aggregate.radar_stderr = stderr
    return aggregate


def _leaf_aggregation(metric: catalogue.Metric):
    if metric.aggregation is catalogue.COUNT:
        return items.count_aggregate
    aggregate = _bootstrappable(functools.partial(items.mean_values, field=metric.value))
    aggregate.__name__ = metric.leaf_aggregation
    return aggregate


# leaf aggregation name -> function, one per catalogue entry (the split metrics share their metric's)
LEAF_AGGREGATIONS = {m.leaf_aggregation: _leaf_aggregation(m) for m in catalogue.METRICS}
globals().update(LEAF_AGGREGATIONS)  # `sds_aggregate`, `acc_aggregate`, `count_aggregate`: the names YAMLs use

group_mean = items.group_mean  # a group's score: unweighted mean over M3-Bench subsets
group_sum = items.group_sum  # a group's count


def group_stderrs(results: dict, leaves_of: Mapping[str, Sequence[str]]) -> None:
    """Write every M3-Bench group's `<metric>_stderr` into lmms-eval's `results` (task -> {"<metric>,<filter>": ...}),
    from its leaves' (`leaves_of`: group -> leaf task names, lmms-eval's task_aggregation_list): `items.group_stderr`,
    "N/A" where there is none. lmms-eval itself writes "N/A" for a group as soon as one leaf has no stderr, which a
    leaf of one item never has (it computes none for one value); here such a leaf counts with its fixed mean.
    Groups of other tasks, and metrics that are not means of the catalogue, are left as lmms-eval wrote them."""
    single = []
    for group, leaves in leaves_of.items():
        entry = results.get(group)
        if not isinstance(entry, dict):
            continue
        for key in list(entry):
            metric, sep, filt = key.partition(",")
            stderr_key = f"{metric}_stderr,{filt}"
            if not sep or "_stderr" in metric or stderr_key not in entry:
                continue
            values = [results[leaf][key] for leaf in leaves if key in results.get(leaf, {})]
            if not values or not all(isinstance(v, items.LeafScore) for v in values):
                continue
            ses, ones = [], []
            for leaf in leaves:
                if key not in results.get(leaf, {}):
                    continue
                value, se = results[leaf][key], results[leaf].get(stderr_key)
                if not isinstance(se, items.LeafScore):  # lmms-eval's "N/A": one item, or stderrs turned off
                    se = items.LeafScore(math.nan, value.parts, value.n)
                    ones += [leaf] if value.n == 1 else []
                ses.append(se)
            combined = items.group_stderr(ses)
            if combined is None or not math.isfinite(combined):
                entry[stderr_key] = "N/A"
            else:
                entry[stderr_key] = combined
                single += ones
    if single:
        names = sorted(set(single))
        _warn_once(
            "single",
            f"{len(names)} leaf task(s) hold a single scored item ({', '.join(names[:4])}"
            f"{' ...' if len(names) > 4 else ''}): a leaf of one item has no bootstrap stderr (N/A); its groups' "
            "stderrs count its mean as fixed (docs/metrics.md)",
        )


# lmms-eval registry name -> leaf aggregation
AGGREGATIONS = {m.registered_aggregation: LEAF_AGGREGATIONS[m.leaf_aggregation] for m in catalogue.METRICS}


def register() -> None:
    """Register the aggregations by name with lmms-eval (idempotent: its registry refuses a name twice)."""
    from lmms_eval.api import registry

    for name, fn in AGGREGATIONS.items():
        if name not in registry.AGGREGATION_REGISTRY:
            registry.register_aggregation(name)(fn)
