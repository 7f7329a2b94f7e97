"""lmms-eval's task index kept on disk (radar_tasks.tasks.builtin_index): a read gives what lmms-eval's own indexing
builds, a changed file builds it afresh, and a cache that cannot be written only costs the saving."""

from __future__ import annotations

import textwrap

import pytest

from radar_tasks.tasks import builtin_index

CONFIGS = {
    "a.yaml": "task: task_a\ntag: [tag_x]\ndataset_path: d\n",
    "sub/b.yaml": "task: task_b\ntag: tag_x\ndataset_path: d\n",
    "sub/group.yaml": "group: group_g\ntask: [task_a, task_b]\n",
    "py.yaml": "task: python_one\nclass: !function py.Cls\n",
    "sub/not_a_task.yaml": "metric_list: []\n",
}


@pytest.fixture
def task_dir(tmp_path):
    folder = tmp_path / "tasks"
    for name, text in CONFIGS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def lmms_eval_indexing():
    """lmms-eval's own `_get_task_and_group`, counting its calls."""
    from lmms_eval.tasks import TaskManager

    manager = TaskManager.__new__(TaskManager)  # the method alone: no index of the real task folder
    from loguru import logger

    manager.logger = logger
    calls = []

    def build(folder):
        calls.append(folder)
        return manager._get_task_and_group(folder)

    return build, calls


def test_a_read_gives_what_lmms_eval_builds(task_dir, tmp_path, monkeypatch, lmms_eval_indexing):
    monkeypatch.setenv("RADAR_TASKS_CACHE", str(tmp_path / "cache"))
    build, calls = lmms_eval_indexing
    first = builtin_index.cached_index(str(task_dir), build)
    again = builtin_index.cached_index(str(task_dir), build)
    assert len(calls) == 1 and again == first == dict(build(str(task_dir)))
    assert first["tag_x"] == {"type": "tag", "task": ["task_a", "task_b"], "yaml_path": -1}
    assert first["group_g"]["type"] == "group" and first["python_one"]["type"] == "python_task"
    assert len(list((tmp_path / "cache").glob("lmms_eval_task_index-*.json"))) == 1


def test_a_changed_or_added_file_builds_it_afresh(task_dir, tmp_path, monkeypatch, lmms_eval_indexing):
    monkeypatch.setenv("RADAR_TASKS_CACHE", str(tmp_path / "cache"))
    build, calls = lmms_eval_indexing
    builtin_index.cached_index(str(task_dir), build)
    (task_dir / "a.yaml").write_text("task: task_a_renamed\ndataset_path: d\n")
    assert "task_a_renamed" in builtin_index.cached_index(str(task_dir), build)
    (task_dir / "sub" / "c.yaml").write_text("task: task_c\ndataset_path: d\n")
    assert "task_c" in builtin_index.cached_index(str(task_dir), build)
    assert len(calls) == 3


def test_an_unwritable_cache_only_costs_the_saving(task_dir, tmp_path, monkeypatch, lmms_eval_indexing):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("RADAR_TASKS_CACHE", str(blocker / "cache"))  # under a file: cannot be made
    build, calls = lmms_eval_indexing
    assert builtin_index.cached_index(str(task_dir), build) == builtin_index.cached_index(str(task_dir), build)
    assert len(calls) == 2


def test_a_damaged_cache_file_is_built_again(task_dir, tmp_path, monkeypatch, lmms_eval_indexing):
    monkeypatch.setenv("RADAR_TASKS_CACHE", str(tmp_path / "cache"))
    build, calls = lmms_eval_indexing
    expected = builtin_index.cached_index(str(task_dir), build)
    [path] = (tmp_path / "cache").glob("*.json")
    path.write_text('[["task_a", {"type": "ta')  # cut short
    assert builtin_index.cached_index(str(task_dir), build) == expected and len(calls) == 2
