"""The lite sample (radar_tasks.data.lite), its checked-in ids and its tasks' data."""

from __future__ import annotations

import json
import random

from radar_tasks import taxonomy
from radar_tasks.data import lite


def test_quotas_keep_every_category_and_follow_the_sizes():
    counts = {
        c: n
        for c, n in zip(
            taxonomy.MMBENCH_CATEGORIES,
            [53, 104, 50, 53, 36, 81, 74, 99, 39, 45, 44, 54, 75, 79, 45, 43, 24, 48, 40, 78],
        )
    }
    q = lite.quotas(counts, 50, subset="mmbench")
    assert sum(q.values()) == 50 and min(q.values()) >= 1
    assert q["image_scene"] >= q["physical_relation"]  # 104 items against 24
    assert lite.quotas({"a": 3, "b": 2}, 50) == {"a": 3, "b": 2}  # small subsets: everything
    assert sum(lite.quotas({str(i): 57 for i in range(30)}, 50).values()) == 50


def test_draw_depends_on_the_ids_only():
    ids = [f"Q{i}--0" for i in range(200)]
    a = lite.draw(ids, 10, subset="wiki_animal", category="wiki_animal")
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    b = lite.draw(shuffled, 10, subset="wiki_animal", category="wiki_animal")
    assert sorted(a) == sorted(b) and len(a) == 10 and set(a) <= set(ids)
    assert a == [i for i in ids if i in set(a)]  # original order kept
    assert sorted(lite.draw(ids, 10, subset="wiki_animal", category="wiki_animal", seed=1)) != sorted(a)


def test_select_keeps_the_pinned_items_or_draws_on_other_data():
    row = {"subset": "spatial", "category": "spatial", "ids": ["207", "205--1"], "quota": 2, "seed": 0}
    positions, warning = lite.select(["205--0", "205--1", "206--0--b", "207"], row)
    assert positions == [1, 3] and warning is None
    other = [f"x{i}" for i in range(9)]
    positions, warning = lite.select(other, row)
    assert len(positions) == 2 and "not in this data" in warning
    assert positions == lite.select(other, row)[0]


def test_checked_in_sample_covers_every_leaf_and_is_in_the_task_index():
    from radar_tasks.task_yamls import generate_tasks

    sample = generate_tasks.lite_sample()
    assert set(sample["tasks"]) == {taxonomy.task_name(s, c) for s, c in taxonomy.leaf_tasks()}
    per_subset = {}
    for task, drawn in sample["tasks"].items():
        subset = next(s for s, c in taxonomy.leaf_tasks() if taxonomy.task_name(s, c) == task)
        per_subset[subset] = per_subset.get(subset, 0) + len(drawn["ids"])
    assert max(per_subset.values()) <= sample["per_subset"] == lite.PER_SUBSET
    index = json.loads((generate_tasks.HERE / generate_tasks.INDEX_FILE).read_text())
    assert index["radar_wiki_animal_lite"][0]["ids"] == sample["tasks"]["radar_wiki_animal"]["ids"]
    assert generate_tasks.lite_groups()["radar_mmm_lite"] == [m + "_lite" for m in generate_tasks.groups()["radar_mmm"]]
    assert generate_tasks.main(["--check"]) == 0  # the generated files are current


def test_a_lite_task_reads_its_pinned_items(fixture_root, monkeypatch):
    from radar_tasks.task_yamls import generate_tasks
    from radar_tasks.tasks import hooks

    monkeypatch.setenv("RADAR_M3BENCH_DIR", str(fixture_root))
    index = json.loads((generate_tasks.HERE / generate_tasks.INDEX_FILE).read_text())
    docs = hooks.process_docs(index["radar_mmmu_pro_art_lite"])
    assert list(docs["id"]) == index["radar_mmmu_pro_art_lite"][0]["ids"]
    full = hooks.process_docs(index["radar_mmmu_pro_art"])
    assert set(docs["id"]) <= set(full["id"])
