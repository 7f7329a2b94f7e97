"""Takeoff: from which checkpoint of a series a score stands above its reference for good.

Per series, level (subset, ability, overall) and metric, from the summary rows (`tables.summarize`): z of every
checkpoint against its reference, and the first checkpoint from which every later z is above 1.96.
"""

from __future__ import annotations

import math

from radar_tasks.analysis import stats
from radar_tasks.analysis.runs import Run
from radar_tasks.analysis.tables import CHANCE, SIGNAL_Z, display_name, higher_is_better, series_cells

LEVELS = ("subset", "ability", "overall")

TAKEOFF_DOC = f"""\
Takeoff (per series, subset, ability and overall, per metric):
  z_t = (score_t - reference_t) / stderr_t in the metric's better direction (for a metric where lower is better,
    such as bpb: z_t = (reference_t - score_t) / stderr_t), stderr_t = the bootstrap stderr of checkpoint t;
  reference: the items' chance level (SDS and acc: the mean 1/K of the same items, as the signal checks), and for
    a metric without one (bpb, ...) the first checkpoint's score of the series;
  takeoff = the first checkpoint t such that z_u > {SIGNAL_Z:.2f} at every checkpoint u >= t of the series (above its
    reference from t on, for good). `not yet`: the last checkpoint is not above; `unknown`: no z is known (chance
    levels need per-item logs)."""


def takeoff(runs: list[Run], summary: list[dict], levels=LEVELS) -> list[dict]:
    """One row per series x (level, name) x metric: the takeoff checkpoint (its label and x) or why there is none."""
    rows = []
    for series, members, xs, field_name, level, name, metric, cells in series_cells(runs, summary, levels):
        values = [c["value"] if c else math.nan for c in cells]
        stderrs = [c["stderr"] if c else math.nan for c in cells]
        if metric in CHANCE:
            reference, against = [c["chance"] if c else math.nan for c in cells], "chance"
        else:
            reference, against = [values[0]] * len(values), "first checkpoint"
        sign = 1.0 if higher_is_better(metric) else -1.0
        zs = [stats.z_above(sign * v, sign * ref, se) for v, ref, se in zip(values, reference, stderrs)]
        start = stats.takeoff_index(zs, SIGNAL_Z)
        known = any(math.isfinite(z) for z in zs)
        rows.append(
            {
                "series": series,
                "level": level,
                "name": name,
                "metric": metric,
                "reference": against,
                "runs": len(members),
                "x": field_name,
                "takeoff": members[start].label if start is not None else None,
                "takeoff_x": xs[start] if start is not None else math.nan,
                "runs_from_takeoff": len(members) - start if start is not None else 0,
                "z_last": zs[-1],
                "status": "takeoff" if start is not None else "not yet" if known else "unknown",
            }
        )
    return rows


def cell(row: dict | None) -> str:
    """A takeoff row as a table cell: the checkpoint's label, `not yet`, `unknown`, or – (no such row)."""
    if row is None:
        return "–"
    return row["takeoff"] if row["status"] == "takeoff" else row["status"]


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the report's takeoff table: one row per series and task, one column per metric."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    index = {(r["series"], r["level"], r["name"], r["metric"]): r for r in rows}
    tasks = list(dict.fromkeys((r["series"], r["level"], r["name"]) for r in rows))
    header = ["series", "task", *[f"{display_name(m)} takeoff" for m in metrics]]
    body = [
        [series, name, *[cell(index.get((series, level, name, m))) for m in metrics]] for series, level, name in tasks
    ]
    return header, body
