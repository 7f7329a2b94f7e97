"""The per-subset / per-ability table of one lmms-eval results JSON (what `radar-tasks demo` prints)."""

from __future__ import annotations

import json
from pathlib import Path

from radar_tasks import taxonomy


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def summary_rows(results: dict) -> list[tuple[str, str, str, str, str, str]]:
    """(row, sds, sds stderr, acc, items, skipped) for every subset, ability and the total present in `results`."""
    res = results["results"]
    rows = []

    def add(label, task, key=""):
        entry = res.get(task)
        if entry is None or f"sds{key},none" not in entry:
            return
        n = entry.get(f"items{key},none")
        rows.append(
            (
                label,
                _fmt(entry[f"sds{key},none"]),
                _fmt(entry.get(f"sds{key}_stderr,none")),
                _fmt(entry[f"acc{key},none"]),
                str(n),
                str(entry.get("skipped,none", "-") if not key else ""),
            )
        )

    for spec in taxonomy.SUBSETS:
        add(spec.name, taxonomy.task_name(spec.name))
    for ability in taxonomy.ABILITIES:
        add(ability, "radar_mmm", f"_{ability}")
        add(ability, f"radar_{ability}")
    add("radar_mmm (all)", "radar_mmm")
    return rows


def format_table(results: dict) -> str:
    header = ("", "SDS", "± stderr", "acc", "items", "skipped")
    rows = [header, *summary_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
