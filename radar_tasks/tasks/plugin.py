"""The `lmms_eval.models` entry point: what `pip install radar-tasks` adds to lmms-eval.

lmms-eval loads every `lmms_eval.models` entry point when `lmms_eval.models` is first imported, which the CLI and
`lmms_eval.evaluator` do before any TaskManager exists. Loading ours
1. registers the `radar_hf` model;
2. makes the M3-Bench task folder discoverable with no flag: lmms-eval 0.7.3 has no plugin hook for tasks
   (LMMS_EVAL_PLUGINS adds its task folder too late), so `TaskManager.initialize_tasks` is wrapped to index our
   folder after the built-in tasks and any `--include_path` (those win on a name clash);
3. registers the SDS aggregations by name (`radar_sds`, `radar_acc`, `radar_count`) for anyone's task YAML;
4. gives those aggregations their bootstrap stderrs and M3-Bench groups the stderr of their unweighted mean
   (`install_stderr_hooks`).
Set RADAR_TASKS_NO_DISCOVERY=1 to skip 2 (then use `--include_path $(radar-tasks task-dir)`).
5. on request (`reuse_task_index`, by the sweep and the in-loop evaluator, which build many TaskManagers in one
   process), the task index is built once per include path instead of once per TaskManager (~9 s each here).
This module is the one place that changes lmms-eval's behaviour (2, 4 and 5, all wrapping the original).
"""

from __future__ import annotations

import os
from pathlib import Path

import radar_tasks.task_yamls

TASK_DIR = str(Path(radar_tasks.task_yamls.__file__).resolve().parent)


_INDEX_CACHE: dict | None = None  # None: off (lmms-eval's own behaviour); else (include path, defaults) -> index


def reuse_task_index() -> None:
    """From now on in this process, a TaskManager reuses the task index of an earlier one with the same
    include path (task YAMLs are read once per process: edit them, and start a new process)."""
    global _INDEX_CACHE
    _wrap_initialize_tasks()
    if _INDEX_CACHE is None:
        _INDEX_CACHE = {}


def _wrap_initialize_tasks() -> None:
    from lmms_eval.tasks import TaskManager

    if getattr(TaskManager.initialize_tasks, "radar_tasks", False):
        return
    original = TaskManager.initialize_tasks

    def initialize_tasks(self, include_path=None, include_defaults=True):
        key = (repr(include_path), include_defaults, bool(os.environ.get("RADAR_TASKS_NO_DISCOVERY")))
        if _INDEX_CACHE is not None and key in _INDEX_CACHE:
            return dict(_INDEX_CACHE[key])
        index = original(self, include_path=include_path, include_defaults=include_defaults)
        if include_defaults and not os.environ.get("RADAR_TASKS_NO_DISCOVERY"):
            index = {**self._get_task_and_group(TASK_DIR), **index}
        if _INDEX_CACHE is not None:
            _INDEX_CACHE[key] = dict(index)
        return index

    initialize_tasks.radar_tasks = True
    TaskManager.initialize_tasks = initialize_tasks


def enable_task_discovery() -> None:
    _wrap_initialize_tasks()


def install_stderr_hooks() -> None:
    """Give our aggregations bootstrap stderrs, and M3-Bench groups the stderr of their unweighted mean.

    lmms-eval 0.7.3 computes stderrs only for a fixed list of built-in aggregations, and pools group stderrs as
    if groups were size-weighted. Both hooks wrap the original and change nothing for other aggregations/tasks.
    """
    from lmms_eval import evaluator_utils as eu

    from radar_tasks.metrics import items

    if getattr(eu.stderr_for_metric, "radar_hook", False):
        return
    original_stderr, original_pooled = eu.stderr_for_metric, eu.pooled_sample_stderr

    def stderr_for_metric(metric, bootstrap_iters: int):
        own = getattr(metric, "radar_stderr", None)
        if own is not None and bootstrap_iters > 0:
            return lambda values: own(values, bootstrap_iters)
        return original_stderr(metric, bootstrap_iters)

    def pooled_sample_stderr(stderrs, sizes):
        combined = items.group_stderr(stderrs)
        return original_pooled(stderrs, sizes) if combined is None else combined

    stderr_for_metric.radar_hook = True
    eu.stderr_for_metric, eu.pooled_sample_stderr = stderr_for_metric, pooled_sample_stderr


def model_manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    from radar_tasks.metrics import lmms as lmms_metrics

    if not os.environ.get("RADAR_TASKS_NO_DISCOVERY"):
        enable_task_discovery()
    lmms_metrics.register()
    install_stderr_hooks()
    return [ModelManifest(model_id="radar_hf", simple_class_path="radar_tasks.models.radar_hf.RadarHF")]
