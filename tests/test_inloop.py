"""radar_tasks.evaluate and RadarCallback: a model in memory scored as the CLI scores its checkpoint.

`evaluate` equals the sweep's results JSON (lmms-eval's CLI entry point) on the same weights and leaves the model's
modes and the random states as they were; the callback logs its scores into a real TensorBoard event file during
a three-step Trainer run; two processes (gloo) get the numbers of one, with DDP and with FSDP2 (every decoder layer
and vision block sharded), and run the same number of forwards.
"""

from __future__ import annotations

import json
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
    for h in callback.history:
        assert logged[h["step"]] == pytest.approx(h["scores"]["radar_wiki_animal"]["sds"], abs=1e-6)
    assert model.training


@pytest.fixture(scope="module")
def one_process(tiny_series, fixture_root):
    import radar_tasks

    model, processor = _load(tiny_series / "step_200")
    return radar_tasks.evaluate(model, processor, TASKS_DP, data_dir=fixture_root)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_give_the_numbers_of_one(mode, one_process, tiny_series, fixture_root, tmp_path):
    worker = Path(__file__).parent / "data" / "evaluate_ranks.py"
    env = {**os.environ, "RADAR_M3BENCH_DIR": str(fixture_root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(worker),
        str(tiny_series / "step_200"),
        str(tmp_path),
        TASKS_DP,
        mode,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["scores"] == ranks[1]["scores"]  # every rank returns the same dict
    assert ranks[0]["forwards"] == ranks[1]["forwards"] > 0  # and ran as many forwards
    assert ranks[0]["padded"] + ranks[1]["padded"] > 0  # the ranks' own work differed (5 MathVista items)
    for task, row in one_process.items():
        for metric, value in row.items():
            if isinstance(value, float):
                assert ranks[0]["scores"][task][metric] == pytest.approx(value, abs=1e-6), (task, metric)
    items = {r["id"]: r["p"] for r in ranks[0]["scores"]["radar_mathvista"]["samples"]}
    assert len(items) == 5  # each question once: lmms-eval's padding copies are not counted


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
