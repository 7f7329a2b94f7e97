"""The perception/reasoning split and the task list, against lists typed here (not derived from taxonomy.py).

MMBench's own taxonomy (Liu et al., "MMBench: Is Your Multi-modal Model an All-around Player?", ECCV 2024, Fig. 2;
the `l2-category` / `category` columns of its dev TSV): L1 ability -> L2 ability -> the 20 L3 categories of the dev
set, named as in the M3-Bench file names. The checked-in YAMLs, the README and `taxonomy.py` must all agree with it,
and `task_yamls/generate_tasks.py --check` must find the YAMLs up to date.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import radar_tasks.task_yamls
from radar_tasks import taxonomy
from radar_tasks.task_yamls import generate_tasks

MMBENCH_L1_L2_L3 = {
    "perception": {
        "coarse_perception": ["image_style", "image_scene", "image_emotion", "image_quality", "image_topic"],
        "finegrained_perception (instance-level)": [
            "object_localization",
            "attribute_recognition",
            "celebrity_recognition",
            "ocr",
        ],
        "finegrained_perception (cross-instance)": [
            "spatial_relationship",
            "attribute_comparison",
            "action_recognition",
        ],
    },
    "reasoning": {
        "attribute_reasoning": ["physical_property_reasoning", "function_reasoning", "identity_reasoning"],
        "relation_reasoning": ["social_relation", "physical_relation", "nature_relation"],
        "logic_reasoning": ["future_prediction", "structuralized_imagetext_understanding"],
    },
}
MMBENCH = {c: l1 for l1, l2s in MMBENCH_L1_L2_L3.items() for cs in l2s.values() for c in cs}
# The paper's split of the other subsets (arXiv 2602.12892): Wikipedia identification is perception, the rest reasoning.
SINGLE_FILE = {
    "mathvista": "reasoning",
    "seephys": "reasoning",
    "spatial": "reasoning",
    "wiki_animal": "perception",
    "wiki_plant": "perception",
    "wiki_attraction": "perception",
    "wiki_celebrity": "perception",
}
TASK_DIR = Path(radar_tasks.task_yamls.__file__).resolve().parent
README = Path(__file__).resolve().parent.parent / "README.md"


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: ("!function", loader.construct_scalar(node)))


def task_yaml(name: str) -> dict:
    return yaml.load((TASK_DIR / f"{name}.yaml").read_text(), Loader=_Loader)


def test_the_hand_typed_taxonomy_is_complete():
    assert len(MMBENCH) == 20 and sum(len(cs) for l2s in MMBENCH_L1_L2_L3.values() for cs in l2s.values()) == 20
    assert sorted(MMBENCH.values()).count("perception") == 12


def test_taxonomy_follows_mmbench_l1():
    assert taxonomy.MMBENCH_CATEGORIES == MMBENCH
    for category, ability in MMBENCH.items():
        assert taxonomy.ability_of("mmbench", category) == ability
    for subset, ability in SINGLE_FILE.items():
        assert taxonomy.ability_of(subset, subset) == ability
    assert all(taxonomy.ability_of("mmmu_pro", s) == "reasoning" for s in taxonomy.MMMU_PRO_SUBJECTS)


def test_checked_in_yamls_follow_mmbench_l1():
    for ability in ("perception", "reasoning"):
        group = task_yaml(f"radar_mmbench_{ability}")
        assert sorted(group["task"]) == sorted(f"radar_mmbench_{c}" for c, a in MMBENCH.items() if a == ability)
    for category, ability in MMBENCH.items():
        leaf = task_yaml(f"radar_mmbench_{category}")
        assert leaf["task"] == f"radar_mmbench_{category}"
        assert leaf["metadata"] == {"version": 1.0, "subset": "mmbench", "category": category, "ability": ability}
    assert task_yaml("radar_mmbench")["task"] == ["radar_mmbench_perception", "radar_mmbench_reasoning"]
    assert sorted(task_yaml("radar_perception")["task"]) == sorted(
        ["radar_mmbench_perception"] + [f"radar_{s}" for s, a in SINGLE_FILE.items() if a == "perception"]
    )
    assert sorted(task_yaml("radar_reasoning")["task"]) == sorted(
        ["radar_mmbench_reasoning", "radar_mmmu_pro"]
        + [f"radar_{s}" for s, a in SINGLE_FILE.items() if a == "reasoning"]
    )
    assert sorted(task_yaml("radar_mmm")["task"]) == sorted(
        ["radar_mmbench", "radar_mmmu_pro", *[f"radar_{s}" for s in SINGLE_FILE]]
    )
    for subset, ability in SINGLE_FILE.items():
        assert task_yaml(f"radar_{subset}")["metadata"]["ability"] == ability
    # every group averages with the unweighted balanced mean
    for group in ("radar_mmbench_perception", "radar_mmbench", "radar_mmmu_pro", "radar_mmm", "radar_perception"):
        metrics = {m["metric"]: m for m in task_yaml(group)["aggregate_metric_list"]}
        for metric in ("sds", "acc"):
            assert metrics[metric]["aggregation"] == ("!function", "radar_tasks.metrics.lmms.group_mean")
            assert metrics[metric]["weight_by_size"] is False


def test_readme_lists_the_same_split():
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = re.search(
        r"MMBench categories follow MMBench's own L1 taxonomy\. Perception: (.*?)\. Reasoning: (.*?)\.", text
    )
    assert found, "README: the MMBench split sentence is gone"
    for listed, ability in zip(found.groups(), ("perception", "reasoning")):
        assert sorted(c.strip() for c in listed.split(",")) == sorted(c for c, a in MMBENCH.items() if a == ability)


def test_task_names_and_file_names():
    assert taxonomy.task_name("mmbench", "ocr") == "radar_mmbench_ocr"
    assert taxonomy.task_name("mmmu_pro", "Art_Theory") == "radar_mmmu_pro_art_theory"
    assert taxonomy.task_name("wiki_animal") == taxonomy.task_name("wiki_animal", "wiki_animal") == "radar_wiki_animal"
    assert taxonomy.task_name("mmbench") == "radar_mmbench"
    assert (
        taxonomy.category_of_file("mmbench", "MMBench_structuralized_imagetext_understanding_12_pretrained_mllm_eval")
        == "structuralized_imagetext_understanding"
    )
    assert taxonomy.category_of_file("mmmu_pro", "MMMU_Pro_Art_Theory_3_pretrained_mllm_eval") == "Art_Theory"
    assert taxonomy.category_of_file("mmbench", "MMBench_ocr_pretrained_mllm_eval") is None  # no item count
    assert taxonomy.category_of_file("mmbench", "MMMU_Pro_Art_3_pretrained_mllm_eval") is None
    assert taxonomy.category_of_file("seephys", "anything") == "seephys"
    leaves = taxonomy.leaf_tasks()
    assert len(leaves) == 20 + 30 + 7 and len(set(leaves)) == len(leaves)
    assert leaves[0] == ("mmbench", "image_style") and leaves[-1] == ("wiki_celebrity", "wiki_celebrity")
    names = ["wiki_plant", "zzz", "mmbench", "aaa", "seephys", "mmmu_pro"]
    assert sorted(names, key=taxonomy.subset_order) == ["mmbench", "mmmu_pro", "seephys", "wiki_plant", "aaa", "zzz"]


def test_generated_files_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(TASK_DIR / "generate_tasks.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert generate_tasks.main(["--check"]) == 0


def test_check_finds_a_stale_or_orphan_file(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "task_yamls"
    shutil.copytree(TASK_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(generate_tasks, "HERE", copy)
    assert generate_tasks.main(["--check"]) == 0
    leaf = copy / "radar_mmbench_ocr.yaml"
    leaf.write_text(leaf.read_text().replace("ability: perception", "ability: reasoning"))
    (copy / "radar_mmbench_old_category.yaml").write_text("task: radar_mmbench_old_category\n")
    capsys.readouterr()
    assert generate_tasks.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "out of date: task_yamls/radar_mmbench_ocr.yaml" in out
    assert "out of date: task_yamls/radar_mmbench_old_category.yaml" in out
    # regenerating repairs both
    assert generate_tasks.main([]) == 0 and generate_tasks.main(["--check"]) == 0
    assert not (copy / "radar_mmbench_old_category.yaml").exists()


def test_leaves_of_covers_groups_subsets_and_lite_names():
    every = taxonomy.leaf_tasks()
    mmm = taxonomy.leaves_of("radar_mmm")
    assert len(mmm) == len(set(mmm)) == len(every) == 57 and set(mmm) == set(every)
    perception, reasoning = taxonomy.leaves_of("radar_perception"), taxonomy.leaves_of("radar_reasoning")
    assert set(perception) | set(reasoning) == set(every) and not set(perception) & set(reasoning)
    assert all(taxonomy.ability_of(s, c) == "perception" for s, c in perception)
    mmbench = taxonomy.leaves_of("radar_mmbench")
    assert sorted(mmbench) == sorted(leaf for leaf in every if leaf[0] == "mmbench") and len(mmbench) == 20
    assert taxonomy.leaves_of("radar_wiki_animal") == [("wiki_animal",) * 2]
    # a bare subset name is lmms-eval's own task where one exists (mmbench, mathvista): not ours
    assert taxonomy.leaves_of("mmbench") is None and taxonomy.leaves_of("wiki_animal") is None
    assert taxonomy.leaves_of("radar_mmbench_ocr_lite") == [("mmbench", "ocr")]
    assert taxonomy.leaves_of("radar_perception_lite") == perception
    assert taxonomy.leaves_of("mmlu") is None and taxonomy.leaves_of("lite_radar_mmm") is None


def test_leaf_of_names_leaf_tasks_only():
    assert taxonomy.leaf_of("radar_mmbench_ocr") == ("mmbench", "ocr") == taxonomy.leaf_of("radar_mmbench_ocr_lite")
    assert taxonomy.leaf_of("radar_mmmu_pro_art_theory") == ("mmmu_pro", "Art_Theory")
    assert taxonomy.leaf_of("radar_seephys") == ("seephys", "seephys")
    for not_a_leaf in ("radar_mmbench", "radar_mmm_lite", "mmbench", "radar_mmbench_ocr_lite_lite", "mmlu"):
        assert taxonomy.leaf_of(not_a_leaf) is None, not_a_leaf


def test_subsets_of_follow_groups_and_lite_tasks():
    # what a sweep's data fingerprint covers
    assert taxonomy.subsets_of(["radar_wiki_animal", "radar_spatial"]) == ["spatial", "wiki_animal"]
    assert taxonomy.subsets_of(["radar_perception_lite"]) == [
        "mmbench",
        "wiki_animal",
        "wiki_plant",
        "wiki_attraction",
        "wiki_celebrity",
    ]
    assert len(taxonomy.subsets_of(["radar_mmm"])) == 9 and taxonomy.subsets_of(["someone_elses_task"]) == []


def test_the_preflight_leaves_lmms_evals_own_tasks_alone():
    from radar_tasks.tasks import preflight

    # no task manager: names only (lmms-eval ships mmbench, mathvista and mmmu_pro tasks of its own)
    assert preflight.leaves(["mmbench", "mathvista", "mmmu_pro"]) == []
    assert preflight.leaves(["mmbench", "radar_mathvista"]) == [("mathvista", "mathvista")]
