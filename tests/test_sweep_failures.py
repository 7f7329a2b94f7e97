"""A failed checkpoint says why and keeps its log: `runner.log_cause` on logs holding real Python tracebacks, and
`radar-tasks sweep` through lmms-eval over a broken config.json, an unknown model_type and a truncated safetensors
file (exit status, printed lines, kept files, retry)."""

from __future__ import annotations

import io
import json
import shutil
import traceback
from pathlib import Path

import pytest

from radar_tasks import cli, resume, runner


def _log_of(fn) -> str:
    """What lmms-eval's CLI writes when an evaluation raises: the traceback, then its loguru ERROR line."""
    buf = io.StringIO()
    try:
        fn()
    except Exception as exc:
        traceback.print_exc(file=buf)
        where = "lmms_eval.__main__:cli_evaluate:614"
        buf.write(f"2026-12-06 22:30:47 | ERROR    | {where} - Error during evaluation: {exc}.\n")
    return "$ lmms-eval --model radar_hf ...\nloading\n" + buf.getvalue()


def test_log_cause_is_the_last_exception_with_the_root_of_its_chain(tmp_path):
    text = '{"model_type": "qwen2_vl",\n  "hidden_size": 64,,\n}'
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        root = f"JSONDecodeError: {exc}"

    def load():
        try:
            json.loads(text)
        except json.JSONDecodeError:
            raise OSError("It looks like the config file at '/c/config.json' is not a valid JSON file.")  # noqa: B904

    log = tmp_path / "a.log"
    log.write_text(_log_of(load))
    assert runner.log_cause(log) == (
        f"OSError: It looks like the config file at '/c/config.json' is not a valid JSON file. (caused by {root})"
    )
    assert "line 2 column 21" in root  # the place in the file

    def plain():
        raise ValueError("model type `x` is not known\nsecond line")

    log.write_text(_log_of(plain))
    assert runner.log_cause(log) == "ValueError: model type `x` is not known"
    log.write_text("start\nerror: spatial_reasoning/x.json: item 3: no answer\nTraceback (most recent call last):\n")
    assert runner.log_cause(log) == "spatial_reasoning/x.json: item 3: no answer"  # radar_tasks' own line wins
    log.write_text("x\n2026-12-06 | ERROR    | lmms_eval.__main__:cli_evaluate:614 - Tasks not found: foo\n")
    assert runner.log_cause(log) == "Tasks not found: foo"
    log.write_text("nothing useful\n")
    assert runner.log_cause(log) is None
    failed = runner.RunFailed("lmms-eval wrote no results into X", log)
    assert runner.describe_failure(failed) == "lmms-eval wrote no results; the last line of its log: nothing useful"
    assert runner.describe_failure(KeyError("k")) == "KeyError: 'k'"


def _truncate(path: Path, n: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-n])


@pytest.mark.slow
def test_failed_checkpoints_say_why_keep_their_logs_and_are_tried_again(tiny_series, fixture_root, tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    for step in (100, 200, 300, 400):
        shutil.copytree(tiny_series / "step_100", run / f"step_{step}")
    config = (tiny_series / "step_100" / "config.json").read_text()
    broken = config.replace('"model_type"', '"model_type",', 1)  # a stray comma: invalid JSON
    (run / "step_200" / "config.json").write_text(broken)
    try:
        json.loads(broken)
    except json.JSONDecodeError as exc:
        json_error = f"JSONDecodeError: {exc}"  # the message with its line and column
    (run / "step_300" / "config.json").write_text(json.dumps({**json.loads(config), "model_type": "no_such_model"}))
    _truncate(run / "step_400" / "model.safetensors", 100)  # its header promises 100 bytes more

    argv = ["sweep", str(run / "step_*"), "--tasks", "radar_spatial", "--out", str(out), "--data", str(fixture_root)]
    argv += ["--model_args", "device=cpu,dtype=float32"]
    assert cli.main(argv) == 1
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if "step_" in line]
    runs = out / "runs"
    log200, log300 = runs / "step_200.failed" / "lmms_eval.log", runs / "step_300.failed" / "lmms_eval.log"
    cause200 = (
        f"OSError: It looks like the config file at '{run / 'step_200' / 'config.json'}' is not a valid JSON file. "
        f"(caused by {json_error})"
    )
    assert lines[0].startswith("[1/4] step_100: evaluated in ")
    assert lines[1].startswith("[2/4] step_200: FAILED after ")
    assert lines[1].endswith(f": {cause200} (log: {log200})")
    assert lines[2].startswith("[3/4] step_300: FAILED after ")
    assert "ValueError: The checkpoint you are trying to load has model type `no_such_model`" in lines[2]
    assert lines[2].endswith(f"(caused by KeyError: 'no_such_model') (log: {log300})")
    size = (run / "step_400" / "model.safetensors").stat().st_size
    assert lines[3] == (
        f"step_400: weights not completely written (model.safetensors: {size} of {size + 100} bytes written): "
        "not evaluated"
    )
    errors = printed.err.splitlines()
    assert "3 checkpoint(s) without results (a later sweep tries them again):" in errors
    assert f"error: {run / 'step_200'}: failed: {cause200} (log: {log200})" in errors
    assert any(e.startswith(f"error: {run / 'step_300'}: failed: ValueError: The checkpoint") for e in errors)
    assert any(e.startswith(f"error: {run / 'step_400'}: incomplete: model.safetensors: {size} of") for e in errors)
    # the logs are kept, with the cause; nothing else is left behind
    assert "not a valid JSON file" in log200.read_text()
    assert json.loads((runs / "step_200.failed" / resume.FAILURE_FILE).read_text())["cause"] == cause200
    assert "no_such_model" in log300.read_text()
    assert sorted(p.name for p in runs.iterdir()) == ["step_100", "step_200.failed", "step_300.failed"]
    assert (out / "report" / "report.html").is_file()

    # fixed, step_200 is evaluated by the next sweep and its kept failure goes; step_300 is tried again
    shutil.copy(tiny_series / "step_100" / "config.json", run / "step_200" / "config.json")
    assert cli.main(argv) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "step_" in line]
    assert lines[0].startswith("[1/4] step_100: skipped")
    assert lines[1].startswith("[2/4] step_200: evaluated in ")
    assert lines[2].startswith("[3/4] step_300: FAILED after ")
    assert sorted(p.name for p in runs.iterdir()) == ["step_100", "step_200", "step_300.failed"]
