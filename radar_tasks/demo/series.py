"""`radar-tasks demo --series`: pretrain a tiny vision-language model on CPU and watch perception and reasoning develop.

`run_series(out_dir)`:

1. writes the miniature M3-Bench (`fixture.make_fixture`) and the tiny Qwen2-VL (`training.init_model`);
2. trains it on freshly drawn synthetic examples (`synthetic`, `training.train`) and saves checkpoints at `steps`
   (default 0, 250, 500, 750, 1000: about two minutes on two CPU cores);
3. evaluates the checkpoints with `radar-tasks sweep` (`radar_tasks.sweep`: lmms-eval and `radar_hf` in this
   process, per-item logs, resume), the workflow of a real run, with a manifest of each checkpoint's step and
   tokens seen; each checkpoint twice, with its images and without them (`--ablate-images`: `images=none`);
4. the sweep writes the analysis report (`radar_tasks.analysis.write_report`) after each checkpoint: development
   curves with takeoff, BPB where the tasks report it, and what the images contribute (visual gain).

Nothing here needs a network or a GPU.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from radar_tasks.demo import fixture
from radar_tasks.demo.synthetic import EXAMPLE_KINDS
from radar_tasks.demo.training import ARCH, DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_STEPS, init_model, train

# Every subset the synthetic data teaches something about. MMMU-Pro is left out: its image-option and
# multi-image items are beyond a two-minute model, and its 60 items would double the evaluation time.
DEFAULT_TASKS = (
    "radar_wiki_animal,radar_wiki_plant,radar_wiki_attraction,radar_wiki_celebrity,"
    "radar_mmbench,radar_mathvista,radar_seephys,radar_spatial"
)
MODEL_ARGS = "device=cpu,dtype=float32"
ABLATE_IMAGES = "none"  # every checkpoint is also scored without its images: the report's visual gain


def _load_checkpoints(ckpt_dir: Path, steps: Sequence[int], **settings) -> list[dict] | None:
    """The checkpoints of an earlier `train` into `ckpt_dir` with the same `settings` (batch_size, lr, seed), if it
    saved every one of `steps`; else None."""
    log = ckpt_dir / "train_log.json"
    if not log.exists():
        return None
    data = json.loads(log.read_text())
    if any(data.get(k) != v for k, v in settings.items()) or data.get("weights") is not None:
        return None
    saved = {c["step"]: dict(c, path=str(ckpt_dir / f"step_{c['step']}")) for c in data["checkpoints"]}
    if not all(s in saved and (ckpt_dir / f"step_{s}" / "config.json").exists() for s in steps):
        return None
    return [saved[s] for s in steps]


def _format_tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def run_series(
    out_dir: str | os.PathLike,
    steps: Sequence[int] = DEFAULT_STEPS,
    tasks: str | Sequence[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    print_fn=print,
) -> Path:
    """Pretrain, checkpoint, evaluate and report (module docstring); returns the report folder `out_dir/report`.

    Layout of `out_dir`: `M3-Bench/` (fixture), `checkpoints/step_<n>/` (+ `train_log.json`),
    `runs/step_<n>/` (the sweep's lmms-eval output), `report/` (report.md, CSVs, figures). A folder that already
    holds the fixture, the checkpoints of these `steps` or a checkpoint's results reuses them (delete to redo).
    """
    import yaml

    from radar_tasks.sweep import sweep

    tasks = DEFAULT_TASKS if tasks is None else tasks if isinstance(tasks, str) else ",".join(tasks)
    steps = sorted({int(s) for s in steps})
    work = Path(out_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    data = work / "M3-Bench"
    if not data.exists():
        fixture.make_fixture(data)  # the benchmark: seed 0 whatever the training seed
    ckpt_dir, results_dir = work / "checkpoints", work / "runs"
    checkpoints = _load_checkpoints(ckpt_dir, steps, batch_size=batch_size, lr=lr, seed=seed)
    t_train = 0.0
    if checkpoints is None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(results_dir, ignore_errors=True)  # results of other weights
        init = init_model(work / "init", seed=seed)
        print_fn(
            f"training a tiny {ARCH} on synthetic data for {steps[-1]} steps (batch {batch_size}), "
            f"checkpoints at steps {', '.join(map(str, steps))}"
        )
        t0 = time.time()
        checkpoints = train(init, ckpt_dir, steps, batch_size=batch_size, lr=lr, seed=seed, print_fn=print_fn)
        t_train = time.time() - t0
    else:
        print_fn(f"reusing the checkpoints in {ckpt_dir}")

    manifest = ckpt_dir / "manifest.yaml"  # the report's labels of every checkpoint
    manifest.write_text(
        yaml.safe_dump(
            [
                {
                    "run": str(Path(c["path"]).absolute()),
                    "label": f"step {c['step']}",
                    "model": f"tiny-{ARCH}",
                    "series": f"tiny-{ARCH} demo",
                    "step": c["step"],
                    "tokens": c["tokens"],
                }
                for c in checkpoints
            ],
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    t0 = time.time()
    print_fn(
        f"$ radar-tasks sweep {ckpt_dir}/step_* --tasks {tasks} --model_args {MODEL_ARGS} --log_samples "
        f"--manifest {manifest} --out {work} --ablate-images {ABLATE_IMAGES}"
    )
    result = sweep(
        [c["path"] for c in checkpoints],
        tasks,
        work,
        model_args=MODEL_ARGS,
        log_samples=True,
        ablate_images=ABLATE_IMAGES,
        manifest=manifest,
        data_dir=data,
        threads=1,
        print_fn=print_fn,
    )
    t_eval = time.time() - t0
    if result.failed or result.report is None:
        raise RuntimeError(
            "the sweep did not evaluate every checkpoint: "
            + "; ".join(f"{o.checkpoint.name}: {o.message}" for o in result.failed)
        )
    report = result.report
    report_dir = Path(report).parent
    timing = {"train_s": round(t_train, 1), "eval_s": round(t_eval, 1), "total_s": round(time.time() - t_start, 1)}
    (report_dir / "series.json").write_text(
        json.dumps(
            {
                "tasks": tasks,
                "steps": steps,
                "checkpoints": checkpoints,
                "timing": timing,
                "mixture": {
                    k: {"weight": v.weight, "ability": v.ability, "teaches": v.teaches}
                    for k, v in EXAMPLE_KINDS.items()
                },
            },
            indent=2,
        )
        + "\n"
    )
    print_fn("")
    print_fn(format_development(report_dir, checkpoints))
    print_fn(f"\ntrain {timing['train_s']:.0f}s, evaluation and report {timing['eval_s']:.0f}s\nreport: {report}")
    return report_dir


def _csv_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def format_development(report_dir: str | os.PathLike, checkpoints: Sequence[Mapping]) -> str:
    """Per checkpoint: tokens seen, SDS of perception and reasoning with their chance levels (asymmetry.csv) and
    the visual gain of SDS (visual_gain.csv); then each ability's SDS takeoff (takeoff.csv)."""
    report_dir = Path(report_dir)
    if not (report_dir / "asymmetry.csv").exists():
        return ""
    rows = {r["run"]: r for r in _csv_rows(report_dir / "asymmetry.csv") if r.get("metric", "sds") == "sds"}
    gains = {
        (r["run"], r["name"]): r
        for r in _csv_rows(report_dir / "visual_gain.csv")
        if r["metric"] == "sds" and r["level"] == "ability"
    }

    def cell(row, key):
        try:
            return f"{float(row[key]):.3f}"
        except (KeyError, TypeError, ValueError):
            return "-"

    def gain(label, ability):
        row = gains.get((label, ability))
        return "-" if row is None else f"{float(row['gain']):+.3f}{'*' if row['excludes_zero'] == 'true' else ' '}"

    header = (
        f"{'checkpoint':12s} {'tokens':>7s}  {'SDS perception':>14s} {'(chance)':>8s}  "
        f"{'SDS reasoning':>13s} {'(chance)':>8s}  {'visual gain: perception':>23s} {'reasoning':>9s}"
    )
    lines = [header]
    for c in checkpoints:
        label = f"step {c['step']}"
        row = rows.get(label, {})
        lines.append(
            f"{label:12s} {_format_tokens(c['tokens']):>7s}  "
            f"{cell(row, 'perception'):>14s} {cell(row, 'chance_perception'):>8s}  "
            f"{cell(row, 'reasoning'):>13s} {cell(row, 'chance_reasoning'):>8s}  "
            f"{gain(label, 'perception'):>23s} {gain(label, 'reasoning'):>9s}"
        )
    takeoff = {
        r["name"]: r["takeoff"] or r["status"]
        for r in _csv_rows(report_dir / "takeoff.csv")
        if r["metric"] == "sds" and r["level"] == "ability" and "images=" not in r["series"]
    }
    if gains:
        lines.append("visual gain: SDS with images - SDS without them, same items (*: its 95% CI excludes 0)")
    if takeoff:
        lines.append("SDS takeoff (above chance from then on): " + ", ".join(f"{a} {t}" for a, t in takeoff.items()))
    return "\n".join(lines)
