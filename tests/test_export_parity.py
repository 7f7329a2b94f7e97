"""The exported task folder through the real lmms-eval CLI (`--include_path`, our discovery off, the exported dataset,
no M3-Bench release in sight: a subprocess, so that nothing of this process's plugin is in it) gives our package's
numbers: every metric of every task and group of `radar_mmm` and every item's probability within 1e-9. The package
side runs lmms-eval's CLI entry point in this process (`runner.run_in_process`), with the lite MMMU-Pro beside
(its group stderr; that the exported lite leaves select the package's docs is tests/test_export.py's). One run of
each side, shared by the tests of this module: the exported side costs a `datasets` load per config (~2 s each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lmms_cli
import numpy as np
import pytest

from radar_tasks import taxonomy
from radar_tasks.runner import run_in_process

pytestmark = pytest.mark.slow
TOLERANCE = 1e-9
TASKS = "radar_mmm,radar_mmmu_pro_lite"  # the package side
EXPORTED_TASKS = "radar_mmm"
LEAF_TASKS = [taxonomy.task_name(s, c) for s, c in taxonomy.leaf_tasks()]


def run(out: Path, model: str, env: dict, extra=(), tasks=EXPORTED_TASKS, more_args="") -> dict:
    """The exported side: stock lmms-eval in a subprocess, our discovery off, no M3-Bench root."""
    return lmms_cli.run_for_results(
        lmms_cli.model_args(model, more_args),
        tasks,
        out,
        env={"RADAR_TASKS_NO_DISCOVERY": "1", **env},
        extra=extra,
        timeout=1200,
    )[0]


def items(out: Path, tasks) -> dict[tuple[str, str], dict]:
    found = {}
    for task in tasks:
        [path] = sorted(out.rglob(f"*_samples_{task}.jsonl"))
        for line in path.read_text().splitlines():
            record = json.loads(line)["sds"]
            found[(task, record["id"])] = record
    return found


@pytest.fixture(scope="module")
def runs(exported, tiny_checkpoint, tmp_path_factory):
    root, _, tasks = exported
    work = tmp_path_factory.mktemp("parity")
    model = str(tiny_checkpoint("qwen2_vl"))
    package = json.loads(run_in_process(lmms_cli.model_args(model), TASKS, work / "package", root).read_text())
    upstream = run(
        work / "exported", model, {"HF_DATASETS_CACHE": str(work / "hf-cache")}, extra=["--include_path", str(tasks)]
    )
    return package, upstream, work


def test_the_exported_folder_and_dataset_were_run(runs, exported):
    _, upstream, _ = runs
    _, dataset, _ = exported
    assert set(LEAF_TASKS) == set(upstream["configs"])
    for task, config in upstream["configs"].items():
        assert config["dataset_path"] == str(dataset), task
        assert "radar_tasks" not in json.dumps(config), task


def _close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE
    return a == b


def test_every_metric_of_every_task_and_group_matches(runs):
    """Scores and counts equal; our bootstrap `m_stderr` is the export's `m_se` (its `m_stderr` is N/A)."""
    package, upstream, _ = runs
    theirs = upstream["results"]
    ours = {task: metrics for task, metrics in package["results"].items() if not task.endswith("_lite")}
    assert set(theirs) == set(ours)
    compared = 0
    for task, metrics in ours.items():
        for key, value in metrics.items():
            if key in ("alias", "samples", " ") or "_stderr_" in key:
                continue
            name, _, flt = key.partition(",")
            if name.endswith("_stderr"):
                counterpart = f"{name.removesuffix('_stderr')}_se,{flt}"
                if isinstance(value, float) and counterpart in theirs[task]:
                    assert _close(value, theirs[task][counterpart]), (task, key, value, theirs[task][counterpart])
                    compared += 1
                continue
            assert _close(value, theirs[task][key]), (task, key, value, theirs[task][key])
            compared += 1
    assert compared > 600  # 692 values of the 62 leaves and groups on the fixture
    for key in ("sds", "acc", "sds_perception", "sds_reasoning", "sds_stderr", "items"):
        assert isinstance(ours["radar_mmm"][f"{key},none"], (int, float)), key
    assert theirs["radar_mmm"]["sds_se,none"] == pytest.approx(ours["radar_mmm"]["sds_stderr,none"], abs=1e-9)
    assert theirs["radar_wiki_animal"]["sds_stderr,none"] == "N/A"


def test_every_item_probability_matches(runs):
    _, upstream, work = runs
    leaves = sorted(upstream["configs"])
    assert set(leaves) == set(LEAF_TASKS)
    ours, theirs = items(work / "package", leaves), items(work / "exported", leaves)
    assert set(theirs) == set(ours) and len(ours) == 132
    for key, record in ours.items():
        other = theirs[key]
        if record["p"] is None:
            assert other["p"] is None and record["skipped"] == other["skipped"]
            continue
        assert abs(record["p"] - other["p"]) <= TOLERANCE, key
        assert all(abs(a - b) <= TOLERANCE for a, b in zip(record["scores"], other["scores"], strict=True)), key


# the per-item field each mean averages (none on an item not scored, except acc's: wrong)
FIELDS = {"sds": "p", "acc": "correct", "bpb": "bpb", "brier": "brier"}


def test_a_lite_group_has_a_stderr_though_categories_hold_one_item(runs):
    """`radar_mmmu_pro_lite`: ten of its categories hold a single item, whose leaf stderr is N/A (lmms-eval computes
    none for one value); the group's stderr is a number (lmms-eval alone says N/A), in the package and (equal) in
    the export: the stratified bootstrap of the balanced mean, checked here against its exact value from the
    per-item logs (a category's bootstrap variance is its values' variance / n) and, to the last digit, against the
    leaves' own stderrs with the one-item categories at 0."""
    package, _, work = runs
    res = package["results"]
    leaves = sorted(t for t in package["configs"] if t.startswith("radar_mmmu_pro_") and t.endswith("_lite"))
    logs = items(work / "package", leaves)
    single = [leaf for leaf in leaves if sum(t == leaf for t, _ in logs) == 1]
    assert len(single) == 10 and all(res[leaf]["sds_stderr,none"] == "N/A" for leaf in single)
    for metric, field in FIELDS.items():
        exact, combined = [], []
        for leaf in leaves:
            x = np.array([float(r[field]) for (t, _), r in logs.items() if t == leaf and r[field] is not None])
            if x.size == 0:
                continue
            exact.append(x.var() / x.size)  # the bootstrap variance of the category mean
            se = res[leaf][f"{metric}_stderr,none"]
            combined.append(0.0 if x.size == 1 else se)
        group = res["radar_mmmu_pro_lite"][f"{metric}_stderr,none"]
        assert isinstance(group, float) and group > 0, metric
        assert group == pytest.approx(math.sqrt(sum(exact)) / len(exact), rel=0.05), metric  # one subset
        assert group == pytest.approx(math.sqrt(sum(se * se for se in combined)) / len(combined), rel=1e-9), metric


def test_a_stock_lmms_eval_model_runs_the_exported_folder(exported, tmp_path):
    """lmms-eval's own `dummy` model (every candidate the loss 0.0, returned as a plain tuple, so it reaches the
    task as a string): each item's SDS is exactly 1/K, with the exported folder alone."""
    _, _, tasks = exported
    out = tmp_path / "dummy"
    code, log = lmms_cli.run(
        "",
        "radar_wiki_animal,radar_mmmu_pro_math",
        out,
        model="dummy",
        env={"RADAR_TASKS_NO_DISCOVERY": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")},
        extra=["--include_path", str(tasks)],
        timeout=1200,
    )
    results = lmms_cli.results(out, code, log)["results"]
    for task in ("radar_wiki_animal", "radar_mmmu_pro_math"):
        [path] = sorted(out.rglob(f"*_samples_{task}.jsonl"))
        logged = [json.loads(line)["sds"] for line in path.read_text().splitlines()]
        assert logged and all(r["p"] == pytest.approx(1 / r["n_candidates"], abs=1e-12) for r in logged)
        assert results[task]["sds,none"] == pytest.approx(sum(r["p"] for r in logged) / len(logged), abs=1e-12)
        assert results[task]["acc,none"] == 1.0  # all tied: a tie counts as correct
        # a wrapper's plain results: the Brier score of a uniform p is 1 - 1/K; no bits per byte (no NLL sum)
        assert all(r["brier"] == pytest.approx(1 - 1 / r["n_candidates"], abs=1e-12) for r in logged)
        assert all(r["bpb"] is None for r in logged) and math.isnan(results[task]["bpb,none"])
    assert "no summed NLL" in log  # why bpb is left out, said


def test_protocol_paper_reads_the_exported_records_as_the_release(exported, tiny_checkpoint, tmp_path):
    """radar_hf under protocol=paper rebuilds each prompt from the doc and converts the images again as the family
    script does (Qwen2-VL: only RGBA pasted onto white): from an exported record's embedded files the same as from
    the released files (MMMU-Pro and SeePhys hold RGBA, palette and grayscale PNGs)."""
    root, _, tasks = exported
    model, tasks_arg = str(tiny_checkpoint("qwen2_vl")), "radar_mmmu_pro_art_theory,radar_mmmu_pro_math,radar_seephys"
    run_in_process(lmms_cli.model_args(model, "protocol=paper"), tasks_arg, tmp_path / "package", root)
    run(
        tmp_path / "exported",
        model,
        {"HF_DATASETS_CACHE": str(tmp_path / "hf-cache")},
        extra=["--include_path", str(tasks)],
        tasks=tasks_arg,
        more_args="protocol=paper",
    )
    leaves = tasks_arg.split(",")
    ours, theirs = items(tmp_path / "package", leaves), items(tmp_path / "exported", leaves)
    assert set(ours) == set(theirs) and len(ours) == 10
    for key, record in ours.items():
        assert record["p"] is None or abs(record["p"] - theirs[key]["p"]) <= TOLERANCE, key
