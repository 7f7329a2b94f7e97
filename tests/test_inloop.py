"""radar_tasks.evaluate and RadarCallback: a model in memory scored as the CLI scores its checkpoint.

`evaluate` equals the sweep's results JSON (lmms-eval's CLI entry point) on the same weights and leaves the model's
modes and the random states as they were; the callback logs its scores into a real TensorBoard event file during
a three-step Trainer run; two processes (gloo) get the numbers of one, with DDP and with FSDP2 (every decoder layer
and vision block sharded), and run the same number of forwards.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TASKS_DP = "radar_wiki_animal,radar_seephys,radar_mmbench_ocr,radar_mathvista"  # mathvista: 5 items on 2 ranks


def _load(folder):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return (
        AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32),
        AutoProcessor.from_pretrained(folder),
    )


def test_importing_radar_tasks_stays_light():
    code = "import sys, radar_tasks; assert callable(radar_tasks.__getattr__); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_evaluate_equals_the_cli_on_the_same_weights(tiny_sweep, tiny_series, fixture_root):
    import numpy as np
    import torch

    import radar_tasks

    out, _, _ = tiny_sweep
    [results] = (out / "runs" / "step_200").glob("*/*_results.json")
    cli = json.loads(results.read_text())["results"]
    model, processor = _load(tiny_series / "step_200")
    model.train()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected_draws = (random.random(), np.random.rand(), float(torch.rand(1)))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    scores = radar_tasks.evaluate(model, processor, tasks=["radar_wiki_animal"], data_dir=fixture_root)
    assert abs(scores["radar_wiki_animal"]["sds"] - cli["radar_wiki_animal"]["sds,none"]) <= 1e-6
    for key, value in cli["radar_wiki_animal"].items():  # every metric, bootstrap stderrs included
        if isinstance(value, (int, float)):
            assert scores["radar_wiki_animal"][key.split(",")[0]] == pytest.approx(value, abs=1e-6), key
    assert model.training and torch.is_grad_enabled()
    assert (random.random(), np.random.rand(), float(torch.rand(1))) == expected_draws  # not reseeded


def test_callback_logs_into_tensorboard_during_training(tiny_series, fixture_root, tmp_path, monkeypatch):
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import Trainer, TrainingArguments

    from radar_tasks import RadarCallback
    from radar_tasks.demo import synthetic, training

    model, processor = _load(tiny_series / "step_100")
    rng = random.Random(0)
    examples = [synthetic.make_example(rng, "color") for _ in range(12)]
    placeholder = training._placeholder(model, processor)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    args = TrainingArguments(
        output_dir=str(tmp_path / "train"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=["tensorboard"],
        logging_steps=1,
        save_strategy="no",
        remove_unused_columns=False,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=lambda batch: training.encode_batch(processor, batch, placeholder),
    )
    callback = RadarCallback(
        processor, tasks=["radar_wiki_animal"], eval_steps=2, trainer=trainer, data_dir=fixture_root
    )
    trainer.add_callback(callback)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert [h["step"] for h in callback.history] == [2, 3]  # every 2 steps and at the end
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it did train
    events = [p for p in (tmp_path / "tb").rglob("events.out.tfevents.*")]
    assert events
    logged = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        if "eval/radar/radar_wiki_animal/sds" in acc.Tags()["scalars"]:
            logged.update({e.step: e.value for e in acc.Scalars("eval/radar/radar_wiki_animal/sds")})
    assert sorted(logged) == [2, 3]
    for tag in ("eval/radar/time_s", "eval/radar/forward_s"):  # what each evaluation cost
        costs = [e.value for path in events for e in _scalars(path, tag)]
        assert len(costs) == 2 and all(c > 0 for c in costs), tag
    for h in callback.history:
        assert logged[h["step"]] == pytest.approx(h["scores"]["radar_wiki_animal"]["sds"], abs=1e-6)
    assert model.training


def _scalars(path, tag: str) -> list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path))
    acc.Reload()
    return acc.Scalars(tag) if tag in acc.Tags()["scalars"] else []


@pytest.fixture(scope="module")
def one_process(tiny_series, fixture_root):
    import radar_tasks

    model, processor = _load(tiny_series / "step_200")
    return radar_tasks.evaluate(model, processor, TASKS_DP, data_dir=fixture_root)


def _torchrun(script: str, *args, out: Path, data: Path) -> list[dict]:
    """`torchrun --nproc_per_node 2 tests/data/<script> ARGS` on the M3-Bench at `data`: what each rank wrote
    (`out`/rank<r>.json)."""
    env = {**os.environ, "RADAR_M3BENCH_DIR": str(data), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(Path(__file__).parent / "data" / script), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _assert_close(scores: dict, expected: dict, tasks=None) -> None:
    """Every float of `expected` (one process) within 1e-6 in `scores`; the cost is not a score."""
    for task, row in expected.items():
        if task == "cost" or (tasks is not None and task not in tasks):
            continue
        for metric, value in row.items():
            if isinstance(value, float):
                assert scores[task][metric] == pytest.approx(value, abs=1e-6), (task, metric)


@pytest.fixture(scope="module")
def ranks_of(tiny_series, fixture_root, tmp_path_factory):
    """mode -> what the two ranks of tests/data/evaluate_ranks.py wrote (each mode run once per module)."""
    done = {}

    def get(mode: str) -> list[dict]:
        if mode not in done:
            out = tmp_path_factory.mktemp(mode)
            checkpoint = tiny_series / "step_200"
            done[mode] = _torchrun("evaluate_ranks.py", checkpoint, out, TASKS_DP, mode, out=out, data=fixture_root)
        return done[mode]

    return get


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_give_the_numbers_of_one(mode, one_process, ranks_of):
    ranks = ranks_of(mode)
    cost = [r["scores"].pop("cost") for r in ranks]
    assert ranks[0]["scores"] == ranks[1]["scores"] and cost[0] == cost[1]  # every rank returns the same dict
    # every forward of one rank has the structure of the other's at the same place (so FSDP's all-gathers pair up)
    assert ranks[0]["structures"] == ranks[1]["structures"] and any(ranks[0]["structures"])
    assert not all(ranks[0]["structures"])  # both structures ran: with the vision tower and without
    assert ranks[0]["forwards"] != ranks[1]["forwards"]  # the ranks' own work differed (5 MathVista items) ...
    for r in ranks:  # ... and dummies made up the difference
        assert r["forwards"] + r["dummies"] == len(r["structures"])
    assert cost[0]["dummy_forwards"] == max(r["dummies"] for r in ranks) > 0
    _assert_close(ranks[0]["scores"], one_process)
    items = {r["id"]: r["p"] for r in ranks[0]["scores"]["radar_mathvista"]["samples"]}
    assert len(items) == 5  # each question once: lmms-eval's padding copies are not counted
    assert not any(r["training"] for r in ranks)  # the model's mode as it was (eval)
    assert all(math.isfinite(r["loss_after"]) for r in ranks)  # and training goes on after it


def test_fsdp_scores_sharded_in_less_parameter_memory_than_gathered(one_process, ranks_of):
    """FSDP2's parameters stay sharded while scoring (one unit gathered at a time): less parameter memory per rank
    than `gather_parameters=True`, which holds every parameter whole beside the shards; the same numbers."""
    for rank in ranks_of("fsdp"):
        sharded, gathered = rank["peak_parameter_bytes"], rank["gathered"]["peak_parameter_bytes"]
        shards = gathered - rank["full_parameter_bytes"]  # gathered: the shards plus every parameter whole
        assert 0 < shards < rank["full_parameter_bytes"]
        assert shards < sharded < gathered
        _assert_close(rank["gathered"]["scores"], one_process, tasks={"radar_mathvista"})


def test_deepspeed_zero3_trainer_with_the_callback(one_process, tiny_series, fixture_root, tmp_path):
    """The transformers Trainer under DeepSpeed ZeRO-3 (partitioned parameters, CPU accelerator, gloo), three steps
    at learning rate 0 with RadarCallback evaluating at steps 2 and 3 (a training step between): every rank logs
    the numbers of one process scoring the checkpoint, both times."""
    pytest.importorskip("deepspeed")
    checkpoint = tiny_series / "step_200"
    ranks = _torchrun("deepspeed_ranks.py", checkpoint, tmp_path, "radar_mathvista", out=tmp_path, data=fixture_root)
    for rank in ranks:
        assert [h["step"] for h in rank["history"]] == [2, 3] and rank["training"]
        assert rank["held"] < rank["total"]  # ZeRO-3: each rank holds a partition of the parameters
        for h, first in zip(rank["history"], ranks[0]["history"]):
            assert h["scores"] == first["scores"]
            _assert_close(h["scores"], one_process, tasks={"radar_mathvista"})


def test_repeated_calls_are_quiet_and_give_the_numbers_of_a_fresh_process(tiny_series, fixture_root, tmp_path):
    """In a fresh process (tests/data/inloop_calls.py), calls 2 and 3 give every metric and stderr of call 1
    exactly, and write one line each (the headline, at INFO); a problem (a question longer than the model) is
    reported by the first call only; a verbose call shows lmms-eval's bars and lines again."""
    tasks = "radar_seephys,radar_mathvista_lite,radar_mmbench_ocr_lite"
    out = tmp_path / "calls.json"
    script = Path(__file__).parent / "data" / "inloop_calls.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_series / "step_200"), str(fixture_root), tasks, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    calls = json.loads(out.read_text())
    first, *repeated, verbose = calls
    for call in [*repeated, verbose]:
        assert call["scores"] == first["scores"]  # every metric and stderr, exactly
    lines = [[line for line in c["written"].split("\n") if line.strip()] for c in calls]
    not_scored = "not scored, counted as skipped"
    # the long SeePhys question, said once (by the job's sink: lmms-eval's own prints its warnings too)
    assert sum(line.startswith("WARNING ") and not_scored in line for line in lines[0]) == 1
    for written in lines[1:3]:
        assert len(written) <= 3 and not any(not_scored in line for line in written)
        assert [line for line in written if line.startswith("INFO radar_tasks.evaluate: radar_seephys sds")]
    assert len(lines[3]) > 10 and any("Postprocessing" in line for line in lines[3])  # verbose: bars, INFO lines
    for call in calls:
        cost = call["cost"]
        assert 0 < cost["forward_s"] <= cost["time_s"] and cost["forwards"] > 0 and cost["dummy_forwards"] == 0
    assert first["scores"]["radar_seephys"]["skipped"] >= 1


def test_a_changed_file_is_read_again_by_the_next_call(tiny_series, fixture_root, tmp_path, monkeypatch):
    """The task objects kept between calls belong to the data they were built from: an item removed from one
    category's json file shows in the next call, whose other categories come from memory (not read again)."""
    import shutil

    import radar_tasks
    from radar_tasks.data import m3bench

    bench = tmp_path / "M3-Bench"
    shutil.copytree(fixture_root, bench)
    model, processor = _load(tiny_series / "step_200")
    tasks = ["radar_mathvista", "radar_wiki_animal"]
    before = radar_tasks.evaluate(model, processor, tasks, data_dir=bench)
    read = []
    original = m3bench._generate
    monkeypatch.setattr(m3bench, "_generate", lambda r, s, c, *a: read.append(c) or original(r, s, c, *a))
    [path] = (bench / "mathematical_reasoning").glob("*.json")
    data = json.loads(path.read_text())
    data.pop(next(iter(data)))
    path.write_text(json.dumps(data))
    after = radar_tasks.evaluate(model, processor, tasks, data_dir=bench)
    assert read == ["mathvista"]  # read and validated again: the changed category only
    assert (before["radar_mathvista"]["items"], after["radar_mathvista"]["items"]) == (len(data) + 1, len(data))
    assert after["radar_wiki_animal"] == before["radar_wiki_animal"]


def test_the_first_evaluate_of_a_process_is_checked_before_scoring(tiny_checkpoint, fixture_root, tmp_path):
    """In a fresh process (no TaskManager built yet), bad data stops `evaluate` with the pre-flight's one-line
    InputError, not with lmms-eval's retries ending in a RetryError."""
    import shutil

    bench = tmp_path / "M3-Bench"
    shutil.copytree(fixture_root, bench)
    [path] = (bench / "Wiki_animal_identification").glob("*.json")
    path.write_text(path.read_text()[:40])
    code = (
        "import sys, radar_tasks\n"
        "from radar_tasks.errors import InputError\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n"
        f"folder = {str(tiny_checkpoint('qwen2_vl'))!r}\n"
        "model = AutoModelForImageTextToText.from_pretrained(folder)\n"
        "processor = AutoProcessor.from_pretrained(folder)\n"
        "try:\n"
        f"    radar_tasks.evaluate(model, processor, tasks=['radar_wiki_animal'], data_dir={str(bench)!r})\n"
        "except InputError as exc:\n"
        "    print('InputError:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].startswith(f"InputError: {path.relative_to(bench)}: malformed JSON")
