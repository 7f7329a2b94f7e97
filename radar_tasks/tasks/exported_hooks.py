"""The hooks of the exported lmms-eval task folder; `doc_to_visual`, `doc_to_text` and `doc_to_choice` are also our
own task folder's (`radar_tasks.tasks.hooks`).

The export (`radar_tasks.tasks.export`) writes this module, with the package modules it imports inlined, as the
exported folder's utils.py: one copy of the taxonomy, the prompts, the image decoding and the SDS math, which stock
lmms-eval runs without the package. Its docs are the rows of the exported dataset (`radar_tasks.data.export`): the
normalized records, the images' file bytes embedded.

Two things the package does by patching lmms-eval 0.7.3 (`radar_tasks.tasks.plugin`) are done here with
lmms-eval's own extension points:
- bootstrap standard errors: lmms-eval computes stderrs only for its built-in aggregations (a custom one gets
  "N/A"), so every metric `m` that aggregates item records (a mean of the metric catalogue) also has a metric
  `m` + SE_SUFFIX whose aggregation is the bootstrap standard error of `m` (`sds_se`, `acc_se`,
  `sds_perception_se`, ...);
- group scores and their stderrs: a group aggregation sees only its leaves' values, so each leaf value carries its
  (subset, category) and its number of values (`items.LeafScore`); groups average subsets unweighted
  (`items.group_mean`) and combine the leaves' `*_se` values into the standard error of that mean (`group_se`,
  a leaf of one value counting as fixed: `items.group_stderr`). Group `*_stderr` keys stay "N/A".
"""

from __future__ import annotations

import functools
import math

import datasets
from loguru import logger

from radar_tasks import prompts, taxonomy
from radar_tasks.data import images as images_io
from radar_tasks.data import lite
from radar_tasks.metrics import catalogue, items

SE_SUFFIX = "_se"
GROUP_SE = "group_se"  # the group aggregation of the `*_se` metrics
# A record's images in the exported dataset: `images` holds the embedded files (datasets.Image), images.IMAGE_FILES
# their paths under the release root. process_docs moves the files to images.IMAGE_DATA and the paths to `images`:
# lmms-eval drops Image columns from the docs it builds prompts from (and logs), and the prompt needs the image count.
_MEANS = [m for m in catalogue.METRICS if m.aggregation is catalogue.MEAN]
# What the `*_se` aggregations read of an item record: its place and the field of every mean (`items.mean_values`)
SE_FIELDS = items.PLACE + tuple(m.value for m in _MEANS)
_LOGGED: set[str] = set()  # the warnings given once


# ---------------------------------------------------------------------------------------------- per-doc hooks
def process_docs(dataset):
    """The exported rows as the package's records: `images` the file names, `image_data` the files' bytes, which
    `doc_to_visual` decodes exactly as the package decodes the files (datasets' own decoding would also apply EXIF
    orientation)."""
    dataset = dataset.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    return dataset.rename_columns({"images": images_io.IMAGE_DATA, images_io.IMAGE_FILES: "images"})


def select_docs(docs, row: dict):
    """The docs a leaf scores, by its task-index row: all of its category's, or the sample the row pins (a lite
    task, `radar_tasks.data.lite`; drawn again from the data present, with a warning, when pinned ids are
    missing). None when nothing is left (the task then reports no score)."""
    if row.get("ids") is None:
        return docs
    positions, warning = lite.select(docs["id"], row)
    if warning:
        logger.warning(f"{taxonomy.task_name(row['subset'], row['category'])}{lite.SUFFIX}: {warning}")
    return docs.select(positions) if positions else None


def process_selected_docs(dataset, row: dict):
    """`process_docs` of an exported leaf whose task-index row selects docs (`select_docs`); with nothing left, its
    first doc marked absent stands in (as the package's `absent_category`: no score, groups average the rest)."""
    docs = process_docs(dataset)
    selected = select_docs(docs, row)
    return selected if selected is not None else docs.select([0]).map(lambda _: {"absent": True})


def selecting(row: dict):
    """The `process_docs` of one such leaf: lmms-eval passes `process_docs` only the docs, so the export binds
    one per leaf, with its row."""
    return functools.partial(process_selected_docs, row=row)


def doc_to_visual(doc: dict) -> list:
    """The item's images, RGB: from the embedded files of an exported record, else from the record's paths."""
    if doc["skipped"]:
        return []
    return [images_io.load_rgb(source) for source in images_io.sources(doc)]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    # `image_markers` (the template YAML's per-model kwargs): radar_hf places images at our markers
    return prompts.task_text(doc, image_markers=bool((lmms_eval_specific_kwargs or {}).get("image_markers")))


def doc_to_choice(doc: dict) -> list[str]:
    # A skipped item is never scored: one candidate keeps its (text-only) request as cheap as possible.
    return list(doc["choices"][:1] if doc["skipped"] else doc["choices"])


def process_results(doc: dict, results) -> dict:
    """The package's metric values of the item, plus the same item under every `*_se` metric."""
    if doc.get("absent"):  # stand-in for a missing category file: no metric at all, so no score anywhere
        return {}
    record = items.score_item(doc, results, "loss")
    message = items.non_finite_warning(doc, record)
    if message:
        logger.warning(message)
    reason = items.bpb_missing(record)
    if reason and reason not in _LOGGED:  # once per loaded copy of this file (lmms-eval loads one per reference)
        _LOGGED.add(reason)
        logger.warning(reason)
    values = items.metric_values(doc, record)
    se = {key + SE_SUFFIX: {f: v[f] for f in SE_FIELDS if f in v} for key, v in values.items() if isinstance(v, dict)}
    return {**values, **se}


# ------------------------------------------------------------------------------------------------ aggregations
def mean_aggregation(field: str):
    """The leaf aggregation of a mean of the catalogue: the mean of `field` over the items, tagged with the leaf's
    (subset, category) (`items.leaf_mean`)."""

    def aggregate(records) -> float:
        return items.leaf_mean(records, functools.partial(items.mean_values, field=field))

    return aggregate


def se_aggregation(field: str):
    """The bootstrap standard error of `mean_aggregation(field)`, tagged like it (`items.leaf_stderr`)."""

    def aggregate(records) -> float:
        return items.leaf_stderr(records, functools.partial(items.mean_values, field=field), items.MAX_BOOTSTRAP_ITERS)

    return aggregate


def se_aggregation_name(metric) -> str:
    """`sds` -> `sds_se_aggregate`: the name of the aggregation of `metric`'s `*_se` metric."""
    return catalogue.MEAN.leaf.format(metric=metric.name + SE_SUFFIX)


# A mean's leaf aggregation -> that of its standard error (the export adds a `*_se` metric for every metric
# aggregated by a key of this table)
SE_AGGREGATIONS = {m.leaf_aggregation: se_aggregation_name(m) for m in _MEANS}
# The means' aggregations and their standard errors under the names the exported YAMLs give them (`sds_aggregate`,
# `sds_se_aggregate`, ...), as this file's functions; the counts' are `items.count_aggregate`, `items.group_sum`.
LEAF_AGGREGATIONS = {
    **{m.leaf_aggregation: mean_aggregation(m.value) for m in _MEANS},
    **{se_aggregation_name(m): se_aggregation(m.value) for m in _MEANS},
}
globals().update(LEAF_AGGREGATIONS)


def group_se(stderrs, sizes, weight_by_size: bool = False) -> float:
    """A group's `*_se`: the standard error of its unweighted mean over subsets, from the leaves' `*_se` (the
    package's group `*_stderr`: `items.group_stderr`, NaN where it has none)."""
    se = items.group_stderr(stderrs)
    return math.nan if se is None else se
