"""`radar-tasks demo`: a miniature M3-Bench, a tiny random-weight checkpoint, one real lmms-eval run, the table.

Quiet by default: a few progress lines and the table, lmms-eval's own output in `<work>/lmms_eval.log`;
`verbose=True` shows lmms-eval's output as it runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from radar_tasks import runner
from radar_tasks.demo.fixture import make_fixture
from radar_tasks.demo.tiny_models import build_tiny_model
from radar_tasks.summary import format_table, load

DEMO_ARCH = "qwen2_vl"


class _Status:
    """One status line on a terminal (rewritten in place); elsewhere each new count once, every 25%."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.tty, self.shown, self.started = stream, stream.isatty(), -1, False

    def __call__(self, done: int, total: int) -> None:
        if self.started == (done, total):
            return
        self.started = (done, total)
        if self.tty:
            self.stream.write(f"\r  scoring: {done}/{total} questions")
        elif done * 4 // max(total, 1) > self.shown:
            self.shown = done * 4 // max(total, 1)
            self.stream.write(f"  scoring: {done}/{total} questions\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.started:
            self.stream.write("\n")
            self.stream.flush()


def run_demo(
    work: str | os.PathLike, arch: str = DEMO_ARCH, tasks: str | None = None, print_fn=print, verbose: bool = False
) -> Path:
    """Build (or reuse) the fixture and the tiny model under `work`, evaluate, print the table; returns the
    results JSON. Raises runner.RunFailed (its message names the log) when lmms-eval wrote no results."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "M3-Bench"
    if not data.exists():
        make_fixture(data)
    model = work / f"tiny-{arch}"
    if not model.exists():
        build_tiny_model(model, arch)
    print_fn(f"fixture: {data}\nmodel:   {model} (random weights: scores sit near chance)")
    model_args, tasks = f"pretrained={model},device=cpu,dtype=float32", tasks or "radar_mmm"
    if verbose:
        results = runner.run_subprocess(model_args, tasks, work / "results", data)
    else:
        log = work / "lmms_eval.log"
        print_fn(f"lmms-eval {tasks}: starting (about a minute; its log: {log})")
        status = _Status()
        try:
            results = runner.run_subprocess(model_args, tasks, work / "results", data, log=log, on_progress=status)
        finally:
            status.close()
    print_fn(f"\nresults: {results}\n")
    print_fn(format_table(load(results)))
    return results
