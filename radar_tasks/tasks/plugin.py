"""The `lmms_eval.models` entry point: what `pip install radar-tasks` adds to lmms-eval.

lmms-eval loads every `lmms_eval.models` entry point when `lmms_eval.models` is first imported, which the CLI and
`lmms_eval.evaluator` do before any TaskManager exists. Loading ours
1. registers the `radar_hf` model;
2. makes the M3-Bench task folder discoverable with no flag: lmms-eval 0.7.3 has no plugin hook for tasks
   (LMMS_EVAL_PLUGINS adds its task folder too late), so `TaskManager.initialize_tasks` is wrapped to index our
   folder after the built-in tasks and any `--include_path` (those win on a name clash);
3. registers the catalogue's aggregations by name (`radar_sds`, `radar_acc`, `radar_bpb`, ...) for anyone's task YAML;
4. gives those aggregations their bootstrap stderrs and M3-Bench groups the stderr of their unweighted mean,
   leaves of one item included (`install_stderr_hooks`);
5. checks a run's data and radar_hf model args before its model loads, and records what it scored with in the
   results JSON (`install_preflight`): lmms-eval loads the model before the tasks, retries a failing dataset
   load five times, and its CLI turns any exception into a traceback and exit status 0;
6. on request (`reuse_task_index`, by the sweep and the in-loop evaluator, which build many TaskManagers in one
   process), the task index is built once per include path instead of once per TaskManager (~9 s each here).
Set RADAR_TASKS_NO_DISCOVERY=1 to skip 2 (then use `--include_path $(radar-tasks task-dir)`).
This module is the one place that changes lmms-eval's behaviour (2, 4, 5 and 6, all wrapping the original).
"""

from __future__ import annotations

import os
import sys

from radar_tasks.task_yamls import TASK_DIR

_INDEX_CACHE: dict | None = None  # None: off (lmms-eval's own behaviour); else (include path, defaults) -> index


def reuse_task_index() -> None:
    """From now on in this process, a TaskManager reuses the task index of an earlier one with the same
    include path (task YAMLs are read once per process: edit them, and start a new process)."""
    global _INDEX_CACHE
    _wrap_initialize_tasks()
    if _INDEX_CACHE is None:
        _INDEX_CACHE = {}


def _wrap_initialize_tasks() -> None:
    """Wrap `TaskManager.initialize_tasks` (once): index our task folder after lmms-eval's own and any
    `--include_path` (unless RADAR_TASKS_NO_DISCOVERY is set), and reuse indexes when `reuse_task_index` asked."""
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


def install_stderr_hooks() -> None:
    """Give our aggregations bootstrap stderrs, and M3-Bench groups the stderr of their unweighted mean.

    lmms-eval 0.7.3 computes stderrs only for a fixed list of built-in aggregations, pools group stderrs as if
    groups were size-weighted, and gives a group "N/A" as soon as one leaf has no stderr (a leaf of one item never
    has one). The first hook wraps `stderr_for_metric`; the group stderrs are rewritten after lmms-eval computed
    the groups (`_wrap_group_results`, on `lmms_eval.evaluator`). Both change nothing for other aggregations/tasks.
    """
    from lmms_eval import evaluator_utils as eu

    if not getattr(eu.stderr_for_metric, "radar_hook", False):
        original_stderr = eu.stderr_for_metric

        def stderr_for_metric(metric, bootstrap_iters: int):
            own = getattr(metric, "radar_stderr", None)
            if own is not None and bootstrap_iters > 0:
                return lambda values: own(values, bootstrap_iters)
            return original_stderr(metric, bootstrap_iters)

        stderr_for_metric.radar_hook = True
        eu.stderr_for_metric = stderr_for_metric
    _on_evaluator(_wrap_group_results)


def _wrap_group_results(evaluator) -> None:
    """Wrap `lmms_eval.evaluator.consolidate_group_results` (the name `evaluate` calls, once): after it, every
    M3-Bench group's stderrs come from its leaves (`metrics.lmms.group_stderrs`, with lmms-eval's own map of each
    group to its leaves, the function's fourth result)."""
    original = evaluator.consolidate_group_results
    if getattr(original, "radar_hook", False):
        return

    def consolidate_group_results(results, versions, task_dict, *args, **kwargs):
        out = original(results, versions, task_dict, *args, **kwargs)
        if not args and not kwargs:  # the top-level call: every group is done
            from radar_tasks.metrics import lmms as lmms_metrics

            lmms_metrics.group_stderrs(out[0], out[3])
        return out

    consolidate_group_results.radar_hook = True
    consolidate_group_results.__wrapped__ = original
    evaluator.consolidate_group_results = consolidate_group_results


def _wrap_simple_evaluate(evaluator) -> None:
    import inspect

    original = evaluator.simple_evaluate
    if getattr(original, "radar_preflight", False):
        return
    signature = inspect.signature(original)

    def simple_evaluate(*args, **kwargs):
        from radar_tasks.errors import cause_of
        from radar_tasks.tasks import preflight

        bound = signature.bind_partial(*args, **kwargs)
        given = {**{k: p.default for k, p in signature.parameters.items()}, **bound.arguments}
        from_cli = given.get("cli_args") is not None
        try:
            checked = preflight.check(
                **{
                    k: given.get(k)
                    for k in ("model", "model_args", "tasks", "batch_size", "max_batch_size", "device", "task_manager")
                }
            )
            results = original(*args, **kwargs)
        except Exception as exc:
            error = cause_of(exc)
            if error is None:
                raise
            if not from_cli:
                raise error from None  # itself, not tenacity's RetryError around it
            # the CLI: one line and a non-zero exit status instead of a traceback and 0 (SystemExit is not an
            # Exception: lmms-eval's `except Exception` lets it through)
            sys.stderr.write(f"error: {error}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None
        lm = given.get("model")
        if lm == preflight.MODEL_NAME:
            from radar_tasks.models.radar_hf import latest_instance

            lm = latest_instance()
        if isinstance(results, dict) and (checked.leaves or hasattr(lm, "run_metadata")):
            results["radar_tasks"] = preflight.metadata(checked, lm)
        return results

    simple_evaluate.radar_preflight = True
    simple_evaluate.__wrapped__ = original
    evaluator.simple_evaluate = simple_evaluate


def install_preflight() -> None:
    """Wrap `lmms_eval.evaluator.simple_evaluate` with the pre-flight check (`radar_tasks.tasks.preflight`)."""
    _on_evaluator(_wrap_simple_evaluate)


_PENDING: list = []  # wraps of `lmms_eval.evaluator` waiting for the module to be imported


def _on_evaluator(wrap) -> None:
    """Apply `wrap(lmms_eval.evaluator)` now, or once that module is imported.

    This module is loaded while `lmms_eval.evaluator` is still being imported (it imports `lmms_eval.models`), so
    a wrap waits for the first TaskManager, which the CLI builds before it calls `evaluator.simple_evaluate`.
    """
    if wrap not in _PENDING:
        _PENDING.append(wrap)
    evaluator = sys.modules.get("lmms_eval.evaluator")
    if evaluator is not None and hasattr(evaluator, "simple_evaluate"):
        for pending in _PENDING:  # each wrap applies once (it marks what it wrapped)
            pending(evaluator)
        return
    from lmms_eval.tasks import TaskManager

    if getattr(TaskManager.__init__, "radar_preflight", False):
        return
    original_init = TaskManager.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        module = sys.modules.get("lmms_eval.evaluator")
        if module is not None and hasattr(module, "simple_evaluate"):
            for pending in _PENDING:
                pending(module)

    __init__.radar_preflight = True
    TaskManager.__init__ = __init__


def model_manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    from radar_tasks.metrics import lmms as lmms_metrics

    if not os.environ.get("RADAR_TASKS_NO_DISCOVERY"):
        _wrap_initialize_tasks()
    lmms_metrics.register()
    install_stderr_hooks()
    install_preflight()
    return [ModelManifest(model_id="radar_hf", simple_class_path="radar_tasks.models.radar_hf.RadarHF")]
