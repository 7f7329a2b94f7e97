"""The runs of an analysis: results JSONs with their per-item logs (read by `radar_tasks.results`), and the labels of
each run.

A RUN argument is a results JSON or a folder searched recursively for `*_results.json`; a folder holding several
is several runs, ordered by the timestamp in the file name (then modification time).

Labels of a run: `label` (display name), `model`, `step`, `tokens`, `size` (parameters), `strategy`, `series`.
They come from flags, from a manifest (YAML or CSV, one entry per run, see `load_manifest`), or default to the
model name of the results JSON and the run order.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from radar_tasks.results import RESULTS_SUFFIX, Results, ResultsError, find_results, read_item_log

LABEL_FIELDS = ("label", "model", "step", "tokens", "size", "strategy", "series")
NUMERIC_FIELDS = ("step", "tokens", "size")
_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


class RunError(ValueError):
    """A run, a manifest or a label cannot be read (one-line message naming the file; the reader's
    `ResultsError` becomes one)."""


def parse_number(value: Any) -> float | None:
    """A number from a label: 1000, "1e9", "0.5B", "350M", "2.5k", "1,000"; None for empty; RunError otherwise."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace(",", "").replace("_", "")
    if not text or text.lower() in ("none", "null", "nan", "-"):
        return None
    suffix = text[-1].lower()
    scale = 1.0
    if suffix in _SUFFIXES:
        text, scale = text[:-1], _SUFFIXES[suffix]
    try:
        return float(text) * scale
    except ValueError:
        raise RunError(f"not a number: {value!r} (expected e.g. 1000, 1e9, 0.5B, 350M)") from None


def format_number(value: float | None) -> str:
    """Short human form of a count (tokens, parameters, steps): 1.5B, 350M, 2k, 120."""
    if value is None or not math.isfinite(value):
        return ""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.6g}"


@dataclass
class Run:
    """One lmms-eval run: its results JSON, per-item logs (when it was run with --log_samples) and labels."""

    results_path: Path
    data: dict
    order: int = 0
    labels: dict = field(default_factory=dict)
    sample_files: dict[str, Path] = field(default_factory=dict)

    # -- identity and labels ------------------------------------------------------------------------------------
    @property
    def date_id(self) -> str:
        return self.results_path.name[: -len(RESULTS_SUFFIX)]

    @property
    def model(self) -> str:
        return str(self.labels.get("model") or self.results.model_name)

    @property
    def label(self) -> str:
        return str(self.labels.get("label") or self.model)

    def number(self, name: str) -> float | None:
        return parse_number(self.labels.get(name))

    @property
    def step(self) -> float | None:
        return self.number("step")

    @property
    def tokens(self) -> float | None:
        return self.number("tokens")

    @property
    def size(self) -> float | None:
        return self.number("size")

    @property
    def strategy(self) -> str | None:
        s = self.labels.get("strategy")
        return None if s in (None, "") else str(s)

    @property
    def series(self) -> str:
        """Runs of one series are one development curve: the `series` label, else strategy and size, else 'all';
        a run without its images (`images=none|blank`) gets ` (images=none)` after it, so that it forms its own
        curve beside the run with images."""
        if self.labels.get("series") not in (None, ""):
            name = str(self.labels["series"])
        else:
            parts = [p for p in (self.strategy, format_number(self.size) if self.size is not None else None) if p]
            name = " / ".join(parts) if parts else "all"
        return name if self.images == "keep" else f"{name} (images={self.images})"

    @property
    def images(self) -> str:
        """What the model saw of the images: radar_hf's `images` model arg (keep, none, blank) as the results JSON
        records it; `keep` for runs that do not record one (older runs, other wrappers)."""
        return str(self.results.model_settings.get("images") or "keep")

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint the run scored (radar_hf's `pretrained`), None when the results JSON does not say."""
        pretrained = self.results.model_settings.get("pretrained")
        return None if pretrained in (None, "") else str(pretrained)

    def label_row(self) -> dict:
        return {
            "run": self.label,
            "model": self.model,
            "step": self.step,
            "tokens": self.tokens,
            "size": self.size,
            "strategy": self.strategy or "",
            "series": self.series,
            "images": self.images,
            "order": self.order,
            "results": str(self.results_path),
            "logs": len(self.sample_files),
        }

    # -- results JSON and per-item logs -------------------------------------------------------------------------
    @cached_property
    def results(self) -> Results:
        """The results JSON, read: scores, stderrs and counts of every task and group (`Results.entries`)."""
        return Results(self.data, self.results_path)

    @property
    def has_logs(self) -> bool:
        return bool(self.sample_files)

    def items(self) -> list[dict]:
        """Item records of the per-item logs (the `sds` dict of each line), each with its `task` added.

        Lines without an `sds` dict (tasks that are not M3-Bench) are ignored. Read once.
        """
        return self._items

    @cached_property
    def _items(self) -> list[dict]:
        items = []
        for task, path in sorted(self.sample_files.items()):
            try:
                items.extend(read_item_log(path, task))
            except ResultsError as exc:
                raise RunError(str(exc)) from None
        return items


def load_run(results_path: str | os.PathLike, order: int = 0) -> Run:
    path = Path(results_path).resolve()
    if not path.name.endswith(RESULTS_SUFFIX):
        raise RunError(f"{path}: not an lmms-eval results file (*{RESULTS_SUFFIX})")
    try:
        results = Results.read(path)
    except ResultsError as exc:
        raise RunError(str(exc)) from None
    return Run(results_path=path, data=results.data, order=order, sample_files=results.sample_files)


# ---------------------------------------------------------------------------------------------------------------
# Labels: manifest and flags


def load_manifest(path: str | os.PathLike) -> list[dict]:
    """Entries of a label manifest, each a dict of LABEL_FIELDS plus `run` (a results JSON or a folder).

    YAML: a list of mappings, or a mapping with a `runs:` list, or a mapping `run path -> labels`.
    CSV: a header row naming the columns (`run`, `label`, `model`, `step`, `tokens`, `size`, `strategy`, `series`).
    Relative `run` paths are resolved against the manifest's folder (then the working folder). Entries without
    `run` are matched to the runs by position. Unknown columns are an error (a typo would silently drop a label).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunError(f"{path}: cannot read manifest ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        rows = [dict(r) for r in csv.DictReader(text.splitlines())]
    else:
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RunError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if isinstance(doc, dict) and "runs" in doc:
            doc = doc["runs"]
        if isinstance(doc, dict):
            doc = [{"run": k, **(v or {})} for k, v in doc.items()]
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise RunError(f"{path}: a manifest is a list of entries (one mapping per run)")
        rows = doc
    entries = []
    for i, row in enumerate(rows, 1):
        row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        unknown = set(row) - set(LABEL_FIELDS) - {"run"}
        if unknown:
            raise RunError(
                f"{path}: entry {i}: unknown field(s) {sorted(unknown)}; known: run, {', '.join(LABEL_FIELDS)}"
            )
        for k in NUMERIC_FIELDS:
            if k in row:
                try:
                    parse_number(row[k])
                except RunError as exc:
                    raise RunError(f"{path}: entry {i}: {k}: {exc}") from None
        entry = {k: v for k, v in row.items() if v not in (None, "")}
        if "run" in entry:
            entry["run"] = _resolve_against(str(entry["run"]), path.parent)
        entries.append(entry)
    return entries


def _resolve_against(run: str, base: Path) -> Path:
    p = Path(run).expanduser()
    if p.is_absolute():
        return p.resolve()
    near = base / p
    return near.resolve() if near.exists() else p.resolve()


def _match(entry_path: Path, runs: Sequence[Run]) -> list[Run]:
    if entry_path.is_file() or entry_path.name.endswith(RESULTS_SUFFIX):
        return [r for r in runs if r.results_path == entry_path]
    return [r for r in runs if entry_path == r.results_path.parent or entry_path in r.results_path.parents]


def apply_manifest(runs: Sequence[Run], entries: Sequence[dict], source: str = "manifest") -> None:
    """Set the labels of `runs` from manifest entries (matched by `run` path, or by position when none has one)."""
    with_path = [e for e in entries if "run" in e]
    if not with_path:
        if len(entries) != len(runs):
            raise RunError(f"{source}: {len(entries)} entries without a `run` path for {len(runs)} runs")
        for run, entry in zip(runs, entries):
            run.labels.update({k: v for k, v in entry.items() if k in LABEL_FIELDS})
        return
    if len(with_path) != len(entries):
        raise RunError(f"{source}: give a `run` path in every entry or in none")
    for entry in entries:
        matched = _match(entry["run"], runs)
        if not matched:
            raise RunError(f"{source}: entry {entry['run']} matches no run")
        if len(matched) > 1:
            raise RunError(f"{source}: entry {entry['run']} matches {len(matched)} runs; name the *_results.json")
        matched[0].labels.update({k: v for k, v in entry.items() if k in LABEL_FIELDS})


def apply_flags(runs: Sequence[Run], flags: Mapping[str, str | Sequence | None]) -> None:
    """Per-run labels from flags: each a comma-separated string (or list) with one value per run, in run order."""
    for name, value in flags.items():
        if value is None:
            continue
        if name not in LABEL_FIELDS:
            raise RunError(f"unknown label {name!r}; known: {', '.join(LABEL_FIELDS)}")
        values = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        if len(values) != len(runs):
            raise RunError(f"--{name}: {len(values)} value(s) for {len(runs)} run(s) (one per run, comma-separated)")
        for run, v in zip(runs, values):
            if name in NUMERIC_FIELDS:
                parse_number(v)
            if v not in (None, ""):
                run.labels[name] = v


def apply_labels(runs: Sequence[Run], labels: Any) -> None:
    """Labels given programmatically: a manifest path, a list of dicts (one per run, in order, or with `run`
    paths), or a mapping `results path or folder -> dict`."""
    if labels is None:
        return
    if isinstance(labels, (str, os.PathLike)):
        apply_manifest(runs, load_manifest(labels), str(labels))
        return
    if isinstance(labels, Mapping):
        entries = [{"run": Path(k).resolve(), **v} for k, v in labels.items()]
    else:
        entries = [dict(e) for e in labels]
        for e in entries:
            if "run" in e:
                e["run"] = Path(e["run"]).resolve()
    for i, e in enumerate(entries, 1):
        unknown = set(e) - set(LABEL_FIELDS) - {"run"}
        if unknown:
            raise RunError(f"labels entry {i}: unknown field(s) {sorted(unknown)}")
    apply_manifest(runs, entries, "labels")


def finalize_labels(runs: Sequence[Run]) -> None:
    """Give every run a unique display label: its own, else the model name, numbered when models repeat."""
    counts: dict[str, int] = {}
    for r in runs:
        if not r.labels.get("label"):
            counts[r.model] = counts.get(r.model, 0) + 1
    seen: dict[str, int] = {}
    for r in runs:
        if r.labels.get("label"):
            continue
        if counts[r.model] > 1:
            seen[r.model] = seen.get(r.model, 0) + 1
            r.labels["label"] = f"{r.model} #{seen[r.model]}"
        else:
            r.labels["label"] = r.model
    labels = [r.label for r in runs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise RunError(f"run labels must be unique; repeated: {', '.join(dupes)}")


def load_runs(
    targets: Iterable[str | os.PathLike | Run] = (),
    manifest: str | os.PathLike | None = None,
    flags: Mapping[str, Any] | None = None,
    labels: Any = None,
) -> list[Run]:
    """Discover, load and label runs.

    `targets`: RUN arguments (results JSONs, folders, or Run objects); when empty, the manifest's `run` entries
    are the runs, in manifest order. Labels: manifest, then `labels` (see `apply_labels`), then `flags` win.
    """
    targets = list(targets)
    entries = load_manifest(manifest) if manifest is not None else None
    if not targets:
        if not entries or not all("run" in e for e in entries):
            raise RunError("no runs: give RUN paths, or a manifest whose entries all name a `run`")
        targets = [e["run"] for e in entries]
    paths: list[Path] = []
    given: list[Run] = []
    for t in targets:
        if isinstance(t, Run):
            given.append(t)
            paths.append(t.results_path)
            continue
        found = find_results(t)
        if not found:
            raise RunError(
                f"{Path(t)}: no *{RESULTS_SUFFIX} under this folder (did the lmms-eval run fail?)"
                if Path(t).is_dir()
                else f"{Path(t)}: no such file or folder"
            )
        for p in found:
            if p not in paths:
                paths.append(p)
    by_path = {r.results_path: r for r in given}
    runs = []
    for i, p in enumerate(paths):
        run = by_path.get(p) or load_run(p)
        run.order = i
        runs.append(run)
    if entries is not None:
        apply_manifest(runs, entries, str(manifest))
    apply_labels(runs, labels)
    if flags:
        apply_flags(runs, flags)
    finalize_labels(runs)
    return runs


def progress(runs: Sequence[Run]) -> tuple[list[float], str, str]:
    """Training progress of a series: (x values, field, axis label) by tokens, else steps, else run order."""
    if runs and all(r.tokens is not None for r in runs):
        return [r.tokens for r in runs], "tokens", "tokens seen"
    if runs and all(r.step is not None for r in runs):
        return [r.step for r in runs], "step", "training step"
    return [float(r.order + 1) for r in runs], "order", "run order (no steps or tokens given)"


def series_of(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by series, each series sorted by training progress (tokens, else step, else run order)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.series, []).append(r)
    out = {}
    for name, members in groups.items():
        xs, _, _ = progress(members)
        out[name] = [r for _, r in sorted(zip(xs, members), key=lambda t: (t[0], t[1].order))]
    return out
