"""`radar-tasks demo`: a miniature M3-Bench, a tiny random-weight checkpoint, one real lmms-eval run, the table."""

from __future__ import annotations

import os
from pathlib import Path

from radar_tasks import runner
from radar_tasks.demo.fixture import make_fixture
from radar_tasks.demo.tiny_models import build_tiny_model
from radar_tasks.summary import format_table, load

DEMO_ARCH = "qwen2_vl"


def run_demo(work: str | os.PathLike, arch: str = DEMO_ARCH, tasks: str | None = None, print_fn=print) -> Path:
    """Build (or reuse) the fixture and the tiny model under `work`, evaluate, print the table; returns the
    results JSON."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "M3-Bench"
    if not data.exists():
        make_fixture(data)
    model = work / f"tiny-{arch}"
    if not model.exists():
        build_tiny_model(model, arch)
    print_fn(f"fixture: {data}\nmodel:   {model} (random weights: scores sit near chance)")
    results = runner.run_subprocess(f"pretrained={model},device=cpu,dtype=float32", tasks or "radar_mmm",
                                    work / "results", data)
    print_fn(f"\nresults: {results}\n")
    print_fn(format_table(load(results)))
    return results
