"""The per-subset / per-ability table of one lmms-eval results JSON (what `radar-tasks demo` prints)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from radar_tasks import taxonomy
from radar_tasks.results import COUNT, Results

# The score columns: (header, metric, whether the column shows its stderr). A new metric's column is one line here.
COLUMNS = (
    ("SDS", "sds", False),
    ("± stderr", "sds", True),
    ("acc", "acc", False),
    ("BPB", "bpb", False),  # lower is better
    ("Brier", "brier", False),  # lower is better
)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def summary_rows(results: dict) -> list[tuple[str, ...]]:
    """(row, the COLUMNS, items, skipped) for every subset, ability and the total present in `results`."""
    entries = Results(results).entries
    rows = []

    def add(label, task, split=""):
        entry = entries.get(task)
        if entry is None or not entry.has(f"sds{split}"):
            return
        cells = [_fmt((entry.stderr if stderr else entry.value)(metric + split)) for _, metric, stderr in COLUMNS]
        skipped = "" if split else "-" if entry.skipped is None else str(entry.skipped)
        rows.append((label, *cells, str(entry.value(f"{COUNT}{split}")), skipped))

    for spec in taxonomy.SUBSETS:
        add(spec.name, taxonomy.task_name(spec.name))
    for ability in taxonomy.ABILITIES:
        add(ability, "radar_mmm", f"_{ability}")
        add(ability, f"radar_{ability}")
    add("radar_mmm (all)", "radar_mmm")
    return rows


def format_table(results: dict) -> str:
    header = ("", *(name for name, _, _ in COLUMNS), "items", "skipped")
    rows = [header, *summary_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def load(path: str | Path) -> Mapping:
    """The results JSON at `path` (ResultsError when it is none)."""
    return Results.read(path).data
