"""A sweep's results on the team's dashboards: Weights & Biases (`--wandb PROJECT[/RUN]`) and TensorBoard
(`--tensorboard DIR`).

Each checkpoint with results is logged once, at its training step: every score of the results JSON's groups and
subset-level tasks (radar_mmm, the ability splits and groups, each subset; sds, acc and any other metric, their
stderrs, items, skipped: `checkpoint_metrics`) under the keys `RadarCallback` logs through a Trainer
(`eval/radar/<task>/<metric>`), with the step under `train/global_step` and the tokens seen, where known, under
`train/num_input_tokens_seen` (the keys of transformers' Trainer: curves logged into the training run's own W&B
run line up with its loss).

* W&B: `define_metric("eval/radar/*", step_metric="train/global_step")`, so points land at their own step
  whatever order they are logged in (shards, resumed sweeps); tokens seen is a metric to choose as the x axis. The
  run is `RUN` (its W&B id: give the training run's id to log beside its curves), else one derived from the
  sweep's `--out` folder, resumed when it exists. The report (report.html, report.md, figures) is uploaded to the
  run's files when anything was logged.
* TensorBoard: scalars at `global_step` = the training step (tokens seen as a scalar of its own), one event file
  per process in DIR.
* Never twice: before logging a checkpoint to a destination the sweep creates `out/dashboards/<destination>/
  <checkpoint name>` exclusively (an atomic claim between shards and later sweeps); a checkpoint that has one is
  not logged again, so a rerun of a finished sweep logs nothing (and opens no W&B run). A logging error gives up
  the claim (the next sweep tries again) and is reported, never fatal.

`wandb` and `tensorboard` are optional extras (`pip install "radar-tasks[wandb]"`, `"radar-tasks[tensorboard]"`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from radar_tasks import taxonomy
from radar_tasks.checkpoints import Checkpoint
from radar_tasks.results import Results, ResultsError

PREFIX = "eval/radar"  # the keys RadarCallback's metrics get through a Trainer: eval/radar/<task>/<metric>
STEP_KEY = "train/global_step"
TOKENS_KEY = "train/num_input_tokens_seen"
LEDGER = "dashboards"  # out/dashboards/<destination>/<checkpoint name>: logged there
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class DashboardError(ValueError):
    """A dashboard cannot be used (one line: the flag, what is wrong, how to fix it)."""


def _need(module: str, flag: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise DashboardError(f'{flag} needs the {module} package: pip install "radar-tasks[{extra}]"')


def checkpoint_metrics(results: Results) -> dict[str, float]:
    """`eval/radar/<task>/<metric>` -> value of every finite number (scores, stderrs, items, skipped) of the groups
    and subset-level tasks of a results JSON; categories of multi-category subsets are left out."""
    out = {}
    for task, entry in results.entries.items():
        leaf = taxonomy.leaf_of(task)
        if leaf is not None and leaf[0] != leaf[1]:
            continue
        for metric, value in entry.values().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{PREFIX}/{task}/{metric}"] = float(value)
    return out


def tokens_of(c: Checkpoint) -> int | None:
    from radar_tasks.analysis.runs import RunError, parse_number

    try:
        tokens = parse_number(c.labels.get("tokens"))
    except RunError:
        return None
    return int(tokens) if tokens is not None else None


class _WandB:
    """One W&B run, opened on the first checkpoint to log."""

    def __init__(self, spec: str, out: Path):
        _need("wandb", "--wandb", "wandb")
        project, _, run_id = spec.partition("/")
        if not project.strip():
            raise DashboardError(f"--wandb {spec!r}: expected PROJECT or PROJECT/RUN")
        if run_id and not _RUN_ID.fullmatch(run_id):
            raise DashboardError(f"--wandb {spec!r}: RUN is a W&B run id: letters, digits, - and _ (at most 128)")
        self.project = project.strip()
        self.run_id = run_id or "radar-sweep-" + hashlib.sha1(str(out).encode()).hexdigest()[:12]
        self.name = run_id or f"radar-sweep {out.name}"
        self.out = out
        self.key = f"wandb-{self.project}-{self.run_id}"
        self.label = f"W&B {self.project}/{self.run_id}"
        self.run = None

    def _open(self):
        if self.run is None:
            import wandb

            self.run = wandb.init(
                project=self.project,
                id=self.run_id,
                name=self.name,
                resume="allow",
                dir=os.environ.get("WANDB_DIR") or str(self.out),
                job_type="radar-sweep",
                config={"radar_sweep_out": str(self.out)},
            )
            self.run.define_metric(STEP_KEY)
            self.run.define_metric(TOKENS_KEY, step_metric=STEP_KEY)
            self.run.define_metric(f"{PREFIX}/*", step_metric=STEP_KEY)
        return self.run

    def log(self, step: int, tokens: int | None, metrics: Mapping[str, float]) -> None:
        row = {STEP_KEY: step, **({TOKENS_KEY: tokens} if tokens is not None else {}), **metrics}
        self._open().log(row)

    def upload(self, report_dir: Path) -> None:
        """Copy the report's page, Markdown and figures into the run's files (uploaded by W&B)."""
        if self.run is None or not report_dir.is_dir():
            return
        target = Path(self.run.dir) / "report"
        for path in [*report_dir.glob("report*"), *report_dir.glob("figures/*.png")]:
            dest = target / path.relative_to(report_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        self.run.save(str(target / "*"), base_path=self.run.dir, policy="now")
        self.run.save(str(target / "figures" / "*"), base_path=self.run.dir, policy="now")

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class _TensorBoard:
    """A SummaryWriter into DIR, opened on the first checkpoint to log."""

    def __init__(self, folder: str | os.PathLike):
        _need("tensorboard", "--tensorboard", "tensorboard")
        self.folder = Path(folder).absolute()
        self.key = "tensorboard-" + hashlib.sha1(str(self.folder).encode()).hexdigest()[:12]
        self.label = f"TensorBoard {self.folder}"
        self.writer = None

    def log(self, step: int, tokens: int | None, metrics: Mapping[str, float]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.folder))
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        if tokens is not None:
            self.writer.add_scalar(TOKENS_KEY, tokens, global_step=step)
        self.writer.flush()

    def upload(self, report_dir: Path) -> None:
        pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Dashboards:
    """The dashboards of one sweep (none, W&B, TensorBoard or both)."""

    def __init__(
        self,
        out: str | os.PathLike,
        wandb: str | None = None,
        tensorboard: str | os.PathLike | None = None,
        print_fn: Callable[[str], None] = print,
    ):
        """DashboardError when a destination cannot be used (a missing extra, a bad `--wandb`); nothing is opened
        before a checkpoint is logged."""
        self.out = Path(out).absolute()
        self.sinks = [
            *([_WandB(wandb, self.out)] if wandb else []),
            *([_TensorBoard(tensorboard)] if tensorboard else []),
        ]
        self.print_fn = print_fn
        self.logged: dict[str, list[str]] = {}  # destination label -> checkpoints this process logged
        self.warned: set[str] = set()

    def _claim(self, key: str, c: Checkpoint, results: Path) -> Path | None:
        folder = self.out / LEDGER / key
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / c.name
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps({"step": c.step, "results": str(results), "time": time.time()}) + "\n")
        return marker

    def log(self, done: Sequence[tuple[Checkpoint, Path]]) -> int:
        """Log every checkpoint of `done` (training order) not yet logged to each destination; returns how many
        (checkpoint, destination) pairs were logged."""
        n = 0
        for c, results in done:
            if not self.sinks:
                break
            if c.step is None:
                if c.name not in self.warned:
                    self.warned.add(c.name)
                    self.print_fn(
                        f"dashboards: {c.name} has no training step (name it step_<N> or give it in a "
                        "--manifest): not logged"
                    )
                continue
            try:
                metrics = checkpoint_metrics(Results.read(results))
            except ResultsError as exc:
                self.print_fn(f"dashboards: {c.name}: {exc}: not logged")
                continue
            for sink in self.sinks:
                marker = self._claim(sink.key, c, results)
                if marker is None:
                    continue
                try:
                    sink.log(int(c.step), tokens_of(c), metrics)
                except Exception as exc:  # a dashboard that fails never stops the sweep: the next one retries
                    marker.unlink(missing_ok=True)
                    self.print_fn(f"dashboards: {sink.label}: {c.name} not logged ({type(exc).__name__}: {exc})")
                    continue
                self.logged.setdefault(sink.label, []).append(c.name)
                n += 1
        return n

    def finish(self, report_dir: Path | None) -> None:
        """Upload the report where this process logged anything, say what was logged, close the destinations."""
        try:
            for sink in self.sinks:
                if report_dir is not None and sink.label in self.logged:
                    try:
                        sink.upload(report_dir)
                    except Exception as exc:
                        self.print_fn(f"dashboards: {sink.label}: report not uploaded ({type(exc).__name__}: {exc})")
            for label, names in self.logged.items():
                self.print_fn(f"dashboards: {len(names)} checkpoint(s) logged to {label}")
        finally:
            self.close()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
