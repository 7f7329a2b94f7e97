"""lmms-eval's index of its own task folder, kept on disk between processes.

Every `TaskManager` parses the ~3,600 YAML files of lmms-eval's task folder to build the same index (6.5 to 8 s on
this 2-core CPU, before any task of ours is read): every CLI run and the first in-loop `evaluate` of a process paid
it. The index is kept in a JSON file keyed by lmms-eval's version and the name, size and modification time of every
file in that folder: any change there builds it afresh. `RADAR_TASKS_CACHE` names the folder (default
`$XDG_CACHE_HOME/radar_tasks`, else `~/.cache/radar_tasks`); a folder that cannot be written only costs the saving.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_folder() -> Path:
    given = os.environ.get("RADAR_TASKS_CACHE")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "radar_tasks"


def folder_stamp(task_dir: str) -> str:
    """A digest of lmms-eval's version and the (path, size, mtime) of every file under `task_dir`."""
    from importlib.metadata import version

    digest = hashlib.sha256(f"{version('lmms_eval')}\0{os.path.abspath(task_dir)}".encode())
    for root, dirs, files in os.walk(task_dir):
        dirs.sort()
        for name in sorted(files):
            stat = os.stat(os.path.join(root, name))
            digest.update(
                f"\0{os.path.relpath(os.path.join(root, name), task_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()
            )
    return digest.hexdigest()[:32]


def cached_index(task_dir: str, build: Callable[[str], dict]) -> dict:
    """`build(task_dir)` (lmms-eval's `_get_task_and_group`), read from the cache file when its stamp matches."""
    path = cache_folder() / f"lmms_eval_task_index-{folder_stamp(task_dir)}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    index = dict(build(task_dir))
    text = json.dumps(list(index.items()))
    if dict(json.loads(text)) != index:  # not JSON-exact (a non-string name): not kept
        return index
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            handle.write(text)
        os.replace(handle.name, path)  # whole or absent, also with processes building it at once
    except OSError:
        pass
    return index
