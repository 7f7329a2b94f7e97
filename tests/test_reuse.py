"""What the in-loop evaluator keeps between calls, and what invalidates it: the validated records of a category
(`m3bench.load_category`), a passed pre-flight check (`preflight`), prepared questions (`pipeline.PreparedCache`)
and warnings said once per process (`models.once`). `tests/test_inloop.py` checks the calls themselves."""

from __future__ import annotations

import json
import os
import shutil

import lmms_eval.evaluator  # noqa: F401  (imported before `loguru_messages`: its import replaces loguru's sinks)
import pytest
import torch

from radar_tasks.data import m3bench
from radar_tasks.models import once
from radar_tasks.models.pipeline import Prepared, PreparedCache, prepared_bytes
from radar_tasks.models.prefix_sharing.preparation import PreparedQuestion
from radar_tasks.tasks import preflight

WIKI = "Wiki_animal_identification"


@pytest.fixture
def root(fixture_root, tmp_path, monkeypatch):
    """A private copy of the fixture (tests edit it) and a private datasets cache."""
    import datasets.config

    shutil.copytree(fixture_root, tmp_path / "M3-Bench")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv(m3bench.ENV_VAR, str(tmp_path / "M3-Bench"))
    return tmp_path / "M3-Bench"


@pytest.fixture
def generated(monkeypatch):
    """The categories `load_category` read and validated (not served from memory), in order."""
    calls = []
    original = m3bench._generate

    def counting(root, subset, category, files, key):
        calls.append((subset, category))
        return original(root, subset, category, files, key)

    monkeypatch.setattr(m3bench, "_generate", counting)
    return calls


def test_a_category_is_read_once_per_process_until_its_files_change(root, generated, loguru_messages):
    first = m3bench.load_category("wiki_animal", "wiki_animal", root)
    assert m3bench.load_category("wiki_animal", "wiki_animal", root) is first and len(generated) == 1
    # an edited json file: read and validated again, and the edit shows
    [path] = (root / WIKI).glob("*.json")
    data = json.loads(path.read_text())
    qid = next(iter(data))
    data[qid]["question"] = "Which animal is this, really?"
    path.write_text(json.dumps(data))
    edited = m3bench.load_category("wiki_animal", "wiki_animal", root)
    assert len(generated) == 2 and edited[0]["question"] == "Which animal is this, really?"
    # an image replaced (its modification time): validated again, with the warning that says why
    image = edited[0]["images"][0]
    stat = os.stat(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = m3bench.load_category("wiki_animal", "wiki_animal", root)
    assert again is not edited and len(generated) == 4  # the cached key's images differ: validated under a new key
    assert any("changed since validated" in m for m in loguru_messages)
    assert m3bench.load_category("wiki_animal", "wiki_animal", root) is again and len(generated) == 4


def test_a_passed_check_is_not_redone_for_the_same_files(root, generated, loguru_messages):
    tasks = ["radar_wiki_animal", "radar_mathvista"]
    checked = preflight.check(tasks=tasks)
    assert sorted(generated) == [("mathvista", "mathvista"), ("wiki_animal", "wiki_animal")]
    assert preflight.check(tasks=tasks).fingerprint == checked.fingerprint
    assert not loguru_messages
    # an added file changes the fingerprint: checked again (the file it does not read is reported) ...
    (root / WIKI / "notes.json").write_text("{}")
    assert preflight.check(tasks=tasks).fingerprint != checked.fingerprint
    assert [m for m in loguru_messages if "notes.json" in m]
    assert len(generated) == 2  # ... and the categories, whose files did not change, come from memory


def _prepared(n_bytes: int) -> Prepared:
    tokenized = PreparedQuestion(n_prompt=1, full_ids=[], encoding={"pixel_values": torch.zeros(n_bytes // 4)})
    return Prepared(0, extra=None, tokenized=tokenized, question=object())


def test_the_prepared_cache_keeps_what_fits_and_replaces_only_stale_entries():
    cache = PreparedCache(max_bytes=1000)
    assert prepared_bytes(_prepared(400)) == 400
    cache.begin_run()
    assert cache.get("a") is None and cache.put("a", _prepared(400)) and cache.put("b", _prepared(400))
    assert not cache.put("c", _prepared(400))  # full, and a and b are this run's: c is not kept (no LRU churn)
    assert not cache.put("huge", _prepared(2000))
    assert cache.bytes == 800 and len(cache) == 2 and cache.get("a").question is None  # the question is not kept
    cache.begin_run()  # the next evaluation uses a only (b's data changed, say)
    assert cache.get("a") is not None
    assert cache.put("c", _prepared(400)) and cache.get("b") is None  # b was stale: it made room for c
    assert cache.bytes == 800 and (cache.hits, cache.misses) == (2, 2)


def test_a_warning_is_said_once_per_process_inside_in_loop_calls(loguru_messages):
    message = "radar_hf: test_reuse: a problem said once"
    with once.per_process():
        once.warning(message)
        once.warning(message)
    with once.per_process():
        once.warning(message)
    assert loguru_messages.count(message) == 1
    once.warning(message)  # outside the in-loop calls (the CLI, a sweep): said every time
    once.warning(message)
    assert loguru_messages.count(message) == 3


def test_task_building_inside_reusing_tasks_reads_the_same_configs_index_and_rows(tmp_path, monkeypatch):
    """`plugin.reusing_tasks` speeds up what lmms-eval reads to build our tasks (YAML through libyaml, the task
    index rows without a datasets builder): the same task index, the same configs, the same one-row datasets."""
    import datasets
    import datasets.config
    from lmms_eval import utils as lmms_utils
    from lmms_eval.api import task as lmms_task
    from lmms_eval.tasks import TaskManager

    from radar_tasks.task_yamls import TASK_DIR
    from radar_tasks.tasks import plugin

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    manager = TaskManager.__new__(TaskManager)  # its YAML indexing alone, not a whole index
    manager.logger = __import__("loguru").logger
    yamls = sorted(f for f in os.listdir(TASK_DIR) if f.endswith(".yaml"))
    index_json = os.path.join(TASK_DIR, "_task_index.json")
    fields = ["radar_mathvista", "radar_mmbench_ocr_lite", "radar_mmmu_pro_accounting_lite"]

    def read():
        configs = {f: lmms_utils.load_yaml_config(os.path.join(TASK_DIR, f), mode="full") for f in yamls}
        rows = {
            f: lmms_task.datasets.load_dataset(path="json", data_files={"test": index_json}, field=f) for f in fields
        }
        return manager._get_task_and_group(TASK_DIR), configs, rows

    def comparable(value):  # `!function` hooks: the same function, not the same object
        if isinstance(value, dict):
            return {k: comparable(v) for k, v in value.items()}
        if isinstance(value, list):
            return [comparable(v) for v in value]
        return (value.__module__, value.__qualname__) if callable(value) else value

    index, configs, rows = read()
    with plugin.reusing_tasks():
        assert lmms_task.datasets is not datasets  # the shortcuts are in place inside ...
        fast_index, fast_configs, fast_rows = read()
    assert lmms_task.datasets is datasets and lmms_utils.yaml is __import__("yaml")  # ... and only there
    assert fast_index == index and len(index) == len(yamls)
    assert comparable(fast_configs) == comparable(configs)
    for field in fields:
        assert list(fast_rows[field]) == ["test"]
        assert fast_rows[field]["test"].features == rows[field]["test"].features
        assert fast_rows[field]["test"].to_list() == rows[field]["test"].to_list()
