"""Benchmark: end-to-end questions per second through the lmms-eval CLI, host preparation in turn vs in workers.

Each run is `python -m lmms_eval --model radar_hf ...` in a child process (the CLI's own entry point) on a
synthetic M3-Bench in the released layout (`synthetic_m3bench.py`, full size by default: 14,904 items), with a
random-weight Qwen2-VL (`--config tiny`: the tests' 64-wide model; `small`; `qwen2-vl-2b`: the real Qwen2-VL-2B
sizes, for a GPU). The child times every model forward; `--simulate-device-ms X` makes each forward also wait X ms
with the CPU idle, which is what the host sees of an accelerator. Printed per run:

* host ms / question: the preparation of a question (doc, image decode and conversion, prompt, the processor,
  candidate tokenisation), summed over the processes that ran it, over questions;
* device ms / question: time in model forwards (on CUDA: CUDA-event time), over questions;
* wall ms / question: the scoring phase (radar_hf's loglikelihood) over questions; and the whole CLI run;
* device busy = device / wall (on CUDA: the accelerator's utilisation), and the scoring time of a full M3-Bench
  (14,904 questions) at this wall time per question;
* efficiency = max(host / workers, device) / wall (workers: at least 1): 1 means the slower of the two sides, host
  preparation spread over the workers or the model, never waits for the other;
* CPU ms / question: CPU time of the whole run (evaluation process and workers, start-up included) over
  questions, and the machine's load average during the run (on a shared CPU wall times follow the load);
* peak memory: the RSS of the evaluation process, and the peak of the summed PSS of it and its workers (sampled
  each second; forked workers share the parent's pages, PSS counts them once); and whether every per-item score
  equals the first run's.

Commands (the data, models, caches and outputs go under --work, never into the repository):

    python benchmarks/bench_pipeline.py check --work /tmp/bench      # the issue's check: 400 Wiki questions,
        # 1600x1200 JPEGs to ~64 visual tokens, batches of 8, 50 ms per forward: T1 (num_workers=0), T2 (the
        # workers `auto` starts on an accelerator: the simulated device stands for one), P
    python benchmarks/bench_pipeline.py run --work /tmp/bench --tasks radar_mmm --workers 0,auto
    python benchmarks/bench_pipeline.py scale --work /tmp/bench       # 1K vs 15K items: time / question, memory
    python benchmarks/bench_pipeline.py run --work /tmp/bench --config qwen2-vl-2b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark modules

from synthetic_m3bench import FULL_SIZE, WIKI_SIZE, generate  # noqa: E402

# Qwen2-VL's processor: 14 px patches merged 2x2; max_pixels = 72 * 28^2 turns a 1600x1200 image into 7 x 9 = 63
# merged visual tokens (the closest to 64 that a 4:3 image gets)
MERGED_PIXELS = 28 * 28
CHECK_MAX_PIXELS = 72 * MERGED_PIXELS


# ----------------------------------------------------------------------------------------------- set-up
def data_root(work: Path, items: int) -> Path:
    root = work / f"m3bench-{items}"
    if not (root / "general_visual_question_answering").is_dir():
        start = time.perf_counter()
        generate(root, items)
        print(f"generated {root} ({items} items) in {time.perf_counter() - start:.0f} s", flush=True)
    return root


def model_folder(work: Path, config: str, device: str, dtype: str) -> Path:
    folder = work / f"model-{config}"
    if (folder / "config.json").is_file():
        return folder
    if config == "tiny":
        from radar_tasks.demo.tiny_models import build_tiny_model

        build_tiny_model(folder, "qwen2_vl", seed=0)
    else:
        import torch
        from bench_prefix_sharing import build  # the `small` and `qwen2-vl-2b` sizes

        model, processor = build(config, device, getattr(torch, dtype))
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


def visual_tokens(folder: Path, size: tuple[int, int], max_pixels: int) -> int:
    """Merged visual tokens the model's processor gives an image of `size` (w, h)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    config = json.loads((folder / "processor_config.json").read_text())["image_processor"]
    h, w = smart_resize(size[1], size[0], factor=28, min_pixels=config["size"]["shortest_edge"], max_pixels=max_pixels)
    return (h * w) // MERGED_PIXELS


def warm_cache(root: Path, tasks: str, env: dict) -> float:
    """Read (and validate: every image is decoded once) the records of the tasks' categories into the datasets
    cache, in a child with the runs' environment, so that timed runs measure evaluation, not the first read."""
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "_warm", str(root), tasks], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def read_records(root: str, tasks: str) -> None:
    from radar_tasks import taxonomy
    from radar_tasks.data import m3bench

    wanted = set(tasks.split(","))
    everything = bool(wanted & {"radar_mmm", "radar_perception", "radar_reasoning"})
    for subset, category in taxonomy.leaf_tasks():  # a leaf, its subset, or a group of its subset
        if everything or any(t == f"radar_{subset}" or t.startswith(f"radar_{subset}_") for t in wanted):
            m3bench.load_category(subset, category, root)


# ------------------------------------------------------------------------------------------- one lmms-eval run
class DeviceClock:
    """Times the top-level model's forwards (CPU: wall time; CUDA: CUDA events) and adds the simulated wait."""

    def __init__(self, simulate_ms: float):
        self.simulate_s = simulate_ms / 1000
        self.seconds, self.forwards, self._events, self._start = 0.0, 0, [], 0.0

    def attach(self, model) -> None:
        import torch

        self.cuda = next(model.parameters()).device.type == "cuda"
        self._event = (lambda: torch.cuda.Event(enable_timing=True)) if self.cuda else None
        model.register_forward_pre_hook(self._before)
        model.register_forward_hook(self._after)

    def _before(self, module, args):
        if self.cuda:
            self._events.append((self._event(), self._event()))
            self._events[-1][0].record()
        else:
            self._start = time.perf_counter()

    def _after(self, module, args, output):
        if self.simulate_s:
            time.sleep(self.simulate_s)  # the CPU idles, as while an accelerator computes
        if self.cuda:
            self._events[-1][1].record()
        else:
            self.seconds += time.perf_counter() - self._start
        self.forwards += 1

    def total(self) -> float:
        if self.cuda and self._events:
            import torch

            torch.cuda.synchronize()
            self.seconds = sum(a.elapsed_time(b) for a, b in self._events) / 1000 + self.simulate_s * self.forwards
            self._events = []
        return self.seconds


class MemorySampler:
    """Peak memory of this process and its workers: the sum of their PSS (proportional set size: pages shared by
    forked workers counted once in all), sampled every `every` seconds in a thread."""

    def __init__(self, every: float = 1.0):
        import threading

        self.every, self.peak_mib, self._stop = every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, AttributeError):
                    total += proc.memory_full_info().pss
            self.peak_mib = max(self.peak_mib, total / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def child(argv: list[str]) -> None:
    """`python -m lmms_eval <args>` in this process, with the device clock on radar_hf's model; stats to a file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--stats", required=True)
    parser.add_argument("--simulate-device-ms", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=0)
    args, rest = parser.parse_known_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from radar_tasks.models.radar_hf import RadarHF

    clock, wrappers, scoring = DeviceClock(args.simulate_device_ms), [], [0.0]
    init, loglikelihood = RadarHF.__init__, RadarHF.loglikelihood

    def timed_init(self, *a, **k):
        init(self, *a, **k)
        clock.attach(self.model)
        wrappers.append(self)

    def timed_loglikelihood(self, requests):
        start = time.perf_counter()
        try:
            return loglikelihood(self, requests)
        finally:
            scoring[0] += time.perf_counter() - start

    RadarHF.__init__, RadarHF.loglikelihood = timed_init, timed_loglikelihood
    memory = MemorySampler()
    sys.argv = ["lmms-eval", *[a for a in rest if a != "--"]]
    try:
        runpy.run_module("lmms_eval", run_name="__main__", alter_sys=True)
    finally:
        wrapper = wrappers[0] if wrappers else None
        stats = {
            "device_s": clock.total(),
            "forwards": clock.forwards,
            "scoring_s": scoring[0],
            "pipeline": dict(wrapper.pipeline_stats) if wrapper else {},
            "scorer": dict(wrapper.scorer.stats) if wrapper else {},
            "cpu_s": sum(
                getattr(resource.getrusage(who), f)
                for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                for f in ("ru_utime", "ru_stime")
            ),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_pss_mib": memory.stop(),
        }
        if clock.forwards and getattr(clock, "cuda", False):
            stats["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        Path(args.stats).write_text(json.dumps(stats))


def run_lmms_eval(name: str, args, root: Path, model: Path, workers: str, env: dict) -> dict:
    """One run through the CLI; returns the child's stats plus the whole run's wall time and the per-item scores."""
    from radar_tasks.runner import lmms_eval_args, results_json

    out = args.work / "runs" / name
    shutil.rmtree(out, ignore_errors=True)  # the scores are read back from this run's files only
    out.mkdir(parents=True)
    model_args = (
        f"pretrained={model},device={args.device},dtype={args.dtype},num_workers={workers},"
        f"image_processor={args.image_processor},processor_kwargs=max_pixels:{args.max_pixels}"
    )
    extra = ["--batch_size", str(args.batch_size), *(["--limit", str(args.limit)] if args.limit else [])]
    stats_file = out / "stats.json"
    cmd = [
        sys.executable,
        __file__,
        "_child",
        "--stats",
        str(stats_file),
        "--simulate-device-ms",
        str(args.simulate_device_ms),
        "--threads",
        str(args.threads),
        "--",
        *lmms_eval_args(model_args, args.tasks, out / "lmms", extra),
    ]
    start, load = time.perf_counter(), os.getloadavg()[0]
    with open(out / "log.txt", "w", encoding="utf-8") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall, load = time.perf_counter() - start, (load + os.getloadavg()[0]) / 2
    try:
        results_json(out / "lmms")
        stats = json.loads(stats_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        tail = "\n".join((out / "log.txt").read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"run {name} failed (log: {out / 'log.txt'}):\n{tail}") from None
    stats.update(name=name, workers_arg=workers, run_s=wall, load=load, scores=item_scores(out / "lmms"))
    return stats


def item_scores(out: Path) -> dict:
    scores = {}
    for path in sorted(out.rglob("*_samples_*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)["sds"]
            scores[(rec["subset"], rec["category"], rec["id"])] = (rec["p"], rec["scores"])
    return scores


# ------------------------------------------------------------------------------------------------ reporting
def table(runs: list[dict]) -> None:
    header = (
        "run",
        "workers",
        "questions",
        "host ms/q",
        "device ms/q",
        "wall ms/q",
        "efficiency",
        "device busy",
        "run s",
        "q/s",
        f"{FULL_SIZE} q min",
        "CPU ms/q",
        "load",
        "peak RSS MiB",
        "peak PSS MiB, workers too",
        "same scores",
    )
    rows = []
    for r in runs:
        pipe = r["pipeline"]
        n = max(1, pipe.get("questions", 0))
        host, device, wall = pipe.get("host_s", 0) / n, r["device_s"] / n, r["scoring_s"] / n
        efficiency = max(host / max(1, pipe.get("workers", 0)), device) / wall
        same = "-" if r is runs[0] else ("yes" if r["scores"] == runs[0]["scores"] else "NO")
        rows.append(
            (
                r["name"],
                f"{pipe.get('workers')} ({r['workers_arg']})",
                n,
                f"{1000 * host:.1f}",
                f"{1000 * device:.1f}",
                f"{1000 * wall:.1f}",
                f"{efficiency:.2f}",
                f"{device / wall:.0%}",
                f"{r['run_s']:.1f}",
                f"{n / r['scoring_s']:.1f}",
                f"{FULL_SIZE * wall / 60:.1f}",
                f"{1000 * r['cpu_s'] / n:.0f}",
                f"{r['load']:.1f}",
                f"{r['peak_rss_mib']:.0f}",
                f"{r['peak_pss_mib']:.0f}",
                same,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(row, widths)), flush=True)


def check(runs: list[dict]) -> bool:
    """The issue's criterion, T2 <= T1 - 0.5 * min(P, T1 - P), on the whole runs and on the scoring phases."""
    first, second = runs
    p = first["pipeline"]["host_s"]
    ok = first["scores"] == second["scores"]
    print(f"P (host preparation, in turn) = {p:.1f} s; scores identical: {ok}")
    for label, key in (("whole CLI run", "run_s"), ("scoring phase", "scoring_s")):
        t1, t2 = first[key], second[key]
        bound = t1 - 0.5 * min(p, t1 - p)
        passed = t2 <= bound
        ok &= passed
        print(
            f"{label}: T1 = {t1:.1f} s, T2 = {t2:.1f} s, T1 - 0.5 min(P, T1 - P) = {bound:.1f} s, perfect overlap "
            f"max(T1 - P, P) = {max(t1 - p, p):.1f} s: {'PASS' if passed else 'FAIL'}"
        )
    return ok


# ------------------------------------------------------------------------------------------------- commands
def environment(args, root: Path) -> dict:
    from radar_tasks.runner import lmms_eval_env

    return {**os.environ, **lmms_eval_env(root), "HF_DATASETS_CACHE": str(args.work / "hf-datasets")}


def series(args, root: Path, label: str) -> list[dict]:
    model = model_folder(args.work, args.config, args.device, args.dtype)
    env = environment(args, root)
    print(
        f"{label}: {args.tasks}{f' --limit {args.limit}' if args.limit else ''} on {root.name}, model "
        f"{args.config} on {args.device} ({args.dtype}), batch size {args.batch_size}, simulated device "
        f"{args.simulate_device_ms:g} ms per forward, {WIKI_SIZE[0]}x{WIKI_SIZE[1]} Wiki images -> "
        f"{visual_tokens(model, WIKI_SIZE, args.max_pixels)} visual tokens, image processor "
        f"{args.image_processor}, torch threads {args.threads or 'default'}",
        flush=True,
    )
    print(
        f"first read of the records (validation, datasets cache): {warm_cache(root, args.tasks, env):.0f} s", flush=True
    )
    runs = []
    for workers in args.workers.split(","):
        runs.append(run_lmms_eval(f"{label}-{root.name}-w{workers}", args, root, model, workers, env))
        print(f"  run num_workers={workers}: {runs[-1]['run_s']:.1f} s", flush=True)
    table(runs)
    return runs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        child(argv[1:])
        return 0
    if argv[:1] == ["_warm"]:
        read_records(*argv[1:3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("check", "run", "scale"))
    parser.add_argument("--work", type=Path, required=True, help="folder for data, models, caches and outputs")
    parser.add_argument("--items", type=int, default=FULL_SIZE, help="size of the synthetic M3-Bench")
    parser.add_argument("--tasks", default=None, help="lmms-eval tasks (check: radar_wiki_animal; else radar_mmm)")
    parser.add_argument("--limit", type=int, default=None, help="lmms-eval --limit (check: 400)")
    parser.add_argument(
        "--workers",
        default=None,
        help="num_workers values, one run each (default 0,auto; check: 0 and the count auto gives on an accelerator, "
        "since on a CPU device auto is 0)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--simulate-device-ms", type=float, default=None, help="check: 50; else 0")
    parser.add_argument("--max-pixels", type=int, default=CHECK_MAX_PIXELS, help="Qwen2-VL processor max_pixels")
    parser.add_argument("--config", default="tiny", choices=("tiny", "small", "qwen2-vl-2b"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--image-processor", default="fast", choices=("fast", "pil"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the evaluation process (default 1: a simulated accelerator's work is "
        "not this CPU's, and on a shared CPU multi-threaded regions stall; 0: torch's default)",
    )
    args = parser.parse_args(argv)
    args.work = args.work.absolute()
    if args.command == "check":
        args.tasks, args.limit = args.tasks or "radar_wiki_animal", args.limit or 400
        args.simulate_device_ms = 50.0 if args.simulate_device_ms is None else args.simulate_device_ms
        from radar_tasks.models.pipeline import resolve_num_workers

        args.workers = args.workers or f"0,{resolve_num_workers('auto', device_type='cuda')}"
        runs = series(args, data_root(args.work, args.items), "check")
        return 0 if check(runs[:2]) else 1
    args.tasks = args.tasks or "radar_mmm"
    args.workers = args.workers or "0,auto"
    args.simulate_device_ms = args.simulate_device_ms or 0.0
    if args.command == "run":
        series(args, data_root(args.work, args.items), "run")
        return 0
    for items in (1000, args.items):  # scale: the same proportions at 1K and at full size
        series(args, data_root(args.work, items), f"scale{items}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
