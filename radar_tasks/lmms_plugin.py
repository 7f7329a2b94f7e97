"""The `lmms_eval.models` entry point: what `pip install radar-tasks` adds to lmms-eval.

lmms-eval loads every `lmms_eval.models` entry point when `lmms_eval.models` is first imported, which the CLI and
`lmms_eval.evaluator` do before any TaskManager exists. Loading ours
1. registers the `radar_hf` model;
2. makes the M3-Bench task folder discoverable with no flag: lmms-eval 0.7.3 has no plugin hook for tasks
   (LMMS_EVAL_PLUGINS adds its task folder too late), so `TaskManager.initialize_tasks` is wrapped to index our
   folder after the built-in tasks and any `--include_path` (those win on a name clash);
3. registers the SDS aggregations by name (`radar_sds`, `radar_acc`, `radar_count`) for anyone's task YAML.
Set RADAR_TASKS_NO_DISCOVERY=1 to skip 2 (then use `--include_path $(radar-tasks task-dir)`).
"""

from __future__ import annotations

import os
from pathlib import Path

import radar_tasks.task_yamls

TASK_DIR = str(Path(radar_tasks.task_yamls.__file__).resolve().parent)


def enable_task_discovery() -> None:
    from lmms_eval.tasks import TaskManager

    if getattr(TaskManager.initialize_tasks, "radar_tasks", False):
        return
    original = TaskManager.initialize_tasks

    def initialize_tasks(self, include_path=None, include_defaults=True):
        index = original(self, include_path=include_path, include_defaults=include_defaults)
        if include_defaults:
            index = {**self._get_task_and_group(TASK_DIR), **index}
        return index

    initialize_tasks.radar_tasks = True
    TaskManager.initialize_tasks = initialize_tasks


def model_manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    if not os.environ.get("RADAR_TASKS_NO_DISCOVERY"):
        enable_task_discovery()
    from radar_tasks.metrics import lmms as lmms_metrics

    lmms_metrics.register()
    return [ModelManifest(model_id="radar_hf", simple_class_path="radar_tasks.models.radar_hf.RadarHF")]
