"""End to end through the `lmms-eval` CLI, as a user runs it: discovery, every score level, per-item logs.

The runs go through lmms-eval's CLI entry point in this process (`runner.run_in_process`, as a sweep runs it; the
same arguments, the same code); the CLI's process-level behaviour (exit status, printed line) has its own tests
(`test_missing_subset_folder_fails_loudly` here, tests/test_bad_input_lmms.py). The CLI exits 0 even when the
evaluation fails, so every test reads the result files.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import lmms_cli
import numpy as np
import pytest

from radar_tasks import taxonomy
from radar_tasks.cli import main as radar_cli
from radar_tasks.demo.fixture import make_fixture
from radar_tasks.demo.tiny_models import build_tiny_model
from radar_tasks.runner import environment, run_in_process
from radar_tasks.summary import format_table

pytestmark = pytest.mark.slow
SUBSET_TASKS = [taxonomy.task_name(s.name) for s in taxonomy.SUBSETS]
# The fixture has 2 items in every MMBench category; these get more, so that a size-weighted mean shows.
GROWN = {"image_style": 2, "future_prediction": 1}


def softmax(scores):
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def grow_mmbench_category(root: Path, category: str, extra: int) -> None:
    """Add `extra` items to an MMBench category of the released layout: its first item with the question reworded,
    under a new id with its own copy of the image (images/<category>/<q_id>.jpg); the file name keeps the count."""
    folder = root / "general_visual_question_answering"
    [path] = folder.glob(f"MMBench_{category}_*_pretrained_mllm_eval.json")
    items = json.loads(path.read_text(encoding="utf-8"))
    qid, item = next(iter(items.items()))
    for k in range(extra):
        items[f"{qid}x{k}"] = {**item, "question": f"{item['question']} (look again, {k + 1})"}
        shutil.copy(folder / "images" / category / f"{qid}.jpg", folder / "images" / category / f"{qid}x{k}.jpg")
    path.unlink()
    (folder / f"MMBench_{category}_{len(items)}_pretrained_mllm_eval.json").write_text(json.dumps(items, indent=1))


def run_lmms_eval(tasks, out, data, model, extra=(), env=None):
    """lmms-eval's CLI entry point in this process, with `env` set during the run: (results JSON, its log)."""
    with environment(**(env or {})):
        path = run_in_process(lmms_cli.model_args(model), tasks, out, data, extra)
    return json.loads(path.read_text()), (Path(out) / "lmms_eval.log").read_text()


samples = lmms_cli.samples


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = make_fixture(root / "M3-Bench")
    for category, extra in GROWN.items():
        grow_mmbench_category(data, category, extra)
    return data, build_tiny_model(root / "tiny-qwen2_vl", "qwen2_vl"), root


@pytest.fixture(scope="module")
def full_run(setup):
    data, model, root = setup
    out = root / "out-mmm"
    results, log = run_lmms_eval("radar_mmm", out, data, model)
    return results, out, log


def test_every_level_has_sds_and_acc(full_run):
    results, _, _ = full_run
    res = results["results"]
    leaves = [taxonomy.task_name(s, c) for s, c in taxonomy.leaf_tasks()]
    groups = ["radar_mmbench", "radar_mmbench_perception", "radar_mmbench_reasoning", "radar_mmmu_pro", "radar_mmm"]
    for task in leaves + groups + SUBSET_TASKS:
        assert task in res, task
        for key in ("sds,none", "acc,none", "sds_stderr,none", "acc_stderr,none", "skipped,none"):
            assert key in res[task], (task, key)
        assert 0.0 <= res[task]["sds,none"] <= 1.0 and res[task]["items,none"] > 0
    for ability in taxonomy.ABILITIES:
        assert 0.0 < res["radar_mmm"][f"sds_{ability},none"] < 1.0
        assert res["radar_mmm"][f"items_{ability},none"] > 0
    assert res["radar_seephys"]["skipped,none"] == 1  # the 13-image item


def test_totals_are_unweighted_means_of_subsets(full_run):
    res = full_run[0]["results"]
    sizes = {c: res[taxonomy.task_name("mmbench", c)]["items,none"] for c in taxonomy.MMBENCH_CATEGORIES}
    assert sizes == {c: 2 + GROWN.get(c, 0) for c in taxonomy.MMBENCH_CATEGORIES}  # categories of unequal sizes
    for metric in ("sds", "acc"):
        subset_scores = [res[t][f"{metric},none"] for t in SUBSET_TASKS]
        assert res["radar_mmm"][f"{metric},none"] == pytest.approx(sum(subset_scores) / 9, abs=1e-9)
        cats = [res[taxonomy.task_name("mmbench", c)][f"{metric},none"] for c in taxonomy.MMBENCH_CATEGORIES]
        assert res["radar_mmbench"][f"{metric},none"] == pytest.approx(sum(cats) / len(cats), abs=1e-9)
    # perception = mean(mmbench perception part, four wiki sets)
    mmb_p = [
        res[taxonomy.task_name("mmbench", c)]["sds,none"]
        for c, a in taxonomy.MMBENCH_CATEGORIES.items()
        if a == "perception"
    ]
    parts = [sum(mmb_p) / len(mmb_p)] + [
        res[f"radar_wiki_{k}"]["sds,none"] for k in ("animal", "plant", "attraction", "celebrity")
    ]
    assert res["radar_mmm"]["sds_perception,none"] == pytest.approx(sum(parts) / 5, abs=1e-9)
    # counts
    assert res["radar_mmm"]["items,none"] == sum(res[t]["items,none"] for t in SUBSET_TASKS) == 132 + 3
    assert (
        res["radar_mmm"]["items_perception,none"] + res["radar_mmm"]["items_reasoning,none"]
        == res["radar_mmm"]["items,none"]
    )


def test_stderrs_are_bootstrap_and_group_stderr_combines_subsets(full_run):
    res = full_run[0]["results"]
    leaf = res["radar_wiki_animal"]
    assert isinstance(leaf["sds_stderr,none"], float) and leaf["sds_stderr,none"] > 0
    ses = [res[t]["sds_stderr,none"] for t in SUBSET_TASKS]
    assert res["radar_mmm"]["sds_stderr,none"] == pytest.approx(math.sqrt(sum(s * s for s in ses)) / 9, rel=1e-6)


def test_item_logs_identify_items_and_match_softmax(full_run):
    results, out, _ = full_run
    n_checked = 0
    for task in ("radar_wiki_animal", "radar_mmmu_pro_math", "radar_seephys", "radar_mmbench_image_style"):
        rows = samples(out, task)
        assert len(rows) == results["results"][task]["items,none"] == results["n-samples"][task]["effective"]
        for row in rows:
            rec = row["sds"]
            assert {"id", "category", "p", "scores", "subset"} <= set(rec)
            if rec["skipped"]:
                assert rec["p"] is None
                continue
            assert rec["p"] == pytest.approx(softmax(rec["scores"])[0], abs=1e-12)
            n_checked += 1
        mean_p = [r["sds"]["p"] for r in rows if r["sds"]["p"] is not None]
        assert results["results"][task]["sds,none"] == pytest.approx(sum(mean_p) / len(mean_p), abs=1e-12)
    assert n_checked >= 10


def test_demo_table_shows_subsets_abilities_and_total(full_run):
    table = format_table(full_run[0])
    for label in [*[s.name for s in taxonomy.SUBSETS], "perception", "reasoning", "radar_mmm (all)"]:
        assert label in table


def test_mixed_with_another_suite_and_include_path(setup, tmp_path):
    """Our task next to a task of another folder (given with --include_path), in one run."""
    data, model, _ = setup
    other = tmp_path / "other_tasks"
    other.mkdir()
    (other / "toy.jsonl").write_text(
        "".join(json.dumps({"q": f"Is {i} even?", "choices": ["yes", "no"], "gold": i % 2}) + "\n" for i in range(3))
    )
    (other / "toy_mc.yaml").write_text(
        "task: toy_text_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: toy.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{ q }}'\ndoc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "process_results: !function radar_tasks.metrics.lmms.process_results_gold\n"
        "metric_list:\n  - metric: sds\n    aggregation: radar_sds\n    higher_is_better: true\n"
    )
    results, log = run_lmms_eval(
        "radar_wiki_animal,toy_text_mc", tmp_path / "out", data, model, extra=["--include_path", str(other)]
    )
    res = results["results"]
    assert "sds,none" in res["radar_wiki_animal"], log[-3000:]
    assert "sds,none" in res["toy_text_mc"], log[-3000:]


def test_include_path_without_automatic_discovery(setup, tmp_path, capsys):
    data, model, _ = setup
    assert radar_cli(["task-dir"]) == 0
    task_dir = capsys.readouterr().out.strip()
    results, log = run_lmms_eval(
        "radar_wiki_plant",
        tmp_path / "out",
        data,
        model,
        extra=["--include_path", task_dir],
        env={"RADAR_TASKS_NO_DISCOVERY": "1"},
    )
    assert "sds,none" in results["results"]["radar_wiki_plant"], log[-3000:]


def test_missing_subset_folder_fails_loudly(setup, tmp_path):
    _, model, _ = setup
    _, log = lmms_cli.run(lmms_cli.model_args(model), "radar_wiki_plant", tmp_path / "out", data=tmp_path / "nowhere")
    assert "is not a folder" in log
    assert not list((tmp_path / "out").rglob("*_results.json"))


def test_missing_category_file_is_reported_and_left_out_of_the_subset_mean(setup, tmp_path):
    """A partial release (a category file absent): that leaf reports no score, the group averages the others."""
    data, model, _ = setup
    partial = tmp_path / "M3-Bench"
    shutil.copytree(data, partial)
    [ocr] = (partial / "general_visual_question_answering").glob("MMBench_ocr_*.json")
    ocr.unlink()
    results, log = run_lmms_eval("radar_mmbench_perception", tmp_path / "out", partial, model)
    res = results["results"]
    assert "no json file for category 'ocr'" in log
    assert "sds,none" not in res["radar_mmbench_ocr"]
    present = [
        res[taxonomy.task_name("mmbench", c)]["sds,none"]
        for c, a in taxonomy.MMBENCH_CATEGORIES.items()
        if a == "perception" and c != "ocr"
    ]
    assert len(present) == 11
    assert res["radar_mmbench_perception"]["sds,none"] == pytest.approx(sum(present) / 11, abs=1e-9)
    assert res["radar_mmbench_perception"]["items,none"] == 11 * 2 + GROWN["image_style"]
