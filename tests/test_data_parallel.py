"""Data parallel on CPU: two processes (gloo) give the numbers of one process, each question scored on one rank.

`accelerate launch --cpu --num_processes 2` does NOT start two processes (accelerate's CPU launcher runs one plain
process unless MPI is set up); what works without MPI is
`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ...` (torchrun underneath, gloo backend),
or `torchrun --nproc_per_node 2 -m lmms_eval ...`. This test runs the former and checks that it really ran on two
ranks; the one-process reference runs lmms-eval's CLI entry point in the test process. The CLI exits 0 on failure:
the results files are what is checked.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sys
from pathlib import Path

import lmms_cli
import pytest

from radar_tasks.demo.fixture import make_fixture
from radar_tasks.demo.tiny_models import build_tiny_model
from radar_tasks.runner import run_in_process

pytestmark = pytest.mark.slow
# mathvista has 5 items: the ranks get 3 and 2 (lmms-eval then pads the shorter rank with copies of a request);
# seephys holds a skipped (13-image) item
TASKS = ["radar_wiki_animal", "radar_seephys", "radar_mmbench_ocr", "radar_mathvista"]
# accelerate is a dependency: its CLI through this interpreter, wherever the console script was installed (or not)
ACCELERATE = [sys.executable, "-m", "accelerate.commands.accelerate_cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(out: Path, task: str) -> dict:
    [path] = sorted(out.rglob(f"*_samples_{task}.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["sds"]["id"]: row["sds"] for row in rows}


def scored_per_rank(log: str) -> dict[int, int]:
    """rank -> questions scored (radar_hf logs its counters on every rank)."""
    counts = {}
    for rank, stats in re.findall(r"radar_hf rank (\d+)/\d+: questions scored (\{[^}]*\})", log):
        stats = json.loads(stats.replace("'", '"'))
        counts[int(rank)] = stats["shared"] + stats["per_candidate"]
    return counts


def test_two_processes_match_one(tmp_path):
    data = make_fixture(tmp_path / "M3-Bench")
    model = build_tiny_model(tmp_path / "tiny-qwen2_vl", "qwen2_vl")
    (tmp_path / "tmp").mkdir()
    # torch's elastic launcher keeps its logs in a temporary folder: this test's, not /tmp
    cache = {"HF_DATASETS_CACHE": str(tmp_path / "hf-cache"), "TMPDIR": str(tmp_path / "tmp")}
    args = lmms_cli.model_args(model)
    single = json.loads(run_in_process(args, ",".join(TASKS), tmp_path / "one", data, threads=1).read_text())
    single_log = (tmp_path / "one" / "lmms_eval.log").read_text()
    launcher = [
        *ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        "-m",
        "lmms_eval",
    ]
    env = {**cache, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    double, double_log = lmms_cli.run_for_results(
        args, ",".join(TASKS), tmp_path / "two", data=data, env=env, launcher=launcher, timeout=600
    )

    # it really ran on two ranks, which split the questions between them (a question is never split: the sum of
    # questions scored over the ranks is the single-process count, and no rank scored them all)
    assert "world size 2" in double_log, double_log[-3000:]
    one = scored_per_rank(single_log)
    two = scored_per_rank(double_log)
    assert set(one) == {0} and set(two) == {0, 1}, (one, two)
    assert sum(two.values()) == one[0] and 0 < two[0] < one[0]

    # the same numbers: every metric of every task, bootstrap stderrs included (records are sorted before the
    # seeded bootstrap, so the rank-by-rank gathering order does not matter)
    for task in TASKS:
        a, b = single["results"][task], double["results"][task]
        assert set(a) == set(b)
        for key, value in a.items():
            if not isinstance(value, (int, float)):
                continue
            assert b[key] == pytest.approx(value, abs=1e-6), (task, key)
        # and item by item
        items_a, items_b = samples(tmp_path / "one", task), samples(tmp_path / "two", task)
        assert set(items_a) == set(items_b)
        for item_id, rec in items_a.items():
            other = items_b[item_id]
            assert other["skipped"] == rec["skipped"] and other["correct"] == rec["correct"]
            if not rec["skipped"]:
                assert other["scores"] == pytest.approx(rec["scores"], abs=1e-6)
    assert list((tmp_path / "tmp").glob("torchelastic_*"))  # where the launcher wrote
    shutil.rmtree(tmp_path / "hf-cache", ignore_errors=True)
