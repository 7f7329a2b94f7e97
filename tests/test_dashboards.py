"""radar_tasks.dashboards through `sweep(..., wandb=..., tensorboard=...)`: each checkpoint logged once at its
training step (shards out of order, a rerun that logs nothing), read back from W&B's offline run files and from
TensorBoard's event files; the report uploaded to the W&B run; the missing extra as one line.

A small evaluator writes results JSONs the way lmms-eval lays them out (values from the step, so every checkpoint's
are different); the expected values are read back from those JSON files by the test itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from radar_tasks import cli, sweep

TASKS = "radar_wiki_animal,radar_spatial"
STEPS = (100, 200, 300)


def _checkpoint(folder: Path, tokens: int) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    header = json.dumps({"w": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}).encode()
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    (folder / "trainer_state.json").write_text(json.dumps({"num_input_tokens_seen": tokens}))


def evaluate(checkpoint, tasks, output_path, data_dir, **options):
    """Results of groups, subsets and one category leaf, as lmms-eval writes them (stderr "N/A" included)."""
    step = int(Path(checkpoint).name.split("_")[1])
    entries = {
        "radar_mmm": {
            "sds,none": 0.3 + step / 1e4,
            "sds_stderr,none": 0.01,
            "acc,none": 0.25 + step / 2e4,
            "acc_stderr,none": "N/A",
            "items,none": 9,
            "skipped,none": 1,
            "sds_perception,none": 0.31 + step / 1e4,
            "sds_reasoning,none": 0.29 + step / 1e4,
        },
        "radar_wiki_animal": {"sds,none": 0.4 + step / 1e4, "sds_stderr,none": 0.02, "items,none": 4},
        "radar_spatial": {"sds,none": 0.2 + step / 1e4, "items,none": 5, "skipped,none": 1},
        "radar_mmbench_ocr": {"sds,none": 0.9},  # a category of a multi-category subset: not logged
    }
    folder = Path(output_path) / "model"
    folder.mkdir(parents=True)
    path = folder / f"20260101_000{step // 100}00_results.json"
    path.write_text(json.dumps({"results": entries, "configs": {}}))
    return path


def expected_rows(out: Path) -> dict[int, dict[str, float]]:
    """step -> the numbers each checkpoint should log, read from its results JSON (not through radar_tasks)."""
    rows = {}
    for step in STEPS:
        [path] = (out / "runs" / f"step_{step}").glob("*/*_results.json")
        entries = json.loads(path.read_text())["results"]
        row = {}
        for task, fields in entries.items():
            if task == "radar_mmbench_ocr":
                continue
            for key, value in fields.items():
                if isinstance(value, (int, float)):
                    row[f"eval/radar/{task}/{key.split(',')[0]}"] = float(value)
        rows[step] = row
    return rows


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    for step in STEPS:
        _checkpoint(folder / f"step_{step}", tokens=step * 1000)
    return folder


def _sweep(run, root, out, lines=None, **kw):
    return sweep.sweep(
        [str(run / "step_*")],
        TASKS,
        out,
        data_dir=root,
        evaluate_fn=evaluate,
        print_fn=(lines if lines is not None else []).append,
        **kw,
    )


def wandb_history(folder: Path) -> list[dict]:
    """Every history row of the offline W&B runs under `folder`, read from their .wandb transaction logs."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    rows = []
    for path in sorted(folder.rglob("run-*.wandb")):
        store = DataStore()
        store.open_for_scan(str(path))
        while True:
            data = store.scan_data()
            if data is None:
                break
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                row = {}
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    row[key] = json.loads(item.value_json)
                rows.append(row)
    return rows


def test_wandb_offline_logs_every_checkpoint_once_at_its_step(run, fixture_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    lines: list[str] = []
    # the second shard first (step_200), then the first (step_100, step_300): out of step order
    _sweep(run, fixture_root, out, lines, shard="2/2", wandb="radar-tests/sweep-a", report=False)
    _sweep(run, fixture_root, out, lines, shard="1/2", wandb="radar-tests/sweep-a", report=False)
    assert "dashboards: 1 checkpoint(s) logged to W&B radar-tests/sweep-a" in lines
    assert "dashboards: 2 checkpoint(s) logged to W&B radar-tests/sweep-a" in lines
    runs_before = sorted((tmp_path / "wandb").rglob("offline-run-*"))
    assert len(runs_before) == 2
    # a rerun of the finished sweep: nothing evaluated, nothing logged, no W&B run opened
    again = _sweep(run, fixture_root, out, lines, wandb="radar-tests/sweep-a", report=False)
    assert [o.status for o in again.outcomes] == ["skipped"] * 3
    assert sorted((tmp_path / "wandb").rglob("offline-run-*")) == runs_before

    history = wandb_history(tmp_path / "wandb")
    assert sorted(row["train/global_step"] for row in history) == list(STEPS)  # each checkpoint once
    expected = expected_rows(out)
    for row in history:
        step = row["train/global_step"]
        assert row["train/num_input_tokens_seen"] == step * 1000
        logged = {k: v for k, v in row.items() if k.startswith("eval/radar/")}
        assert logged.keys() == expected[step].keys()
        for key, value in expected[step].items():
            assert logged[key] == pytest.approx(value, abs=1e-12)


def test_the_report_is_uploaded_to_the_wandb_run_that_logged(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from radar_tasks.checkpoints import Checkpoint
    from radar_tasks.dashboards import Dashboards

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    report = tmp_path / "out" / "report"
    (report / "figures").mkdir(parents=True)
    files = {"report.html": "<html>page</html>", "report.md": "# report", "figures/radar_sds.png": "png bytes"}
    for name, text in files.items():
        (report / name).write_text(text)
    results = evaluate(tmp_path / "step_100", TASKS, tmp_path / "o", None)
    boards = Dashboards(tmp_path / "out", wandb="radar-tests/upload")
    assert boards.log([(Checkpoint(tmp_path / "step_100", 100), results)]) == 1
    boards.finish(report)
    [files_dir] = (tmp_path / "wandb").rglob("offline-run-*/files")
    for name, text in files.items():
        assert (files_dir / "report" / name).read_text() == text
    # a destination that logged nothing uploads nothing and opens no run
    idle = Dashboards(tmp_path / "out", wandb="radar-tests/upload")
    assert idle.log([(Checkpoint(tmp_path / "step_100", 100), results)]) == 0  # logged already
    idle.finish(report)
    assert len(list((tmp_path / "wandb").rglob("offline-run-*"))) == 1


def test_tensorboard_scalars_at_each_step_read_back_with_tensorboards_reader(run, fixture_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, tb = tmp_path / "out", tmp_path / "tb"
    _sweep(run, fixture_root, out, shard="2/2", tensorboard=tb, report=False)
    _sweep(run, fixture_root, out, shard="1/2", tensorboard=tb, report=False)
    _sweep(run, fixture_root, out, tensorboard=tb, report=False)  # a rerun: logs nothing
    scalars: dict[str, list[tuple[int, float]]] = {}
    files = sorted(tb.glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per sweep that logged something
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    expected = expected_rows(out)
    assert set(scalars) == set(expected[100]) | {"train/num_input_tokens_seen"}
    for tag, points in scalars.items():
        assert sorted(step for step, _ in points) == list(STEPS)  # each step once
        for step, value in points:
            want = step * 1000 if tag == "train/num_input_tokens_seen" else expected[step][tag]
            assert value == pytest.approx(want, rel=1e-6)  # event files hold float32


def test_a_missing_extra_is_one_line_naming_it(run, fixture_root, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    code = cli.main(
        [
            "sweep",
            str(run / "step_*"),
            "--tasks",
            TASKS,
            "--out",
            str(tmp_path / "out"),
            "--data",
            str(fixture_root),
            "--wandb",
            "proj",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ['error: --wandb needs the wandb package: pip install "radar-tasks[wandb]"']
    assert not list((tmp_path / "out").glob("runs/step_*"))  # nothing evaluated


def test_bad_wandb_run_id_is_refused_before_anything_runs(run, fixture_root, tmp_path):
    with pytest.raises(sweep.SweepError, match="RUN is a W&B run id"):
        _sweep(run, fixture_root, tmp_path / "out", wandb="proj/bad id!")


def test_checkpoint_metrics_leave_out_categories_and_non_numbers(tmp_path):
    from radar_tasks.dashboards import checkpoint_metrics
    from radar_tasks.results import Results

    path = evaluate(tmp_path / "step_100", TASKS, tmp_path / "o", None)
    metrics = checkpoint_metrics(Results.read(path))
    assert "eval/radar/radar_mmm/acc_stderr" not in metrics  # "N/A"
    assert not any("radar_mmbench_ocr" in k for k in metrics)
    assert metrics["eval/radar/radar_mmm/sds_perception"] == pytest.approx(0.32)
    assert all(math.isfinite(v) for v in metrics.values())
