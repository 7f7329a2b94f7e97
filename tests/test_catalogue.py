"""The metric catalogue (metrics/catalogue.py) and what is derived from it: the template's metric_list, the groups'
aggregate_metric_list, the per-item values, the aggregations, the table of docs/metrics.md. The expected keys and
directions are typed out here, not read from the catalogue."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from radar_tasks.metrics import catalogue, items, lmms
from radar_tasks.task_yamls import generate_tasks
from radar_tasks.tasks import exported_hooks

# every key a leaf reports, in order, with higher_is_better
LEAF_KEYS = {
    "sds": True,
    "acc": True,
    "bpb": False,
    "brier": False,
    "skipped": False,
    "items": True,
    "sds_perception": True,
    "acc_perception": True,
    "bpb_perception": False,
    "brier_perception": False,
    "items_perception": True,
    "sds_reasoning": True,
    "acc_reasoning": True,
    "bpb_reasoning": False,
    "brier_reasoning": False,
    "items_reasoning": True,
}
FN = "radar_tasks.metrics.lmms."
DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _record(**fields) -> dict:
    return {"id": "q1", "subset": "mmbench", "category": "ocr", "ability": "reasoning", **fields}


def test_the_template_lists_every_metric_with_its_aggregation_and_direction():
    metric_list = generate_tasks.metric_list()
    assert [m["metric"] for m in metric_list] == list(LEAF_KEYS)
    assert {m["metric"]: m["higher_is_better"] for m in metric_list} == LEAF_KEYS
    aggregation = {m["metric"]: str(m["aggregation"]) for m in metric_list}
    for key in LEAF_KEYS:
        base = key.split("_")[0]
        expected = "count_aggregate" if base in ("skipped", "items") else f"{base}_aggregate"
        assert aggregation[key] == FN + expected


def test_groups_aggregate_each_key_with_its_own_metric_under_lmms_evals_substring_match():
    """lmms-eval applies every `aggregate_metric_list` entry whose name is part of a results key, the last one
    winning (docs/UPSTREAM.md, 5e): each key must end with its own metric's group aggregation."""
    entries = generate_tasks.aggregate_metric_list()
    assert [(e["metric"], str(e["aggregation"]), e["weight_by_size"]) for e in entries] == [
        ("sds", FN + "group_mean", False),
        ("acc", FN + "group_mean", False),
        ("bpb", FN + "group_mean", False),
        ("brier", FN + "group_mean", False),
        ("skipped", FN + "group_sum", False),
        ("items", FN + "group_sum", False),
    ]
    for key, metric in catalogue.leaf_metrics():
        matching = [e for e in entries if e["metric"] in key]
        assert matching and str(matching[-1]["aggregation"]) == FN + metric.group_aggregation, key


def test_metric_values_are_the_catalogue_keys_of_the_docs_ability():
    record = _record(p=0.25, correct=False, skipped=None, bpb=1.5, brier=0.8)
    values = items.metric_values({"ability": "reasoning"}, record)
    assert list(values) == [
        "sds",
        "acc",
        "bpb",
        "brier",
        "skipped",
        "items",
        "sds_reasoning",
        "acc_reasoning",
        "bpb_reasoning",
        "brier_reasoning",
        "items_reasoning",
    ]
    assert values["sds"] is record  # the whole record, once
    place = {"id": "q1", "subset": "mmbench", "category": "ocr"}
    assert values["sds_reasoning"] == {**place, "p": 0.25}
    assert values["acc"] == values["acc_reasoning"] == {**place, "correct": False}
    assert values["bpb"] == values["bpb_reasoning"] == {**place, "bpb": 1.5}
    assert values["brier"] == values["brier_reasoning"] == {**place, "brier": 0.8}
    assert (values["skipped"], values["items"], values["items_reasoning"]) == (0, 1, 1)
    unscored = _record(p=None, correct=False, skipped="why", bpb=None, brier=None)
    assert items.metric_values({"ability": "perception"}, unscored)["skipped"] == 1


def test_the_registered_and_module_aggregations_are_the_catalogues():
    assert set(lmms.AGGREGATIONS) == {"radar_sds", "radar_acc", "radar_bpb", "radar_brier", "radar_count"}
    assert lmms.AGGREGATIONS["radar_sds"] is lmms.sds_aggregate and lmms.AGGREGATIONS["radar_acc"] is lmms.acc_aggregate
    assert lmms.AGGREGATIONS["radar_count"] is lmms.count_aggregate is items.count_aggregate
    assert hasattr(lmms.sds_aggregate, "radar_stderr") and not hasattr(lmms.count_aggregate, "radar_stderr")
    # the exported folder: each mean with its `*_se` twin
    assert exported_hooks.SE_AGGREGATIONS == {
        "sds_aggregate": "sds_se_aggregate",
        "acc_aggregate": "acc_se_aggregate",
        "bpb_aggregate": "bpb_se_aggregate",
        "brier_aggregate": "brier_se_aggregate",
    }
    assert exported_hooks.SE_FIELDS == ("id", "subset", "category", "p", "correct", "bpb", "brier")
    names = [m.name for m in catalogue.METRICS]
    assert len(set(names)) == len(names)


def test_the_docs_table_is_the_catalogues():
    page = DOCS_PAGE.read_text(encoding="utf-8")
    assert generate_tasks.with_docs_table(page) == page  # also checked by generate_tasks.py --check
    table = page.split(generate_tasks.DOCS_START)[1].split(generate_tasks.DOCS_END)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`sds`", "`acc`", "`bpb`", "`brier`", "`skipped`", "`items`"]
    assert "`sds_perception`, `sds_reasoning`" in rows[0] and "| no |" in rows[4]
    assert "`bpb_perception`, `bpb_reasoning`" in rows[2] and "| no |" in rows[2] and "| no |" in rows[3]


def test_a_new_metric_is_one_entry(tmp_path):
    """A mean `logp` (lower is better, split by ability) added to METRICS alone reaches the template, the groups, the
    per-item values, the aggregations (module, registry, exported) and the docs table. In a subprocess: the
    modules build their tables at import."""
    script = textwrap.dedent(
        """
        from radar_tasks.metrics import catalogue
        catalogue.METRICS += (catalogue.Metric("logp", catalogue.MEAN, "logp", "a log-probability", False, True),)

        from radar_tasks.metrics import items, lmms
        from radar_tasks.task_yamls import generate_tasks
        from radar_tasks.tasks import exported_hooks

        fn = "radar_tasks.metrics.lmms."
        template = {m["metric"]: m for m in generate_tasks.metric_list()}
        assert str(template["logp"]["aggregation"]) == fn + "logp_aggregate"
        assert template["logp"]["higher_is_better"] is False and "logp_perception" in template
        assert {"metric": "logp", "aggregation": fn + "group_mean", "weight_by_size": False} in [
            {**e, "aggregation": str(e["aggregation"])} for e in generate_tasks.aggregate_metric_list()
        ]
        place = {"id": "q1", "subset": "wiki_animal", "category": "wiki_animal"}
        values = items.metric_values({"ability": "perception"}, {**place, "p": 0.5, "correct": True,
                                                                 "skipped": None, "logp": 1.5})
        assert values["logp"] == values["logp_perception"] == {**place, "logp": 1.5}
        assert lmms.logp_aggregate([values["logp"], {**place, "logp": 2.5}]) == 2.0
        assert lmms.AGGREGATIONS["radar_logp"] is lmms.logp_aggregate and lmms.logp_aggregate.radar_stderr
        assert exported_hooks.logp_aggregate([values["logp"]]) == 1.5 and exported_hooks.logp_se_aggregate
        assert exported_hooks.SE_AGGREGATIONS["logp_aggregate"] == "logp_se_aggregate"
        assert "| `logp` |" in "\\n".join(generate_tasks.docs_table())
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
