"""`radar-tasks sweep`: evaluate the checkpoints of a training run with lmms-eval and `radar_hf`, one after the other.

`sweep(checkpoints, tasks, out_dir, ...)` runs the loop; its parts live in their own modules:

* **checkpoints** (`radar_tasks.checkpoints`): the folders in training order (steps, manifest, tokens seen) and
  whether their weights are completely written;
* **evaluation**: lmms-eval's CLI entry point in this process (`runner.run_in_process`: lmms-eval is imported once,
  the records are read once and then come from the `datasets` cache), into `out_dir/runs/<checkpoint name>/`;
* **resume** (`radar_tasks.resume`): each checkpoint's run folder is written whole or not at all, with a
  `sweep.json` saying what was evaluated (tasks, model args, limit, data fingerprint, weights stamp); a later sweep
  skips a checkpoint whose `sweep.json` matches, and redoes one that was interrupted;
* **shards**: `shard=(i, n)` takes every n-th checkpoint in step order, starting at the i-th (1-based): the n shards
  cover every checkpoint exactly once (each process lists all checkpoints, then keeps its share);
* **watch**: keep listing the checkpoint patterns (a folder given as `.../step_1000` is watched as `.../step_*`),
  evaluate each new checkpoint once its weights are completely written (`checkpoints.weights_problem`), stop after
  `watch` seconds without a new checkpoint;
* **report**: after each evaluated checkpoint, `out_dir/report/` is rewritten (`analysis.write_report`, every
  checkpoint with results, labels step / tokens / series; report.md and report.html) and swapped in whole;
* **image ablation** (`ablate_images="none"` or `"blank"`): each checkpoint is also evaluated with the radar_hf
  model arg `images=<mode>`, into `out_dir/runs/<checkpoint name>.images-<mode>/` (its own run key: skipped and
  resumed like the other), labelled `<label> (images=<mode>)`; the report pairs the two runs of a checkpoint (visual
  gain, docs/analysis.md).
* **failures**: a checkpoint whose evaluation fails does not stop the sweep; its line says why (one line:
  `runner.describe_failure`) and names its log, kept in `out_dir/runs/<name>.failed/` (`resume.keep_failure`)
  until a later sweep evaluates it;
* **dashboards** (`dashboards`: `wandb`, `tensorboard`): every checkpoint with results of the model args as given (all
  shards; not the image ablation's runs) is logged once
  against its training step, after each evaluated checkpoint and at the end.

`radar-tasks sweep` (radar_tasks/cli.py) parses the command line and calls `sweep`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from radar_tasks import resume, taxonomy
from radar_tasks.checkpoints import (
    Checkpoint,
    is_pattern,
    list_checkpoints,
    watch_pattern,
    weights_problem,
    weights_stamp,
)
from radar_tasks.results import Results, ResultsError
from radar_tasks.staging import swap_in

REPORT_INPUTS = ".sweep-inputs.json"  # in the report folder: the runs and labels it was written from


class SweepError(ValueError):
    """Bad sweep arguments (one line naming the argument and what is wrong)."""


# ----------------------------------------------------------------------------------------------------- arguments


def normalize_model_args(model_args: str) -> str:
    """`k=v,...` sorted by key (the same args in another order are the same run); `pretrained` is refused."""
    pairs = [p.strip() for p in (model_args or "").split(",") if p.strip()]
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--model_args: {pair!r} is not key=value")
        if key.strip() == "pretrained":
            raise SweepError("--model_args: leave out pretrained (each checkpoint folder is the pretrained path)")
        parsed[key.strip()] = value.strip()
    return ",".join(f"{k}={parsed[k]}" for k in sorted(parsed))


ABLATIONS = ("none", "blank")  # `--ablate-images`: the radar_hf `images` modes a sweep can add


def variants(model_args: str, ablate_images: str | None) -> list[tuple[str, str, str]]:
    """The evaluations of every checkpoint: (run folder suffix, normalized model args, label suffix); the model args
    as given, then with `images=<mode>` when `ablate_images` asks."""
    model_args = normalize_model_args(model_args)
    out = [("", model_args, "")]
    if ablate_images is None:
        return out
    if ablate_images not in ABLATIONS:
        raise SweepError(f"--ablate-images {ablate_images!r}: expected one of {', '.join(ABLATIONS)}")
    if any(pair.partition("=")[0] == "images" for pair in model_args.split(",")):
        raise SweepError("--model_args: leave out images with --ablate-images (the sweep sets it for each run)")
    ablated = normalize_model_args(",".join(x for x in (model_args, f"images={ablate_images}") if x))
    return [*out, (f".images-{ablate_images}", ablated, f" (images={ablate_images})")]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"I/N"` (1 <= I <= N) -> (I, N); None for None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SweepError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
    return int(m.group(1)), int(m.group(2))


def share(checkpoints: Sequence[Checkpoint], shard: tuple[int, int] | None) -> list[Checkpoint]:
    """The checkpoints of shard (i, n): positions i-1, i-1+n, ... of the training order. Positions stay put
    while new checkpoints come with larger steps (watch), so a checkpoint never changes shard."""
    if shard is None:
        return list(checkpoints)
    i, n = shard
    return [c for k, c in enumerate(checkpoints) if k % n == i - 1]


# ----------------------------------------------------------------------------------------------------- the sweep


@dataclass
class Outcome:
    checkpoint: Checkpoint
    status: str  # evaluated | skipped | failed | incomplete
    seconds: float = 0.0
    results: Path | None = None
    message: str = ""  # failed or incomplete: why, one line
    variant: str = ""  # "" or the image ablation's label suffix, " (images=none)"
    kept: Path | None = None  # failed: the kept log (runs/<name>.failed/lmms_eval.log), or the kept folder


@dataclass
class SweepResult:
    outcomes: list[Outcome]
    report: Path | None

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "incomplete")]


# The scores of a checkpoint's line: (label, metric, digits); BPB and Brier: lower is better
HEADLINE = (("SDS", "sds", 4), ("acc", "acc", 4), ("BPB", "bpb", 3), ("Brier", "brier", 4))


def headline(results: Path, tasks: Sequence[str]) -> str:
    """`radar_mmm SDS 0.xxxx, acc 0.xxxx, BPB x.xxx, Brier 0.xxxx` (or the first task's; the scores it has) from a
    results JSON."""
    try:
        entries = Results.read(results).entries
    except ResultsError:
        return ""
    for task in ["radar_mmm", *tasks]:
        value = entries[task].value("sds") if task in entries else None
        if value is not None and math.isfinite(value):
            scores = [(label, entries[task].value(metric), digits) for label, metric, digits in HEADLINE]
            return f"{task} " + ", ".join(
                f"{label} {v:.{digits}f}" for label, v, digits in scores if v is not None and math.isfinite(v)
            )
    return ""


def evaluate_checkpoint(
    checkpoint: Path,
    tasks: str,
    output_path: Path,
    data_dir: Path,
    *,
    model_args: str,
    batch_size: str | None,
    limit: float | None,
    log_samples: bool,
    threads: int | None = None,
) -> Path:
    """One checkpoint through lmms-eval's CLI entry point, in this process; returns its results JSON."""
    from radar_tasks import runner

    args = ",".join(x for x in (f"pretrained={checkpoint}", model_args) if x)
    extra = [
        *(["--batch_size", str(batch_size)] if batch_size is not None else []),
        *(["--limit", f"{limit:g}"] if limit is not None else []),
    ]
    return runner.run_in_process(args, tasks, output_path, data_dir, extra, log_samples=log_samples, threads=threads)


class _Progress:
    """One line per checkpoint and a bar over the checkpoints (tqdm, on stderr)."""

    def __init__(self, print_fn: Callable[[str], None] | None):
        self.print_fn = print_fn
        self.bar = None
        if print_fn is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="checkpoint", desc="sweep", file=sys.stderr, dynamic_ncols=True)

    def total(self, n: int) -> None:
        if self.bar is not None and self.bar.total != n:
            self.bar.total = n
            self.bar.refresh()

    def line(self, text: str, advance: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
            if advance:
                self.bar.update(1)
        else:
            self.print_fn(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def refresh_report(out_dir: Path, done: Sequence[tuple[Checkpoint, Path]]) -> Path | None:
    """Rewrite `out_dir/report/` from the checkpoints with results (in training order), unless it was already
    written from exactly these runs and labels; written into a hidden sibling and swapped in whole."""
    if not done:
        return None
    report_dir = out_dir / "report"
    labels = [{"label": c.name, **({"step": c.step} if c.step is not None else {}), **c.labels} for c, _ in done]
    inputs = {"runs": [str(r) for _, r in done], "labels": labels}
    if (report_dir / "report.md").is_file() and resume.read_json(report_dir / REPORT_INPUTS) == inputs:
        return report_dir / "report.md"
    from radar_tasks.analysis import write_report

    tmp = resume.fresh_partial(out_dir, "report")
    write_report([r for _, r in done], tmp, labels=labels)
    (tmp / REPORT_INPUTS).write_text(json.dumps(inputs, indent=1) + "\n", encoding="utf-8")
    swap_in(tmp, report_dir)
    return report_dir / "report.md"


def sweep(
    checkpoints: Sequence[str | os.PathLike],
    tasks: str | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    model_args: str = "",
    batch_size: str | int | None = None,
    limit: float | None = None,
    log_samples: bool = False,
    shard: str | tuple[int, int] | None = None,
    ablate_images: str | None = None,
    watch: float | None = None,
    manifest: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    poll: float = 30.0,
    threads: int | None = None,
    report: bool = True,
    wandb: str | None = None,
    tensorboard: str | os.PathLike | None = None,
    print_fn: Callable[[str], None] | None = None,
    evaluate_fn: Callable[..., Path] = evaluate_checkpoint,
) -> SweepResult:
    """Evaluate, resume, shard and watch (module docstring). `print_fn`: where the per-checkpoint lines go (None:
    stdout, with a progress bar on stderr). `report`: refresh `out_dir/report/`. `wandb` ("PROJECT[/RUN]"),
    `tensorboard` (a folder): log every checkpoint with results there (`dashboards`; the runs of the model args as
    given, not the image ablation's). `evaluate_fn(checkpoint, tasks, output_path, data_dir, **options)` evaluates
    one checkpoint into `output_path` and returns its results JSON (default: lmms-eval in process).
    `ablate_images`: also evaluate every checkpoint with `images=<mode>` (module docstring)."""
    from radar_tasks.dashboards import DashboardError, Dashboards
    from radar_tasks.data import m3bench

    task_list = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not task_list:
        raise SweepError("--tasks: no task given")
    shard = parse_shard(shard) if isinstance(shard, (str, type(None))) else shard
    runs_of = variants(model_args, ablate_images)
    root = m3bench.resolve_root(data_dir).absolute()
    fingerprint = m3bench.data_fingerprint(root, taxonomy.subsets_of(task_list) or None)
    # per evaluation of a checkpoint: (run folder suffix, run key, options, label suffix)
    plan = [
        (
            suffix,
            resume.run_key(task_list, args, limit, fingerprint),
            {
                "model_args": args,
                "batch_size": batch_size,
                "limit": limit,
                "log_samples": log_samples,
                "threads": threads,
            },
            label,
        )
        for suffix, args, label in runs_of
    ]
    out = Path(out_dir).absolute()
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    resume.remove_dead_partials(runs_dir)
    patterns = [str(t) for t in checkpoints]
    if watch is not None:  # also find later checkpoints of the runs given as folders
        patterns += [watch_pattern(Path(t)) for t in checkpoints if not is_pattern(str(t))]
        patterns = list(dict.fromkeys(patterns))

    try:
        boards = Dashboards(out, wandb=wandb, tensorboard=tensorboard)
    except DashboardError as exc:
        raise SweepError(str(exc)) from None
    progress = _Progress(print_fn)
    boards.print_fn = progress.line
    report_on, report = report, None
    outcomes: list[Outcome] = []
    handled: set[str] = set()
    seen: set[str] = set()
    last_new = time.monotonic()
    try:
        while True:
            listed = list_checkpoints(patterns, manifest)
            if {c.name for c in listed} - seen:
                seen |= {c.name for c in listed}
                last_new = time.monotonic()
            mine = share(listed, shard)
            progress.total(len(mine))
            pending = [c for c in mine if c.name not in handled]
            evaluated_any = False
            for c in pending:
                problem = weights_problem(c.path)
                if problem is not None:
                    if watch is None:  # nothing will finish writing it: say so, and count it as not done
                        handled.add(c.name)
                        outcomes.append(Outcome(c, "incomplete", message=problem))
                        progress.line(f"{c.name}: weights not completely written ({problem}): not evaluated", True)
                    continue
                handled.add(c.name)
                for i, (suffix, key, options, label) in enumerate(plan):
                    outcome = _one(c, key, task_list, runs_dir, root, options, evaluate_fn, suffix, label)
                    outcomes.append(outcome)
                    if outcome.status == "evaluated":
                        evaluated_any = True
                        if report_on:
                            report = refresh_report(out, _done(listed, runs_dir, plan, log_samples)) or report
                        boards.log(_done(listed, runs_dir, plan[:1], log_samples))
                    line = _outcome_line(f"[{len(handled)}/{len(mine)}]", outcome, task_list)
                    progress.line(line, i == len(plan) - 1)
            if watch is None:
                break
            if evaluated_any:  # the wait for a new checkpoint starts when the work is done
                last_new = time.monotonic()
            if not evaluated_any:
                idle = time.monotonic() - last_new
                if idle >= watch:
                    progress.line(f"no new checkpoint for {idle:.0f} s: stopping")
                    for c in mine:
                        if c.name not in handled:
                            problem = weights_problem(c.path)
                            outcomes.append(Outcome(c, "incomplete", message=problem or "appeared at the end"))
                            progress.line(f"{c.name}: weights not completely written ({problem}): not evaluated")
                    break
                time.sleep(max(0.0, min(poll, watch - idle)))
        if report_on:
            report = refresh_report(out, _done(listed, runs_dir, plan, log_samples)) or report
        boards.log(_done(listed, runs_dir, plan[:1], log_samples))
        boards.finish(Path(report).parent if report else None)
    finally:
        boards.close()
        progress.close()
    return SweepResult(outcomes, report)


def _outcome_line(position: str, outcome: Outcome, tasks: Sequence[str]) -> str:
    """The line a checkpoint's outcome prints: `[2/5] step_200: evaluated in 41.3 s, radar_mmm SDS 0.3120, acc 0.3500,
    BPB 5.123, Brier 0.6800`."""
    name = outcome.checkpoint.name + outcome.variant
    if outcome.status == "skipped":
        return (
            f"{position} {name}: skipped, complete results for these tasks, model args and "
            f"data ({headline(outcome.results, tasks)})"
        )
    if outcome.status == "failed":
        kept = f" (log: {outcome.kept})" if outcome.kept else ""
        return f"{position} {name}: FAILED after {outcome.seconds:.1f} s: {outcome.message}{kept}"
    return f"{position} {name}: evaluated in {outcome.seconds:.1f} s, {headline(outcome.results, tasks)}"


def _done(
    listed: Sequence[Checkpoint], runs_dir: Path, plan: Sequence, log_samples: bool
) -> list[tuple[Checkpoint, Path]]:
    """Every listed checkpoint (all shards) with complete results, in training order: those of the model args as
    given, then those of the image ablation (labelled `<label> (images=<mode>)`)."""
    done = []
    for suffix, key, _options, label in plan:
        for c in listed:
            stamp = weights_stamp(c.path) if c.path.is_dir() else None
            results = resume.finished(runs_dir / (c.name + suffix), key, stamp, log_samples) if stamp else None
            if results is not None:
                labels = {**c.labels, "label": (c.labels.get("label") or c.name) + label} if label else c.labels
                done.append((Checkpoint(c.path, c.step, labels), results))
    return done


def _one(
    c: Checkpoint,
    key: Mapping,
    tasks: Sequence[str],
    runs_dir: Path,
    root: Path,
    options: dict,
    evaluate_fn,
    suffix: str = "",
    variant: str = "",
) -> Outcome:
    """Skip or evaluate one checkpoint; results land in `runs_dir/<name><suffix>/` whole or not at all (`resume`)."""
    final = runs_dir / (c.name + suffix)
    stamp = weights_stamp(c.path)
    results = resume.finished(final, key, stamp, options["log_samples"])
    if results is not None:
        return Outcome(c, "skipped", results=results, variant=variant)
    partial = resume.fresh_partial(runs_dir, final.name)
    t0 = time.monotonic()
    try:
        produced = evaluate_fn(c.path, ",".join(tasks), partial, root, **options)
    except Exception as exc:  # one bad checkpoint does not stop a sweep of fifty; its log is kept, with the cause
        from radar_tasks.runner import describe_failure

        cause = describe_failure(exc)
        return _failed(c, partial, final, time.monotonic() - t0, cause, getattr(exc, "log", None), variant)
    seconds = time.monotonic() - t0
    meta = {
        "key": dict(key),
        "weights": stamp,
        "log_samples": bool(options["log_samples"]),
        "results": str(Path(produced).resolve().relative_to(partial.resolve())),
        "checkpoint": str(c.path),
        "step": c.step,
        "labels": c.labels,
        "seconds": round(seconds, 1),
    }
    resume.record(partial, meta)
    if weights_stamp(c.path) != stamp:  # the folder changed while it was evaluated: these are not its results
        return _failed(c, partial, final, seconds, "the checkpoint folder changed during its evaluation", None, variant)
    swap_in(partial, final)
    resume.clear_failure(final)
    return Outcome(c, "evaluated", seconds, results=final / meta["results"], variant=variant)


def _failed(c: Checkpoint, partial: Path, final: Path, seconds: float, cause: str, log, variant: str) -> Outcome:
    """A failed evaluation: its partial folder kept as `<name>.failed/` (the log named in the outcome)."""
    failure = {"cause": cause, "checkpoint": str(c.path), "step": c.step, "seconds": round(seconds, 1)}
    failure["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    kept = resume.keep_failure(partial, final, failure)
    log = kept / Path(log).relative_to(partial) if log and Path(log).is_relative_to(partial) else None
    kept = log if log and log.is_file() else kept
    return Outcome(c, "failed", seconds, message=cause, kept=kept, variant=variant)
