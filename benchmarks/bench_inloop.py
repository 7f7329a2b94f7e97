"""Benchmark: what an in-loop `radar_tasks.evaluate` call costs beyond its model's forwards.

Builds the miniature M3-Bench (`make_fixture`, seed 0) and the tests' tiny random-weight Qwen2-VL (seed 0) under
--work, loads the model once, then calls `radar_tasks.evaluate(model, processor, tasks=[...])` --calls times in
this process, as a training loop does. Printed for each call:

* wall s: the call, measured around it;
* forward s: time inside the model's top-level forwards (forward pre- and post-hooks on the model, summed);
* wall / forward: what the call costs per second of forwards (1 would be no harness at all);
* lines: what the call wrote to this process's stdout and stderr (file descriptors 1 and 2 redirected to a file
  during the call, so loguru, tqdm, warnings, prints and the forked preparation workers all count; a progress
  bar redrawn in place is one line);
* the scores' digest: every metric of every task the same in every call (`same`), as a fresh process gives them.

lmms-eval, torch and `radar_tasks.inloop` are imported before the first call (printed apart: a training job has
imported torch and transformers long before its first evaluation, and these imports are paid once per process).
The datasets cache is a fresh folder under --work, so the first call also validates and caches the categories it
reads; `--warm` keeps the data, model and cache of an earlier run (a job whose cache is already filled).

    python benchmarks/bench_inloop.py --work /tmp/bench-inloop                  # radar_mmm_lite, three calls
    python benchmarks/bench_inloop.py --work /tmp/bench-inloop --profile 3      # + cProfile of the third call
    python benchmarks/bench_inloop.py --work /tmp/bench-inloop --fast           # the smoke test's: one small task

--work must not lie inside the repository; it is created (and emptied of this script's own folders) when needed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAST_TASKS = "radar_wiki_animal_lite"


def set_caches(work: Path) -> None:
    """Every cache under --work, before `datasets` is imported (it reads HF_DATASETS_CACHE once, at import); a
    process that imported it already (the smoke test) keeps its own caches."""
    if "datasets" in sys.modules:
        return
    for var, sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "hf/datasets"), ("XDG_CACHE_HOME", "xdg")):
        os.environ[var] = str(work / "cache" / sub)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ForwardTimer:
    """Seconds spent inside a module's forwards (top level: nested calls are not counted twice)."""

    def __init__(self, module):
        self.seconds, self.count, self._depth, self._start = 0.0, 0, 0, 0.0
        self.handles = [
            module.register_forward_pre_hook(self._enter),
            module.register_forward_hook(self._leave),
        ]

    def _enter(self, *_):
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def _leave(self, *_):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start
            self.count += 1

    def reset(self) -> None:
        self.seconds, self.count = 0.0, 0


@contextlib.contextmanager
def captured_output(path: Path):
    """File descriptors 1 and 2 go to `path` inside; what was written is in the file after."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as sink:
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def count_lines(text: str) -> int:
    """Lines as a terminal shows them: a progress bar redrawn with carriage returns is one line."""
    return len([line for line in text.split("\n") if line.strip()])


def digest(scores: dict) -> str:
    """A digest of every metric (samples left out), to compare calls."""
    rows = {task: {k: v for k, v in row.items() if k != "samples"} for task, row in scores.items() if task != "cost"}
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for data, model and caches (default: a temp)")
    parser.add_argument("--tasks", default="radar_mmm_lite")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    parser.add_argument(
        "--warm", action="store_true", help="reuse the data, model and datasets cache an earlier run left in --work"
    )
    parser.add_argument("--fast", action="store_true", help=f"--tasks {FAST_TASKS} --calls 2 (the smoke test)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile call N (1-based)")
    parser.add_argument("--show", action="store_true", help="print what the last call wrote")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--evaluate-kwargs", default="{}", help="JSON keyword arguments for evaluate")
    args = parser.parse_args(argv)
    if args.fast:
        args.tasks, args.calls = FAST_TASKS, 2
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-inloop-")).absolute()
    if work.is_relative_to(REPO):
        parser.error(f"--work {work} lies inside the repository")
    work.mkdir(parents=True, exist_ok=True)
    warm = args.warm and (work / "M3-Bench").is_dir() and (work / "model").is_dir()
    if not warm:
        for sub in ("M3-Bench", "model", "cache"):
            shutil.rmtree(work / sub, ignore_errors=True)
    set_caches(work)

    started = time.perf_counter()
    import lmms_eval.evaluator
    import lmms_eval.models  # noqa: F401
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import radar_tasks
    import radar_tasks.inloop
    from radar_tasks.demo.fixture import make_fixture
    from radar_tasks.demo.tiny_models import build_tiny_model

    imported = time.perf_counter() - started
    torch.set_num_threads(args.threads)
    root = work / "M3-Bench" if warm else make_fixture(work / "M3-Bench", seed=0)
    folder = work / "model" if warm else build_tiny_model(work / "model", "qwen2_vl", seed=0)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder)
    timer = ForwardTimer(model)
    kwargs = json.loads(args.evaluate_kwargs)
    print(
        f"bench_inloop: tasks {args.tasks}, {args.calls} calls, tiny Qwen2-VL (float32, {torch.get_num_threads()} "
        f"torch threads), data {root} ({'warm' if warm else 'fresh'} datasets cache); imports {imported:.1f} s; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    for call in range(1, args.calls + 1):
        timer.reset()
        out = work / f"call{call}.out"
        profiler = None
        if call == args.profile:
            import cProfile

            profiler = cProfile.Profile()
        with captured_output(out):
            if profiler:
                profiler.enable()
            t0 = time.perf_counter()
            scores = radar_tasks.evaluate(model, processor, tasks=args.tasks.split(","), data_dir=root, **kwargs)
            wall = time.perf_counter() - t0
            if profiler:
                profiler.disable()
        text = out.read_bytes().decode(errors="replace")  # read_text would turn each carriage return into a line
        rows.append(
            {
                "call": call,
                "wall_s": wall,
                "forward_s": timer.seconds,
                "forwards": timer.count,
                "ratio": wall / timer.seconds if timer.seconds else float("inf"),
                "lines": count_lines(text),
                "digest": digest(scores),
                "reported": {k: round(v, 2) for k, v in scores.get("cost", {}).items()},
                "load": os.getloadavg()[0],
            }
        )
        if profiler:
            import pstats

            stats_path = work / f"call{call}.prof"
            profiler.dump_stats(stats_path)
            print(f"--- cProfile of call {call} ({stats_path}), cumulative:")
            pstats.Stats(str(stats_path)).sort_stats("cumulative").print_stats(40)
    print(
        f"{'call':>4} {'wall s':>7} {'forward s':>9} {'forwards':>8} {'wall/fwd':>8} {'lines':>5} {'load':>5}  scores"
    )
    for row in rows:
        same = "same" if row["digest"] == rows[0]["digest"] else f"DIFFERENT {row['digest']}"
        print(
            f"{row['call']:>4} {row['wall_s']:>7.2f} {row['forward_s']:>9.2f} {row['forwards']:>8} "
            f"{row['ratio']:>8.2f} {row['lines']:>5} {row['load']:>5.1f}  {same}"
            + (f"  evaluate's own: {row['reported']}" if row["reported"] else "")
        )
    if len(rows) > 1:
        repeated = sum(r["wall_s"] for r in rows[1:]) / (len(rows) - 1)
        print(f"first call / mean repeated call: {rows[0]['wall_s'] / repeated:.2f}")
    from radar_tasks import inloop

    if getattr(inloop, "_prepared", None) is not None:  # (absent from versions before the cache: --compare)
        cache = inloop._prepared[3]
        print(f"prepared questions kept across calls: {len(cache)}, {cache.bytes / 2**20:.1f} MiB of tensors")
    if args.show:
        print(f"--- what call {rows[-1]['call']} wrote:")
        print((work / f"call{rows[-1]['call']}.out").read_text(errors="replace"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["digest"] == rows[0]["digest"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
