"""lmms-eval's results JSON, read in one place: every task's and group's scores, their stderrs and item counts,
the `radar_tasks` entry, and the per-item logs written beside it.

lmms-eval 0.7.3 writes, per run, under `--output_path O`: `O/<model_name_sanitized>/<date_id>_results.json` and,
with `--log_samples`, `<date_id>_samples_<task>.jsonl` beside it (`date_id` = `YYYYmmdd_HHMMSS`). In the JSON,
`results` holds one entry per task and group (`groups` repeats the groups); each score sits under
`"<metric>,<filter>"` (our tasks: filter `none`), its stderr under `"<metric>_stderr,<filter>"` (`"N/A"` where
lmms-eval computed none). Metrics are read by name: a metric a task YAML adds needs no change here.
`simple_evaluate` returns the same dict in memory, the per-item logs under `samples` (`Results(dict)`).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from radar_tasks import taxonomy

RESULTS_SUFFIX = "_results.json"
FILTER = "none"  # lmms-eval's filter name of the scores of loglikelihood tasks (all of ours)
STDERR = "_stderr"  # `<metric>_stderr`; lmms-eval 0.7.3 adds `_stderr_clt`, `_stderr_clustered`
COUNT = "items"  # our item count of an entry (`radar_count`); `items_<ability>` counts the ability split
SKIPPED = "skipped"  # items not scored (too many images, ...): acc counts them wrong
SCORED_ONLY = ("sds", "bpb", "brier")  # metrics averaged over the scored items only (a skipped item left out)
ITEM_RECORD = "sds"  # the per-item log key that holds the whole item record (metrics/items.py; others: compact)
INPUT_MEDIA = "input_media"  # lmms-eval 0.7.3's per-item log key of the item's image paths
_STAMP = re.compile(r"(\d{8}_\d{6})")


class ResultsError(ValueError):
    """A results JSON or a per-item log that cannot be read (one line naming the file)."""


def number(value: Any) -> int | float | None:
    """A score or count of a results JSON as a plain int or float; None for lmms-eval's "N/A" (a stderr it did not
    compute), an absent key or anything else that is no number. Plain: in memory (`simple_evaluate`) a leaf's score
    is a `metrics.items.Score`, a float that carries its subsets and does not unpickle (a broadcast between ranks)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    return float(value) if isinstance(value, float) else None


def ability_split(metric: str) -> str:
    """The ability of an ability-split metric (`sds_perception` -> `perception`), else ""."""
    return next((a for a in taxonomy.ABILITIES if metric.endswith(f"_{a}")), "")


def is_score(metric: str) -> bool:
    """A metric that scores the items: not a stderr, not an item count (they describe the scores)."""
    return STDERR not in metric and metric != COUNT and not metric.startswith(f"{COUNT}_")


@dataclass(frozen=True)
class Entry:
    """One task or group of a results JSON: lmms-eval's `"<metric>,<filter>"` keys (and `alias`)."""

    task: str
    fields: Mapping[str, Any]

    def keys(self) -> list[tuple[str, str]]:
        """(metric, filter) of every score key, stderrs and counts included, in the order lmms-eval wrote them."""
        return [tuple(key.split(",", 1)) for key in self.fields if "," in key]

    def scores(self) -> list[tuple[str, str]]:
        """(metric, filter) of the scores (`is_score`): sds, acc, sds_perception, ... and any metric added later."""
        return [(metric, filt) for metric, filt in self.keys() if is_score(metric)]

    def has(self, metric: str, filt: str = FILTER) -> bool:
        return f"{metric},{filt}" in self.fields

    def value(self, metric: str, filt: str = FILTER) -> int | float | None:
        return number(self.fields.get(f"{metric},{filt}"))

    def stderr(self, metric: str, filt: str = FILTER) -> int | float | None:
        return self.value(metric + STDERR, filt)

    def values(self) -> dict[str, int | float | None]:
        """metric -> number of every key (filters dropped; stderrs as `<metric>_stderr`, counts as `items`)."""
        return {key.split(",", 1)[0]: number(value) for key, value in self.fields.items() if "," in key}

    @property
    def skipped(self) -> int | float | None:
        return self.value(SKIPPED)

    def count(self, filt: str = FILTER) -> int | None:
        """The entry's items: `items`, else lmms-eval's `samples`, else the sum of the ability counts."""
        for value in (self.fields.get(f"{COUNT},{filt}"), self.fields.get("samples")):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return int(value)
        by_ability = [self.fields.get(f"{COUNT}_{a},{filt}") for a in taxonomy.ABILITIES]
        return sum(int(v) for v in by_ability if isinstance(v, (int, float))) or None

    def n(self, metric: str, filt: str = FILTER) -> int | float | None:
        """The items a score averages: `items_<ability>` for an ability-split metric; else the entry's items,
        less the skipped ones for the metrics over scored items only (`SCORED_ONLY`)."""
        ability = ability_split(metric)
        if ability:
            return self.value(f"{COUNT}_{ability}", filt)
        n = self.count(filt)
        if metric in SCORED_ONLY and n is not None and self.skipped is not None:
            n -= int(self.skipped)
        return n


@dataclass(frozen=True, eq=False)
class Results:
    """One lmms-eval results JSON (`Results.read(path)`), or the dict `simple_evaluate` returns (`Results(dict)`)."""

    data: Mapping[str, Any]
    path: Path | None = None

    @classmethod
    def read(cls, path: str | os.PathLike) -> Results:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{path}: cannot read results JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise ResultsError(f"{path}: no 'results' object: not an lmms-eval results JSON")
        return cls(data, path)

    # -- scores -------------------------------------------------------------------------------------------------
    @cached_property
    def entries(self) -> dict[str, Entry]:
        """Every task and group: `results`, plus the `groups` entries it lacks."""
        raw = dict(self.data.get("results") or {})
        for name, entry in (self.data.get("groups") or {}).items():
            raw.setdefault(name, entry)
        return {task: Entry(task, fields) for task, fields in raw.items()}

    def scores(self) -> dict[str, dict[str, int | float | None]]:
        """`{task: {metric: value}}` of every task and group (`"sds,none"` -> `"sds"`, stderrs as `sds_stderr`)."""
        return {task: entry.values() for task, entry in self.entries.items()}

    def is_group(self, task: str) -> bool:
        """A group with subtasks (lmms-eval's `group_subtasks`)."""
        return bool((self.data.get("group_subtasks") or {}).get(task))

    @property
    def configs(self) -> dict[str, dict]:
        """Task name -> the task config lmms-eval ran (its YAML's `metadata` included)."""
        return self.data.get("configs") or {}

    def n_samples(self, task: str) -> dict | None:
        """lmms-eval's `n-samples` of a leaf task: `{"original": ..., "effective": ...}` (after `--limit`)."""
        return (self.data.get("n-samples") or {}).get(task)

    @property
    def limit(self) -> int | float | None:
        """lmms-eval's `--limit` of the run (None: every item)."""
        limit = (self.data.get("config") or {}).get("limit")
        return None if limit in (None, -1) else limit

    @property
    def model_name(self) -> str:
        """The model name lmms-eval recorded (`model_name_sanitized`, else `model_name`, else from model_args;
        else the name of the results JSON's folder)."""
        for key in ("model_name_sanitized", "model_name"):
            if self.data.get(key):
                return str(self.data[key])
        model_args = str((self.data.get("config") or {}).get("model_args") or "")
        m = re.search(r"(?:^|,)\s*(?:pretrained|model|model_name|path)=([^,]+)", model_args)
        if m:
            return "/".join(m.group(1).rstrip("/").split("/")[-2:])
        return self.path.parent.name if self.path is not None else ""

    # -- the `radar_tasks` entry (tasks/preflight.metadata) ------------------------------------------------------
    @property
    def radar_tasks(self) -> dict:
        """`version`, `data` (root, fingerprint, subsets), `model` (radar_hf's settings); {} for other runs."""
        return self.data.get("radar_tasks") or {}

    @property
    def data_fingerprint(self) -> str | None:
        return (self.radar_tasks.get("data") or {}).get("fingerprint")

    @property
    def model_settings(self) -> dict:
        """radar_hf's resolved settings (`RadarHF.run_metadata()`: pretrained, prompt_style, score, dtype, ...)."""
        return self.radar_tasks.get("model") or {}

    # -- per-item logs ------------------------------------------------------------------------------------------
    @cached_property
    def sample_files(self) -> dict[str, Path]:
        """The per-item logs written beside the results JSON: task name -> `<date_id>_samples_<task>.jsonl`."""
        return sample_files_of(self.path) if self.path is not None else {}

    def samples(self) -> dict[str, list[dict]]:
        """Task -> item records of the per-item logs `simple_evaluate(log_samples=True)` returns in memory (on
        disk they are the `sample_files`)."""
        return {
            task: [r for r in map(item_record, lines) if r is not None]
            for task, lines in (self.data.get("samples") or {}).items()
        }


def item_record(sample: Any) -> dict | None:
    """The item record of one per-item log line (its `sds` dict: id, subset, category, p, scores, ...), or None
    for lines of tasks that are not M3-Bench."""
    record = sample.get(ITEM_RECORD) if isinstance(sample, dict) else None
    return record if isinstance(record, dict) else None


def read_item_log(path: Path, task: str) -> list[dict]:
    """The item records of a `*_samples_<task>.jsonl`, each with its `task` (and `n_candidates`) added, and its
    `images` (the paths lmms-eval logged under `input_media`) when the line has them."""
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ResultsError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None
            record = item_record(sample)
            if record is None or "id" not in record:
                continue
            record = dict(record)
            record["task"] = task
            media = sample.get(INPUT_MEDIA)  # lmms-eval's paths of the item's images, in prompt order
            if isinstance(media, list) and all(isinstance(m, str) for m in media):
                record.setdefault("images", media)
            if record.get("n_candidates") is None and record.get("scores"):
                record["n_candidates"] = len(record["scores"])
            items.append(record)
    return items


# ---------------------------------------------------------------------------------------------------------------
# Finding the files


def _stamp_key(path: Path) -> tuple:
    m = _STAMP.search(path.name)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return (m.group(1) if m else "", mtime, str(path))


def find_results(target: str | os.PathLike) -> list[Path]:
    """The results JSONs of a path: the file itself, or every `*_results.json` under a folder, oldest first (the
    time stamp in the name, then the modification time); [] when there is none."""
    path = Path(target)
    if path.is_file():
        return [path.resolve()]
    if path.is_dir():
        found = [p.resolve() for p in path.rglob(f"*{RESULTS_SUFFIX}") if p.is_file()]
        return sorted(found, key=_stamp_key)
    return []


def sample_files_of(results_path: Path) -> dict[str, Path]:
    """The per-item logs written with one results JSON: task name -> `<date_id>_samples_<task>.jsonl`."""
    prefix = results_path.name[: -len(RESULTS_SUFFIX)] + "_samples_"
    out = {}
    for p in sorted(results_path.parent.glob(f"{glob_escape(prefix)}*.jsonl")):
        out[p.name[len(prefix) : -len(".jsonl")]] = p
    return out


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
