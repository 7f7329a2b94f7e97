"""The M3-Bench metric catalogue: every metric our tasks report, one entry each (pure: no lmms-eval import).

An entry says what the metric is of one item, how a leaf task aggregates it, how a group does, its standard error
and whether higher is better. The rest is derived from METRICS:
- the template's `metric_list` and the groups' `aggregate_metric_list` (`task_yamls/generate_tasks.py`);
- what `process_results` returns per item (`items.metric_values`);
- the leaf aggregations `metrics/lmms.py` defines and registers with lmms-eval, and those of the exported task
  folder with its `*_se` metrics (`radar_tasks.tasks.exported_hooks`);
- the table of docs/metrics.md.
Adding a metric is one entry (a mean reads a field of the item record: `items.score_item` writes the record).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from radar_tasks import taxonomy


@dataclass(frozen=True)
class Aggregation:
    """How a metric's per-item values become a leaf task's value, and leaf values a group's: the functions of
    `metrics/lmms.py` (and of the exported utils.py) that do it, by name, and the rule in words (docs/metrics.md);
    `{metric}` stands for the metric's name."""

    leaf: str  # the leaf aggregation (the template's `metric_list`)
    leaf_rule: str
    group: str  # the group aggregation (the groups' `aggregate_metric_list`)
    group_rule: str
    registered: str  # the leaf aggregation's name in lmms-eval's aggregation registry, for anyone's task YAML
    stderr: str | None  # how `<metric>_stderr` is computed (None: there is none, lmms-eval reports "N/A")


MEAN = Aggregation(
    leaf="{metric}_aggregate",
    leaf_rule="mean over the items that have a value",
    group="group_mean",
    group_rule="unweighted mean over subsets of the unweighted mean over each subset's categories",
    registered="radar_{metric}",
    stderr="seeded bootstrap of the leaf mean (none for one value); groups: stratified bootstrap, "
    "`sqrt(sum se_i^2) / n` per level (a one-value category: `se_i` 0)",
)
COUNT = Aggregation(
    leaf="count_aggregate",
    leaf_rule="sum over the items",
    group="group_sum",
    group_rule="sum over the leaves",
    registered="radar_count",
    stderr=None,
)


@dataclass(frozen=True)
class Metric:
    """One metric: the results key `<name>,none` of every leaf and group (and `<name>_<ability>,none` where the
    entry covers items of that ability, when `by_ability`)."""

    name: str
    aggregation: Aggregation
    # MEAN: the field of the item record averaged (None: the item is left out); COUNT: the item's count
    value: str | Callable[[dict], int]
    per_item: str  # what `value` is, in words (docs/metrics.md)
    higher_is_better: bool
    by_ability: bool = False

    @property
    def leaf_aggregation(self) -> str:
        return self.aggregation.leaf.format(metric=self.name)

    @property
    def registered_aggregation(self) -> str:
        return self.aggregation.registered.format(metric=self.name)

    @property
    def group_aggregation(self) -> str:
        return self.aggregation.group


METRICS = (
    Metric(
        "sds",
        MEAN,
        value="p",
        per_item="`p`: the softmax probability of the correct candidate (none when the item was not scored)",
        higher_is_better=True,
        by_ability=True,
    ),
    Metric(
        "acc",
        MEAN,
        value="correct",
        per_item="`correct`: 1 when the correct candidate scores best (ties count), else 0 (also when not scored)",
        higher_is_better=True,
        by_ability=True,
    ),
    Metric(
        "bpb",
        MEAN,
        value="bpb",
        per_item="`bpb`: the correct continuation's summed NLL in nats / (ln 2 x its UTF-8 bytes as scored), from "
        "`nll_sum` and `bytes` (none when not scored, or when the wrapper gives no summed NLL: radar_hf only)",
        higher_is_better=False,
        by_ability=True,
    ),
    Metric(
        "brier",
        MEAN,
        value="brier",
        per_item="`brier`: sum over the candidates taking part of (p_k - y_k)^2, p the softmax of `sds`, y one-hot "
        "on the correct one (none when not scored)",
        higher_is_better=False,
        by_ability=True,
    ),
    Metric(
        "skipped",
        COUNT,
        value=lambda record: int(record["skipped"] is not None),
        per_item="1 when the item was not scored (`skipped` says why), else 0",
        higher_is_better=False,
    ),
    Metric("items", COUNT, value=lambda record: 1, per_item="1", higher_is_better=True, by_ability=True),
)
# The metric whose per-item value is the whole item record (the per-item log shows it once; its aggregation reads
# its field only): every other key holds what its aggregation needs (`items.compact`).
RECORD_METRIC = "sds"


def by_name(name: str) -> Metric:
    for metric in METRICS:
        if metric.name == name:
            return metric
    raise KeyError(f"no metric {name!r} in the catalogue")


def leaf_metrics(abilities=taxonomy.ABILITIES) -> list[tuple[str, Metric]]:
    """(results key, entry) of every metric a leaf reports, in order: the metrics, then per ability its split."""
    return [(m.name, m) for m in METRICS] + [
        (f"{m.name}_{ability}", m) for ability in abilities for m in METRICS if m.by_ability
    ]
