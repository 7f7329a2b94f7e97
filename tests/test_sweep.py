"""radar_tasks.sweep (with radar_tasks.checkpoints and radar_tasks.resume): checkpoint order, weights completeness,
shards, resume (interrupted and killed), the report.

Fast tests drive `sweep()` with a small evaluator that writes a results JSON the way lmms-eval lays it out (the
sweep's own logic: order, skip, atomic folders, shards, watch); the slow ones run lmms-eval itself: a
three-checkpoint sweep in process (the module fixture), a second run that evaluates nothing, and a sweep killed
mid-checkpoint and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from radar_tasks import checkpoints, resume, sweep
from radar_tasks.cli import main as radar_cli

TASKS = "radar_wiki_animal,radar_spatial"


# ---------------------------------------------------------------------------------------------------- order


@pytest.mark.parametrize(
    "name, step",
    [
        ("step_1000", 1000),
        ("step-1000", 1000),
        ("checkpoint-1000", 1000),
        ("iter_0001000", 1000),
        ("global_step1000", 1000),
        ("ckpt_e3_1000", 1000),
        ("run7", 7),
        ("final", None),
        ("step_1000_old", None),
    ],
)
def test_parse_step(name, step):
    assert checkpoints.parse_step(name) == step


def _ckpt(folder: Path, trainer_tokens: int | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    _safetensors(folder / "model.safetensors", 64)
    if trainer_tokens is not None:
        (folder / "trainer_state.json").write_text(
            json.dumps({"global_step": 1, "num_input_tokens_seen": trainer_tokens})
        )
    return folder


def _safetensors(path: Path, n_bytes: int, truncate: int = 0) -> None:
    header = json.dumps({"w": {"dtype": "U8", "shape": [n_bytes], "data_offsets": [0, n_bytes]}}).encode()
    data = len(header).to_bytes(8, "little") + header + bytes(n_bytes)
    path.write_bytes(data[: len(data) - truncate])


def test_checkpoints_are_ordered_by_step_with_tokens_from_trainer_state_or_manifest(tmp_path):
    run = tmp_path / "run"
    for step in (1000, 200, 30):
        _ckpt(run / f"checkpoint-{step}", trainer_tokens=step * 10 if step != 200 else None)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"- run: {run / 'checkpoint-200'}\n  tokens: 5k\n  series: mine\n")
    found = checkpoints.list_checkpoints([str(run / "checkpoint-*")], manifest)
    assert [c.step for c in found] == [30, 200, 1000]
    assert [c.labels.get("tokens") for c in found] == [300, "5k", 10000]
    assert [c.labels["series"] for c in found] == ["run", "mine", "run"]


def test_steps_known_for_some_checkpoints_only_is_an_error(tmp_path):
    _ckpt(tmp_path / "step_5")
    _ckpt(tmp_path / "final")
    with pytest.raises(checkpoints.CheckpointError, match="no training step in the folder name of final"):
        checkpoints.list_checkpoints([str(tmp_path / "*")])


def test_two_checkpoints_of_one_name_are_refused(tmp_path):
    _ckpt(tmp_path / "a" / "step_5")
    _ckpt(tmp_path / "b" / "step_5")
    with pytest.raises(checkpoints.CheckpointError, match="two checkpoints named step_5"):
        checkpoints.list_checkpoints([str(tmp_path / "a" / "step_5"), str(tmp_path / "b" / "step_5")])


def test_weights_problem_sees_a_truncated_or_missing_shard(tmp_path):
    ok = _ckpt(tmp_path / "ok")
    assert checkpoints.weights_problem(ok) is None
    cut = _ckpt(tmp_path / "cut")
    _safetensors(cut / "model.safetensors", 64, truncate=10)
    assert "of" in checkpoints.weights_problem(cut) and "bytes" in checkpoints.weights_problem(cut)
    sharded = _ckpt(tmp_path / "sharded")
    (sharded / "model.safetensors").unlink()
    _safetensors(sharded / "model-00001-of-00002.safetensors", 8)
    assert "model-00002-of-00002.safetensors not written yet" in checkpoints.weights_problem(sharded)
    _safetensors(sharded / "model-00002-of-00002.safetensors", 8)
    assert checkpoints.weights_problem(sharded) is None
    assert checkpoints.weights_problem(tmp_path / "ok" / "..") == "no config.json"


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_shards_cover_every_checkpoint_once_and_keep_their_share_as_the_run_grows(n):
    series = [checkpoints.Checkpoint(Path(f"/r/step_{k}"), k) for k in range(0, 1100, 100)]
    shares = [sweep.share(series, (i, n)) for i in range(1, n + 1)]
    names = [c.name for s in shares for c in s]
    assert sorted(names) == sorted(c.name for c in series) and len(names) == len(set(names))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    grown = series + [checkpoints.Checkpoint(Path("/r/step_1100"), 1100)]
    for i, before in enumerate(shares, 1):
        assert set(c.name for c in before) <= set(c.name for c in sweep.share(grown, (i, n)))


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_one_line(text):
    with pytest.raises(sweep.SweepError, match="expected I/N"):
        sweep.parse_shard(text)


def test_model_args_are_normalized_and_pretrained_refused():
    assert sweep.normalize_model_args("dtype=float32, device=cpu") == "device=cpu,dtype=float32"
    with pytest.raises(sweep.SweepError, match="leave out pretrained"):
        sweep.normalize_model_args("pretrained=x,device=cpu")


# --------------------------------------------------------------------------------- resume with a small evaluator


class Recorder:
    """An evaluator that writes what lmms-eval writes (results JSON under a model folder), or fails on request."""

    def __init__(self):
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def __call__(self, checkpoint, tasks, output_path, data_dir, **options):
        self.calls.append(Path(checkpoint).name)
        folder = Path(output_path) / "model"
        folder.mkdir(parents=True)
        if Path(checkpoint).name in self.fail:
            raise KeyboardInterrupt if "interrupt" in self.fail else RuntimeError("lmms-eval wrote no results")
        step = checkpoints.parse_step(Path(checkpoint).name) or 0
        results = {
            "results": {t: {"sds,none": step / 1000, "acc,none": 0.5, "items,none": 4} for t in tasks.split(",")},
            "configs": {},
        }
        path = folder / f"20260101_0000{len(self.calls):02d}_results.json"
        path.write_text(json.dumps(results))
        return path


@pytest.fixture
def fake_run(tmp_path, fixture_root):
    run = tmp_path / "run"
    for step in (100, 200, 300):
        _ckpt(run / f"step_{step}")
    return run, fixture_root


def _sweep(run, root, out, recorder, **kw):
    lines = []
    result = sweep.sweep(
        [str(run / "step_*")], TASKS, out, data_dir=root, evaluate_fn=recorder, print_fn=lines.append, **kw
    )
    return result, lines


def test_a_finished_checkpoint_is_skipped_and_an_interrupted_one_redone(fake_run, tmp_path):
    run, root = fake_run
    out = tmp_path / "out"
    rec = Recorder()
    rec.fail = {"step_200", "interrupt"}
    with pytest.raises(KeyboardInterrupt):  # the process dies in the middle of step_200
        _sweep(run, root, out, rec)
    assert (out / "runs" / "step_100" / resume.SWEEP_FILE).exists() and not (out / "runs" / "step_200").exists()
    partials = list((out / "runs").glob(".step_200.partial-*"))
    assert len(partials) == 1
    # as if its process had died (this test's process lives on)
    os.rename(partials[0], partials[0].with_name(partials[0].name.rsplit("-", 1)[0] + "-999999999"))
    rec2 = Recorder()
    result, lines = _sweep(run, root, out, rec2)
    assert rec2.calls == ["step_200", "step_300"]  # step_100 is not evaluated twice
    assert [o.status for o in result.outcomes] == ["skipped", "evaluated", "evaluated"]
    assert "skipped" in lines[0] and "evaluated" in lines[1]
    assert not list((out / "runs").glob(".*"))  # no partial folder is left
    runs_csv = (out / "report" / "runs.csv").read_text().splitlines()
    assert [r.split(",")[2] for r in runs_csv[1:]] == ["100", "200", "300"]
    # other tasks, other model args or other weights: evaluated again
    assert (
        _sweep(run, root, out, Recorder(), model_args="device=cpu", report=False)[0].outcomes[0].status == "evaluated"
    )
    (run / "step_100" / "config.json").write_text('{"changed": 1}')
    result, _ = _sweep(run, root, out, Recorder(), model_args="device=cpu", report=False)
    assert [o.status for o in result.outcomes] == ["evaluated", "skipped", "skipped"]


def test_a_failing_checkpoint_does_not_stop_the_sweep_and_is_reported(fake_run, tmp_path):
    run, root = fake_run
    rec = Recorder()
    rec.fail = {"step_200"}
    result, lines = _sweep(run, root, tmp_path / "out", rec, report=False)
    assert [o.status for o in result.outcomes] == ["evaluated", "failed", "evaluated"]
    kept = tmp_path / "out" / "runs" / "step_200.failed"
    assert lines[1].startswith("[2/3] step_200: FAILED after ")
    assert lines[1].endswith(f": RuntimeError: lmms-eval wrote no results (log: {kept})")
    assert not (tmp_path / "out" / "runs" / "step_200").exists()
    assert json.loads((kept / "failure.json").read_text())["cause"] == "RuntimeError: lmms-eval wrote no results"
    assert (kept / "model").is_dir()  # what the evaluation wrote is kept with it
    # a later sweep retries it; once it has results the kept failure goes
    rec2 = Recorder()
    result, lines = _sweep(run, root, tmp_path / "out", rec2, report=False)
    assert rec2.calls == ["step_200"] and [o.status for o in result.outcomes] == ["skipped", "evaluated", "skipped"]
    assert not kept.exists() and (tmp_path / "out" / "runs" / "step_200" / resume.SWEEP_FILE).is_file()


def test_ablate_images_evaluates_each_checkpoint_twice_and_resumes_both(fake_run, tmp_path):
    run, root = fake_run
    out = tmp_path / "out"
    seen = []

    class Args(Recorder):
        def __call__(self, checkpoint, tasks, output_path, data_dir, **options):
            seen.append((Path(checkpoint).name, Path(output_path).name, options["model_args"]))
            return super().__call__(checkpoint, tasks, output_path, data_dir, **options)

    rec = Args()
    rec.fail = {"step_200"}  # fails in both runs of step_200
    result, lines = _sweep(run, root, out, rec, model_args="device=cpu", ablate_images="none", report=False)
    assert [(o.checkpoint.name, o.variant, o.status) for o in result.outcomes] == [
        ("step_100", "", "evaluated"),
        ("step_100", " (images=none)", "evaluated"),
        ("step_200", "", "failed"),
        ("step_200", " (images=none)", "failed"),
        ("step_300", "", "evaluated"),
        ("step_300", " (images=none)", "evaluated"),
    ]
    assert seen[:2] == [
        ("step_100", f".step_100.partial-{resume.socket.gethostname()}-{os.getpid()}", "device=cpu"),
        (
            "step_100",
            f".step_100.images-none.partial-{resume.socket.gethostname()}-{os.getpid()}",
            "device=cpu,images=none",
        ),
    ]
    assert lines[1].startswith("[1/3] step_100 (images=none): evaluated")
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "step_100",
        "step_100.images-none",
        "step_200.failed",  # each failed run keeps its log, the ablated one too
        "step_200.images-none.failed",
        "step_300",
        "step_300.images-none",
    ]
    meta = json.loads((out / "runs" / "step_100.images-none" / resume.SWEEP_FILE).read_text())
    assert meta["key"]["model_args"] == "device=cpu,images=none"
    # again: both runs of the finished checkpoints are skipped, both of step_200 evaluated
    seen.clear()
    result, _ = _sweep(run, root, out, Args(), model_args="device=cpu", ablate_images="none", report=False)
    assert [o.status for o in result.outcomes] == ["skipped", "skipped", "evaluated", "evaluated", "skipped", "skipped"]
    assert not list((out / "runs").glob("*.failed"))  # both kept failures go once their runs succeed
    assert [name for name, _, _ in seen] == ["step_200", "step_200"]
    # the report (written once: everything skipped) labels the runs without images apart
    _sweep(run, root, out, Args(), model_args="device=cpu", ablate_images="none")
    labels = [line.split(",")[0] for line in (out / "report" / "runs.csv").read_text().splitlines()[1:]]
    assert labels == [f"step_{s}" for s in (100, 200, 300)] + [f"step_{s} (images=none)" for s in (100, 200, 300)]
    with pytest.raises(sweep.SweepError, match="leave out images"):
        _sweep(run, root, out, Args(), model_args="images=blank", ablate_images="none")
    with pytest.raises(sweep.SweepError, match="expected one of none, blank"):
        _sweep(run, root, out, Args(), ablate_images="grey")


def test_ablate_images_flag_defaults_to_none():
    from radar_tasks.cli import build_parser

    def parsed(*extra):
        return build_parser().parse_args(["sweep", "ckpt", "--tasks", "t", "--out", "o", *extra]).ablate_images

    assert (parsed(), parsed("--ablate-images"), parsed("--ablate-images", "blank")) == (None, "none", "blank")


def test_a_bare_ablate_images_before_the_checkpoints_keeps_them(monkeypatch):
    from radar_tasks import cli

    seen = {}
    monkeypatch.setattr(cli, "_sweep", lambda args: seen.update(vars(args)) or 0)
    argv = ["sweep", "--ablate-images", "ckpt/step_1", "ckpt/step_2", "--tasks", "t", "--out", "o"]
    assert cli.main(argv) == 0
    assert seen["checkpoints"] == ["ckpt/step_1", "ckpt/step_2"] and seen["ablate_images"] == "none"
    assert cli.main([*argv[:2], "blank", *argv[2:]]) == 0 and seen["ablate_images"] == "blank"


def test_shards_together_evaluate_the_series_once(fake_run, tmp_path):
    run, root = fake_run
    out = tmp_path / "out"
    recs = [Recorder(), Recorder()]
    for i, rec in enumerate(recs, 1):
        _sweep(run, root, out, rec, shard=f"{i}/2")
    assert sorted(recs[0].calls + recs[1].calls) == ["step_100", "step_200", "step_300"]
    assert recs[0].calls == ["step_100", "step_300"]
    # the report of the last shard holds all three
    assert len((out / "report" / "runs.csv").read_text().splitlines()) == 4


def test_watch_evaluates_a_checkpoint_once_its_weights_are_written(fake_run, tmp_path):
    run, root = fake_run
    late = run / "step_400"
    _ckpt(late)
    _safetensors(late / "model.safetensors", 64, truncate=30)  # still being written

    def finish_writing():
        time.sleep(1.5)
        _safetensors(late / "model.safetensors", 64)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    rec = Recorder()
    lines = []
    sweep.sweep(
        [str(run / "step_100")],
        TASKS,
        tmp_path / "out",
        data_dir=root,
        evaluate_fn=rec,
        print_fn=lines.append,
        watch=3,
        poll=0.3,
        report=False,
    )  # a folder given: its siblings step_* are watched
    writer.join()
    assert rec.calls == ["step_100", "step_200", "step_300", "step_400"]
    assert "no new checkpoint" in lines[-1]


def test_incomplete_weights_without_watch_are_reported_not_evaluated(fake_run, tmp_path):
    run, root = fake_run
    _safetensors(run / "step_300" / "model.safetensors", 64, truncate=5)
    rec = Recorder()
    result, lines = _sweep(run, root, tmp_path / "out", rec, report=False)
    assert rec.calls == ["step_100", "step_200"]
    assert result.failed[0].status == "incomplete" and "not completely written" in lines[-1]


# ------------------------------------------------------------------------------------------- lmms-eval itself


@pytest.mark.slow
def test_three_checkpoints_give_three_results_and_a_report_by_step(tiny_sweep, tiny_series, fixture_root):
    out, result, first_seconds = tiny_sweep
    assert [o.status for o in result.outcomes] == ["evaluated"] * 3
    jsons = sorted(out.glob("runs/step_*/*/*_results.json"))
    assert [p.parts[-3] for p in jsons] == ["step_100", "step_200", "step_300"]
    sds = [json.loads(p.read_text())["results"]["radar_wiki_animal"]["sds,none"] for p in jsons]
    assert len(set(sds)) == 3  # three different models
    rows = (out / "report" / "runs.csv").read_text().splitlines()
    assert [r.split(",")[2] for r in rows[1:]] == ["100", "200", "300"]
    # the same command again: nothing evaluated, much faster (no lmms-eval import, no report rewrite)
    t0 = time.monotonic()
    again = sweep.sweep(
        [str(tiny_series / "step_*")],
        TASKS,
        out,
        model_args="dtype=float32,device=cpu",
        data_dir=fixture_root,
        print_fn=lambda _line: None,
    )
    assert [o.status for o in again.outcomes] == ["skipped"] * 3
    assert time.monotonic() - t0 < 0.4 * first_seconds


@pytest.mark.slow
def test_a_sweep_killed_mid_checkpoint_resumes_without_counting_twice(tiny_series, fixture_root, tmp_path, capsys):
    out = tmp_path / "S"
    cmd = [
        sys.executable,
        "-m",
        "radar_tasks.cli",
        "sweep",
        str(tiny_series / "step_*"),
        "--tasks",
        TASKS,
        "--model_args",
        "device=cpu,dtype=float32",
        "--out",
        str(out),
        "--data",
        str(fixture_root),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill it (SIGKILL: no clean-up of any kind) while it evaluates step_200
        deadline = time.monotonic() + 300
        while not (
            (out / "runs" / "step_100" / resume.SWEEP_FILE).exists() and list((out / "runs").glob(".step_200.*"))
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = (out / "runs" / "step_100" / resume.SWEEP_FILE).stat().st_mtime_ns
    capsys.readouterr()
    assert radar_cli(cmd[3:]) == 0  # the same sweep again, in this process: it resumes
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert "step_100: skipped" in lines[0] and "step_200: evaluated" in lines[1] and "step_300: evaluated" in lines[2]
    assert (out / "runs" / "step_100" / resume.SWEEP_FILE).stat().st_mtime_ns == first
    assert not list((out / "runs").glob(".*"))
    for step in (100, 200, 300):
        assert len(list((out / "runs" / f"step_{step}").glob("*/*_results.json"))) == 1
    rows = (out / "report" / "runs.csv").read_text().splitlines()
    assert [r.split(",")[2] for r in rows[1:]] == ["100", "200", "300"]
