"""A sweep's run folders, `out/runs/<checkpoint name>/`: what makes a checkpoint's evaluation done, and how an
interrupted one is redone, never half counted.

A checkpoint is evaluated into a hidden `.<name>.partial-<host>-<pid>` sibling, which is renamed to `<name>` only
once its results JSON and `sweep.json` (what was evaluated: the run key, the weights stamp, where the results JSON
is) are written. A later sweep skips a checkpoint whose `sweep.json` matches its key and weights (`finished`);
partial folders of processes that died are removed (`remove_dead_partials`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from radar_tasks.results import Results, ResultsError
from radar_tasks.staging import swap_in

SWEEP_FILE = "sweep.json"
SWEEP_VERSION = 1
FAILED_SUFFIX = ".failed"  # runs/<name>.failed/: the kept folder of a failed evaluation
FAILURE_FILE = "failure.json"


def run_key(tasks: Sequence[str], model_args: str, limit: float | None, fingerprint: str) -> dict:
    """What makes two evaluations of one checkpoint the same run (the checkpoint's weights stamp is added).
    `model_args`: normalized (sorted by key), so the same args in another order are the same run."""
    return {
        "version": SWEEP_VERSION,
        "tasks": sorted(set(tasks)),
        "model_args": model_args,
        "limit": limit,
        "data": fingerprint,
    }


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing, unreadable or no object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished(run_dir: Path, key: Mapping, stamp: str, log_samples: bool) -> Path | None:
    """The results JSON of a complete earlier evaluation into `run_dir` of the same key and weights (with per-item
    logs when `log_samples` asks for them), or None."""
    meta = read_json(run_dir / SWEEP_FILE)
    if not meta or meta.get("key") != dict(key) or meta.get("weights") != stamp:
        return None
    if log_samples and not meta.get("log_samples"):
        return None
    path = run_dir / str(meta.get("results", ""))
    try:
        results = Results.read(path)
    except ResultsError:
        return None
    return path if all(t in results.entries for t in key["tasks"]) else None


def record(partial: Path, meta: Mapping) -> None:
    """Write `sweep.json` into an evaluated partial folder: what makes it finished (`key`, `weights`,
    `log_samples`, `results`: the results JSON's path inside the folder) and what the report labels it with."""
    (partial / SWEEP_FILE).write_text(json.dumps(dict(meta), indent=1) + "\n", encoding="utf-8")


# -------------------------------------------------------------------------------------------------- partial folders


def partial_name(name: str) -> str:
    """The hidden sibling `name` is written into by this process (`.<name>.partial-<host>-<pid>`)."""
    return f".{name}.partial-{socket.gethostname()}-{os.getpid()}"


def fresh_partial(runs_dir: Path, name: str) -> Path:
    """This process's empty partial folder for checkpoint `name` (what an earlier attempt left there removed)."""
    partial = runs_dir / partial_name(name)
    shutil.rmtree(partial, ignore_errors=True)
    return partial


def discard(partial: Path) -> None:
    """Remove a partial folder whose evaluation failed: its checkpoint counts as not done."""
    shutil.rmtree(partial, ignore_errors=True)


def failed_dir(final: Path) -> Path:
    """Where the failed evaluation of the run folder `final` is kept: `<name>.failed/` beside it."""
    return final.with_name(final.name + FAILED_SUFFIX)


def keep_failure(partial: Path, final: Path, failure: Mapping) -> Path:
    """Keep the partial folder of a failed evaluation (its log, whatever was written) as `<name>.failed/`, with
    `failure.json` (`failure`: cause, checkpoint, ...), replacing an earlier failure; returns that folder."""
    partial.mkdir(parents=True, exist_ok=True)
    (partial / FAILURE_FILE).write_text(json.dumps(dict(failure), indent=1) + "\n", encoding="utf-8")
    kept = failed_dir(final)
    swap_in(partial, kept)
    return kept


def clear_failure(final: Path) -> None:
    """Remove the kept failure of `final` once it has results."""
    shutil.rmtree(failed_dir(final), ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_partials(runs_dir: Path) -> list[Path]:
    """Remove the partial folders that processes of this host left behind when they died; returns them."""
    host = socket.gethostname()
    removed = []
    for p in runs_dir.glob(".*.partial-*") if runs_dir.is_dir() else ():
        owner = p.name.rsplit(".partial-", 1)[1]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
