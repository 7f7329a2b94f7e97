"""Leaf, subset and group scores against values computed by hand, with categories of unequal sizes, and bootstrap
stderrs that do not depend on the order records arrive in (metrics/items.py, metrics/lmms.py, metrics/sds.py).

The reference averages a subset's categories unweighted and a group's subsets unweighted: with equal category sizes
a size-weighted mean gives the same number, so every category here has its own size.
"""

from __future__ import annotations

import math
import random

import pytest

from radar_tasks.metrics import items, lmms, sds

LN3, LN9 = math.log(3), math.log(9)
# Two candidates, losses (correct, distractor) -> p of the correct one: softmax(-losses)[0].
P90, P75, P50, P25 = (0.0, LN9), (0.0, LN3), (0.0, 0.0), (LN3, 0.0)  # 0.9, 0.75, 0.5 (a tie: correct), 0.25

# (subset, category, ability) -> the items' losses; sizes 3, 1, 2, 2 and 4
LEAVES = {
    ("mmbench", "ocr", "perception"): [P90, P90, P90],  # p 0.9 0.9 0.9   acc 1 1 1
    ("mmbench", "image_style", "perception"): [P25],  # p 0.25          acc 0
    ("mmbench", "future_prediction", "reasoning"): [P50, P25],  # p 0.5 0.25  acc 1 0
    ("wiki_animal", "wiki_animal", "perception"): [P75, P25],  # p 0.75 0.25  acc 1 0
    ("mathvista", "mathvista", "reasoning"): [P90, P75, P50, P25],  # p 0.9 0.75 0.5 0.25  acc 1 1 1 0
}
# By hand: categories unweighted within a subset, subsets unweighted within a group.
MMBENCH_SDS = (0.9 + 0.25 + (0.5 + 0.25) / 2) / 3  # 0.508333
EXPECTED = {
    "sds": (MMBENCH_SDS + (0.75 + 0.25) / 2 + (0.9 + 0.75 + 0.5 + 0.25) / 4) / 3,  # 0.536111
    "acc": ((1 + 0 + 0.5) / 3 + 0.5 + 0.75) / 3,  # 0.583333
    "sds_perception": ((0.9 + 0.25) / 2 + 0.5) / 2,  # mmbench's perception categories, wiki_animal: 0.5375
    "sds_reasoning": (0.375 + 0.6) / 2,  # mmbench's reasoning category, mathvista: 0.4875
    "acc_perception": ((1 + 0) / 2 + 0.5) / 2,
    "acc_reasoning": (0.5 + 0.75) / 2,
}


def doc(subset, category, ability, qid, n=2):
    return {
        "id": qid,
        "subset": subset,
        "category": category,
        "ability": ability,
        "source_file": f"{category}.json",
        "choices": [f"c{i}" for i in range(n)],
        "skipped": False,
    }


def leaf_results():
    """(per-leaf aggregated metrics, item counts) as lmms-eval hands them to a group's aggregation."""
    values, sizes = {}, []
    for (subset, category, ability), losses in LEAVES.items():
        per_doc = [
            lmms.process_results(doc(subset, category, ability, f"{category}-{k}"), [(a, False), (b, False)])
            for k, (a, b) in enumerate(losses)
        ]
        leaf = {
            "sds": lmms.sds_aggregate([d["sds"] for d in per_doc]),
            "acc": lmms.acc_aggregate([d["acc"] for d in per_doc]),
            f"sds_{ability}": lmms.sds_aggregate([d[f"sds_{ability}"] for d in per_doc]),
            f"acc_{ability}": lmms.acc_aggregate([d[f"acc_{ability}"] for d in per_doc]),
        }
        values[(subset, category)] = leaf
        sizes.append(len(per_doc))
    return values, sizes


def test_leaf_scores_by_hand():
    values, _ = leaf_results()
    assert values[("mmbench", "ocr")]["sds"] == pytest.approx(0.9, abs=1e-12)
    assert values[("mmbench", "future_prediction")]["sds"] == pytest.approx(0.375, abs=1e-12)
    assert values[("mmbench", "future_prediction")]["acc"] == pytest.approx(0.5, abs=1e-12)  # the tie is correct
    assert values[("mathvista", "mathvista")]["sds"] == pytest.approx(0.6, abs=1e-12)
    assert values[("mathvista", "mathvista")]["acc"] == pytest.approx(0.75, abs=1e-12)
    assert values[("mmbench", "ocr")]["sds"].parts == (("mmbench", "ocr"),)


@pytest.mark.parametrize("metric", sorted(EXPECTED))
def test_group_means_with_unequal_category_sizes_by_hand(metric):
    values, sizes = leaf_results()
    present = [(v[metric], n) for v, n in zip(values.values(), sizes) if metric in v]
    leaf_values, leaf_sizes = [v for v, _ in present], [n for _, n in present]
    assert lmms.group_mean(leaf_values, leaf_sizes, weight_by_size=False) == pytest.approx(EXPECTED[metric], abs=1e-12)
    # lmms-eval passes the YAML's weight_by_size; M3-Bench groups stay unweighted either way
    assert lmms.group_mean(leaf_values, leaf_sizes, weight_by_size=True) == pytest.approx(EXPECTED[metric], abs=1e-12)


def test_the_sizes_matter_here():
    """Guard of this file's data: a size-weighted or a leaf mean would give other numbers."""
    values, sizes = leaf_results()
    leaf_sds = [v["sds"] for v in values.values()]
    by_items = sum(float(v) * n for v, n in zip(leaf_sds, sizes)) / sum(sizes)
    by_leaf = sum(map(float, leaf_sds)) / len(leaf_sds)
    mmbench_by_items = (3 * 0.9 + 0.25 + 2 * 0.375) / 6
    for wrong in (by_items, by_leaf, (mmbench_by_items + 0.5 + 0.6) / 3):
        assert abs(wrong - EXPECTED["sds"]) > 0.01


def test_subset_mean_is_unweighted_within_a_subset():
    values, sizes = leaf_results()
    mmbench = [(v["sds"], n) for (s, _), v, n in zip(values, values.values(), sizes) if s == "mmbench"]
    assert lmms.group_mean([v for v, _ in mmbench], [n for _, n in mmbench]) == pytest.approx(MMBENCH_SDS, abs=1e-12)


def test_group_stderr_by_hand_with_unequal_category_counts():
    ses = [
        items.LeafScore(0.1, [("mmbench", "ocr")]),
        items.LeafScore(0.2, [("mmbench", "image_style")]),
        items.LeafScore(0.3, [("mmbench", "future_prediction")]),
        items.LeafScore(0.4, [("wiki_animal", "wiki_animal")]),
    ]
    mmbench = math.sqrt(0.01 + 0.04 + 0.09) / 3
    assert lmms.group_mean(ses, [3, 1, 2, 2]) == pytest.approx(((0.1 + 0.2 + 0.3) / 3 + 0.4) / 2, abs=1e-12)
    assert items.group_stderr(ses) == pytest.approx(math.sqrt(mmbench**2 + 0.16) / 2, abs=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# Bootstrap stderrs do not depend on record order (lmms-eval gathers records rank by rank)
# ------------------------------------------------------------------------------------------------------------------


def records(n=40):
    rng = random.Random(1)
    out = []
    for k in range(n):
        category = ("ocr", "image_style", "future_prediction")[k % 3]
        p = rng.random()
        out.append(
            {"id": f"q{k:03d}", "subset": "mmbench", "category": category, "p": p, "correct": p > 0.5, "skipped": None}
        )
    return out


def orders(recs):
    shuffled = recs[:]
    random.Random(7).shuffle(shuffled)
    two_ranks = recs[0::2] + recs[1::2]  # what two processes gather: rank 0's docs, then rank 1's
    return [recs[::-1], shuffled, two_ranks]


@pytest.mark.parametrize("aggregate", [lmms.sds_aggregate, lmms.acc_aggregate], ids=["sds", "acc"])
def test_bootstrap_stderr_is_the_same_for_any_record_order(aggregate):
    recs = records()
    se = aggregate.radar_stderr(recs, 1000)
    assert math.isfinite(se) and se > 0
    for other in orders(recs):
        assert aggregate.radar_stderr(other, 1000) == se
    assert aggregate(recs) == pytest.approx(aggregate(orders(recs)[1]), abs=1e-12)


def test_record_order_would_matter_to_a_plain_bootstrap():
    """Guard of the test above: the seeded bootstrap of the same values in another order gives another number."""
    recs = records()
    values = [r["p"] for r in recs]
    assert all(
        sds.bootstrap_stderr([r["p"] for r in other], 1000, 0) != sds.bootstrap_stderr(values, 1000, 0)
        for other in orders(recs)
    )


def test_bootstrap_stderr_close_to_the_analytic_one():
    recs = records(200)
    p = [r["p"] for r in recs]
    mean = sum(p) / len(p)
    analytic = math.sqrt(sum((x - mean) ** 2 for x in p) / (len(p) - 1) / len(p))
    assert lmms.sds_aggregate.radar_stderr(recs, 1000) == pytest.approx(analytic, rel=0.1)
