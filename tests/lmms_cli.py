"""The tests' one launcher of the lmms-eval CLI in a subprocess, for the tests whose subject is what the CLI does
(its exit status, its output, a process without this one's plugin state, several ranks). Everything else runs
lmms-eval's CLI entry point in the test process: `radar_tasks.runner.run_in_process`, as a sweep does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from radar_tasks.runner import lmms_eval_args, results_json

LMMS_EVAL = (sys.executable, "-m", "lmms_eval")
TINY_ARGS = "device=cpu,dtype=float32"


def model_args(model, more: str = "") -> str:
    """radar_hf's model args for a tiny checkpoint on CPU in float32 (`more`: appended)."""
    return f"pretrained={model},{TINY_ARGS}" + (f",{more}" if more else "")


def run(
    model_args: str,
    tasks: str,
    out: Path,
    *,
    data: Path | None = None,
    env: dict | None = None,
    extra=(),
    model: str = "radar_hf",
    launcher=LMMS_EVAL,
    timeout: int = 900,
) -> tuple[int, str]:
    """`launcher` + lmms-eval's arguments (per-item logs on) in a subprocess: (exit status, stdout + stderr).

    The child sees this environment without RADAR_M3BENCH_DIR and RADAR_TASKS_NO_DISCOVERY (`data`: the M3-Bench
    root it gets; `env`: set on top), and no hub access."""
    base = {k: v for k, v in os.environ.items() if k not in ("RADAR_M3BENCH_DIR", "RADAR_TASKS_NO_DISCOVERY")}
    base.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if data is not None:
        base["RADAR_M3BENCH_DIR"] = str(data)
    cmd = [*launcher, *lmms_eval_args(model_args, tasks, out, extra, model=model)]
    proc = subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def results(out: Path, code: int, log: str) -> dict:
    """The results JSON of a run, or the test fails with the end of its log (the CLI exits 0 on most failures)."""
    try:
        return json.loads(results_json(out).read_text())
    except FileNotFoundError:
        pytest.fail(f"lmms-eval wrote no results (exit {code}):\n{log[-6000:]}")


def run_for_results(model_args: str, tasks: str, out: Path, **kwargs) -> tuple[dict, str]:
    """`run`, then its results JSON: (results, log)."""
    code, log = run(model_args, tasks, out, **kwargs)
    return results(out, code, log), log


def samples(out: Path, task: str) -> list[dict]:
    """The per-item log of `task` under an --output_path: one dict per line."""
    [path] = sorted(Path(out).rglob(f"*_samples_{task}.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines()]
