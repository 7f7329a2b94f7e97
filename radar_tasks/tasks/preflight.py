"""What a run with M3-Bench tasks or `radar_hf` checks before its model loads, and what its results JSON records.

`check(...)` takes the arguments of `lmms_eval.evaluator.simple_evaluate`: radar_hf's model args and the lmms-eval
flags that reach them (`radar_tasks.models.args`), then every M3-Bench category the requested tasks read, through
the one validator (`radar_tasks.data.m3bench.load_category`, which also caches the records the tasks then load).
The first problem raises an `InputError` (one line). `radar_tasks.tasks.plugin` runs it at the start of every
`simple_evaluate` (the lmms-eval CLI's included); code calling `simple_evaluate` it imported before a TaskManager
existed can call `check` itself. `metadata(...)` is what the results JSON gets under `radar_tasks`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

import radar_tasks
from radar_tasks import taxonomy
from radar_tasks.data import m3bench
from radar_tasks.errors import CategoryFileMissing
from radar_tasks.task_yamls import TASK_DIR

MODEL_NAME = "radar_hf"
# (root, leaves, data fingerprint) that passed `check` in this process: the fingerprint covers every byte of the json
# files and the name, size and mtime of every image the leaves' subsets hold, so a check of the same is not redone
_PASSED: set[tuple] = set()


@dataclass
class Checked:
    """What `check` found: the M3-Bench leaves the run reads, its data root and fingerprint."""

    leaves: list[tuple[str, str]] = field(default_factory=list)
    root: Path | None = None
    fingerprint: str | None = None


def _ours(name: str, task_manager) -> bool:
    """`name` resolves to our task folder (a built-in or --include_path task of the same name wins there)."""
    index = getattr(task_manager, "task_index", None) if task_manager is not None else None
    if index is None:
        return True
    path = (index.get(name) or {}).get("yaml_path")
    return isinstance(path, str) and Path(path).resolve().is_relative_to(TASK_DIR)


def leaves(tasks, task_manager=None) -> list[tuple[str, str]]:
    """(subset, category) of every M3-Bench leaf the requested task and group names cover, in order."""
    found = []
    for name in tasks if isinstance(tasks, (list, tuple)) else [tasks]:
        if isinstance(name, str) and _ours(name, task_manager):
            found += taxonomy.leaves_of(name) or []
    return list(dict.fromkeys(found))


def check(
    *, model=None, model_args=None, tasks=(), batch_size=None, max_batch_size=None, device=None, task_manager=None
) -> Checked:
    """Raise InputError (one line) on the first bad model arg or M3-Bench category of a run; else what it reads."""
    if model == MODEL_NAME:
        from radar_tasks.models.radar_hf import RadarHF

        RadarHF.kwargs_from(model_args, {"batch_size": batch_size, "max_batch_size": max_batch_size, "device": device})
    checked = Checked(leaves(tasks, task_manager))
    if not checked.leaves:
        return checked
    checked.root = m3bench.resolve_root()
    subsets = list(dict.fromkeys(s for s, _ in checked.leaves))
    checked.fingerprint = m3bench.data_fingerprint(checked.root, subsets)
    done = (str(checked.root.absolute()), tuple(checked.leaves), checked.fingerprint)
    if done in _PASSED:  # the same files passed this check before in this process (in-loop evaluations)
        return checked
    for subset in subsets:
        found = m3bench.subset_files(checked.root, subset)
        for path in found.unknown:
            logger.warning(m3bench.unknown_file_problem(checked.root, subset, path, found))
    for subset, category in checked.leaves:
        with contextlib.suppress(CategoryFileMissing):  # the task reports no score (hooks.process_docs says so)
            m3bench.load_category(subset, category, checked.root)
    _PASSED.add(done)
    return checked


def metadata(checked: Checked, lm) -> dict:
    """The results JSON's `radar_tasks` entry: package version, data root and fingerprint, radar_hf's settings."""
    out = {"version": radar_tasks.__version__}
    if checked.leaves:
        out["data"] = {
            "root": str(checked.root),
            "fingerprint": checked.fingerprint,
            "subsets": list(dict.fromkeys(s for s, _ in checked.leaves)),
        }
    if hasattr(lm, "run_metadata"):
        out["model"] = lm.run_metadata()
    return out
