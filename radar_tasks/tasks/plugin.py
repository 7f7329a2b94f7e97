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
6. the index of lmms-eval's own task folder comes from a file kept between processes (`builtin_index`: 9.3 s ->
   1.6 s per TaskManager here, the same index); on request (`reuse_task_index`, by the sweep and the in-loop
   evaluator, which build many TaskManagers in one process), the whole index is built once per include path;
7. on request (`reusing_tasks`, by the in-loop evaluator), the task objects themselves (YAML configs, docs, the
   validated records behind them) are built once and reused by later `simple_evaluate` calls that ask for the same
   M3-Bench tasks of the same data (its fingerprint), and built faster the first time (YAML through libyaml, our
   task-index rows without a datasets builder: the same configs and rows); `quiet_progress` turns lmms-eval's
   progress bars off.
Set RADAR_TASKS_NO_DISCOVERY=1 to skip 2 (then use `--include_path $(radar-tasks task-dir)`).
This module is the one place that changes lmms-eval's behaviour (2, 4, 5, 6 and 7, all wrapping the original).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections import OrderedDict

from radar_tasks.task_yamls import TASK_DIR
from radar_tasks.tasks import builtin_index

_INDEX_CACHE: dict | None = None  # None: off (lmms-eval's own behaviour); else (include path, defaults) -> index
# (task names, data root and fingerprint, task manager settings, task type) -> task dict, the most recent
# `_TASK_DICTS_KEPT`, used inside `reusing_tasks` blocks; `_task_key`: the key of the `simple_evaluate` call in
# progress (None: not reusable)
_TASK_DICTS: OrderedDict = OrderedDict()
_TASK_DICTS_KEPT = 4
_reusing = 0  # `reusing_tasks` blocks open
_task_key: tuple | None = None


def reuse_task_index() -> None:
    """From now on in this process, a TaskManager reuses the task index of an earlier one with the same
    include path (task YAMLs are read once per process: edit them, and start a new process)."""
    global _INDEX_CACHE
    _wrap_initialize_tasks()
    if _INDEX_CACHE is None:
        _INDEX_CACHE = {}


@contextlib.contextmanager
def reusing_tasks():
    """Inside, a `simple_evaluate` call whose tasks are all M3-Bench tasks of our folder reuses the task dict
    (lmms-eval's Task objects: configs, docs, prompts' hooks) that an earlier such call built for the same names,
    task-manager settings, data root and data fingerprint (`data.m3bench.data_fingerprint`: any byte of a json
    file, any image's name, size or mtime): YAML parsing, dataset loading and `process_docs` run once. A changed
    or added file changes the fingerprint, and the tasks are built again (the categories whose files did not change
    come from memory: `m3bench.load_category`). lmms-eval rebuilds every request from the docs on each call. Also
    turns `reuse_task_index` on for the process."""
    global _reusing
    import yaml
    from lmms_eval import utils as lmms_utils
    from lmms_eval.api import task as lmms_task

    reuse_task_index()
    _reusing += 1
    # module attributes of lmms-eval swapped for the block (each only where it is the module we expect)
    swaps = [(lmms_task, "datasets", _datasets_module(), _TaskIndexRows())]
    if getattr(yaml, "__with_libyaml__", False):
        swaps.append((lmms_utils, "yaml", yaml, _LibYaml()))
    swaps = [swap for swap in swaps if getattr(swap[0], swap[1]) is swap[2]]
    for module, name, _, replacement in swaps:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        _reusing -= 1
        for module, name, original, _ in swaps:
            setattr(module, name, original)


@functools.cache
def _c_full_loader() -> type:
    """libyaml's full loader, with the file name its Python counterpart keeps (lmms-eval's `!function` reads it)."""
    import yaml

    class CFullLoader(yaml.CFullLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self.name = getattr(stream, "name", "<unicode string>")

    return CFullLoader


class _LibYaml:
    """`yaml` as lmms-eval's YAML reader sees it inside `reusing_tasks`: its full loader, with libyaml's C parser
    (the same constructors and resolver: the same configs, parsed ~10x faster; reading our task YAMLs in pure
    Python is most of the first call's task building)."""

    def __getattr__(self, name):
        import yaml

        return getattr(yaml, name)

    def add_constructor(self, tag, constructor, Loader=None):
        import yaml

        yaml.add_constructor(tag, constructor, Loader=Loader)
        if Loader is None:  # lmms-eval's `!function`: on the C full loader too
            yaml.add_constructor(tag, constructor, Loader=_c_full_loader())

    def full_load(self, stream):
        import yaml

        return yaml.load(stream, Loader=_c_full_loader())


def _datasets_module():
    import datasets

    return datasets


@functools.cache
def _task_index_rows(stamp: tuple) -> dict:
    """Our task index (`_task_index.json`: task name -> its one row) as datasets, read once per version of the file:
    task name -> (a dataset of the rows with the same columns, the row's position in it). A dataset made for each
    task would hash its table for a fingerprint (most of its cost); one per column set is hashed once, and a row
    selected from it only updates the fingerprint."""
    import json

    import datasets

    with open(os.path.join(TASK_DIR, "_task_index.json"), encoding="utf-8") as f:
        index = json.load(f)
    by_columns: dict[tuple, list] = {}
    for name, rows in index.items():
        if len(rows) == 1:  # process_docs refuses any other count: such a task goes to datasets itself
            by_columns.setdefault(tuple(rows[0]), []).append((name, rows[0]))
    found = {}
    for members in by_columns.values():
        table = datasets.Dataset.from_list([row for _, row in members])
        found.update({name: (table, position) for position, (name, _) in enumerate(members)})
    return found


class _TaskIndexRows:
    """`datasets` as lmms-eval's task module sees it inside `reusing_tasks`: `load_dataset` of a row of our task
    index (`dataset_path: json`, the `data_files` of our template, `field: <task>`) is that row as a one-row
    dataset, from the file read once, instead of a datasets builder per task (its cache lookup costs more than the
    rest of building a task; the row only names the category, whose records `process_docs` puts in its place).
    Anything else goes to `datasets` itself."""

    def __getattr__(self, name):
        return getattr(_datasets_module(), name)

    def load_dataset(self, path=None, name=None, **kwargs):
        datasets = _datasets_module()
        files, field = kwargs.get("data_files"), kwargs.get("field")
        index = os.path.join(TASK_DIR, "_task_index.json")
        ours = (
            path == "json"
            and name is None
            and isinstance(field, str)
            and isinstance(files, dict)
            and all(isinstance(f, str) and os.path.realpath(f) == os.path.realpath(index) for f in files.values())
        )
        stat = os.stat(index) if ours else None
        kept = _task_index_rows((stat.st_size, stat.st_mtime_ns)).get(field) if ours else None
        if kept is None:
            return datasets.load_dataset(path=path, name=name, **kwargs)
        table, position = kept
        return datasets.DatasetDict({split: table.select([position]) for split in files})


def _reusable_key(given: dict, checked) -> tuple | None:
    """The task-dict key of a `simple_evaluate` call, or None when its tasks are not reused (outside
    `reusing_tasks`, a task that is not one of our M3-Bench tasks, no data)."""
    from radar_tasks import taxonomy
    from radar_tasks.tasks import preflight

    tasks, manager = given.get("tasks"), given.get("task_manager")
    if not _reusing or not checked.leaves or not isinstance(tasks, (list, tuple)) or manager is None:
        return None
    if not all(isinstance(t, str) and taxonomy.leaves_of(t) and preflight._ours(t, manager) for t in tasks):
        return None
    return (
        tuple(tasks),
        str(checked.root.absolute()),
        checked.fingerprint,
        repr(manager.include_path),
        manager.model_name,
        bool(os.environ.get("RADAR_TASKS_NO_DISCOVERY")),
    )


def _wrap_get_task_dict(evaluator) -> None:
    """`lmms_eval.evaluator.get_task_dict` returns the kept task dict of the call's key (`reusing_tasks`)."""
    original = evaluator.get_task_dict
    if getattr(original, "radar_tasks", False):
        return

    def get_task_dict(task_name_list, task_manager=None, task_type="simple"):
        if _task_key is None:
            return original(task_name_list, task_manager, task_type)
        key = (*_task_key, task_type)
        if key not in _TASK_DICTS:
            _TASK_DICTS[key] = original(task_name_list, task_manager, task_type)
            while len(_TASK_DICTS) > _TASK_DICTS_KEPT:
                _TASK_DICTS.popitem(last=False)
        _TASK_DICTS.move_to_end(key)
        return _TASK_DICTS[key]

    get_task_dict.radar_tasks = True
    evaluator.get_task_dict = get_task_dict


def _drop_requests(task_dict) -> None:
    """Forget the requests (and responses) of every task of a kept task dict: lmms-eval builds them again on each
    call, and between calls they would only hold memory (a full M3-Bench's are tens of MB)."""
    for value in (task_dict or {}).values():
        if isinstance(value, dict):
            _drop_requests(value)
        elif hasattr(value, "_instances"):
            value._instances = None


def _disabled_bar(*args, **kwargs):
    from tqdm import tqdm

    return tqdm(*args, **{**kwargs, "disable": True})  # lmms-eval passes its own `disable` (rank != 0)


@contextlib.contextmanager
def quiet_progress(quiet: bool = True):
    """Inside, lmms-eval's per-task progress bars (building contexts, postprocessing) and datasets' are off, so
    that a call from a training loop writes no bar per task; `quiet=False` changes nothing."""
    if not quiet:
        yield
        return
    import datasets
    from lmms_eval import evaluator
    from lmms_eval.api import task as lmms_task
    from tqdm import tqdm

    modules = [m for m in (evaluator, lmms_task) if getattr(m, "tqdm", None) is tqdm]
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    for module in modules:
        module.tqdm = _disabled_bar
    try:
        yield
    finally:
        for module in modules:
            module.tqdm = tqdm
        if bars_were_on:
            datasets.enable_progress_bars()


def _wrap_initialize_tasks() -> None:
    """Wrap `TaskManager.initialize_tasks` (once): index our task folder after lmms-eval's own and any
    `--include_path` (unless RADAR_TASKS_NO_DISCOVERY is set), lmms-eval's own folder through the on-disk
    cache (`builtin_index`), and reuse indexes when `reuse_task_index` asked."""
    from lmms_eval.tasks import TaskManager

    if getattr(TaskManager.initialize_tasks, "radar_tasks", False):
        return
    original = TaskManager.initialize_tasks

    def initialize_tasks(self, include_path=None, include_defaults=True):
        key = (repr(include_path), include_defaults, bool(os.environ.get("RADAR_TASKS_NO_DISCOVERY")))
        if _INDEX_CACHE is not None and key in _INDEX_CACHE:
            return dict(_INDEX_CACHE[key])
        # lmms-eval's own folder first, its entries winning over an --include_path's, as `original` merges them
        index = original(self, include_path=include_path, include_defaults=False)
        if include_defaults:
            import lmms_eval.tasks

            builtin = builtin_index.cached_index(
                os.path.dirname(lmms_eval.tasks.__file__) + "/", self._get_task_and_group
            )
            index = {**index, **builtin}
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

    from radar_tasks.metrics import items

    if not getattr(eu.stderr_for_metric, "radar_hook", False):
        original_stderr = eu.stderr_for_metric

        def stderr_for_metric(metric, bootstrap_iters: int):
            own = getattr(metric, "radar_stderr", None)
            if own is not None and bootstrap_iters > 0:
                return lambda values: own(values, bootstrap_iters)
            if str(getattr(metric, "__module__", "")).startswith(items.__package__ + "."):
                # ours without a stderr (the counts): lmms-eval's answer is None too, after trying to import two of
                # its task folders on every call (a second per run)
                return None
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
        global _task_key
        try:
            checked = preflight.check(
                **{
                    k: given.get(k)
                    for k in ("model", "model_args", "tasks", "batch_size", "max_batch_size", "device", "task_manager")
                }
            )
            _task_key = _reusable_key(given, checked)
            try:
                results = original(*args, **kwargs)
            finally:
                if _task_key is not None:  # the kept tasks keep their docs, not this call's requests and responses
                    for key, task_dict in _TASK_DICTS.items():
                        if key[:-1] == _task_key:
                            _drop_requests(task_dict)
                _task_key = None
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
    _wrap_get_task_dict(evaluator)


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
