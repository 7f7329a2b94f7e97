"""`write_report(runs, out_dir, labels=None) -> Path`: tidy CSVs, PNG figures and a Markdown report of runs.

Files under `out_dir`:
  report.md            the report (returned path): `report_context` (what it says) rendered by
                       templates/report.md.j2
  report.html          the same content in one self-contained page, with interactive figures and the per-item
                       drill-down (`html.write_html`; `report-items.js` beside it when the drill-down is large)
  results.csv          the results JSONs, tidy: one row per run x task (or group) x metric, with stderr and n
  summary.csv          M3-Bench levels per run (category, subset, ability, overall) x metric (sds, acc, bpb,
                       brier): value, stderr, 95% CI (bootstrap from per-item logs, else ±1.96 stderr), n, chance
  asymmetry.csv        per run: perception and reasoning SDS, their chance levels, gap, gap_raw
  asymmetry_steps.csv  between consecutive runs of a series: deltas, rates, rate_ratio, delta_gap
  signal.csv           signal checks per series x level x task x metric
  takeoff.csv          per series x task x metric: the checkpoint from which the score is above its reference
  snr.csv              signal and noise as published (Heineman et al., 2025) per series x task x metric
  visual_gain.csv      per checkpoint with and without images x task x metric: the gain and its paired CI
  consecutive.csv      per series x step x task x metric: the change and its paired CI
  runs.csv             the runs and their labels
  figures/<name>.png   the figures of the catalogue `figures.FIGURES` that the runs allow
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from radar_tasks.analysis import paired, signal_noise, tables
from radar_tasks.analysis import takeoff as takeoff_table
from radar_tasks.analysis.runs import Run, format_number, load_runs

FIGURE_DPI = 110


def _fmt_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:.10g}")
    return v


def write_csv(path: Path, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> Path:
    """Write rows (dicts) as CSV; NaN and None become empty cells."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_cell(r.get(k)) for k in columns})
    return path


def _f(v, digits: int = 3, signed: bool = False) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _score_ci(cell: dict | None) -> str:
    if not cell or not math.isfinite(cell["value"]):
        return "–"
    if math.isfinite(cell["ci_low"]):
        return f"{cell['value']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"
    return f"{cell['value']:.3f}"


def draw_figures(runs: Sequence[Run], data: dict) -> tuple[dict, dict]:
    """All report figures (`figures.FIGURES`) from the runs and their tables (`analyse`): ({name: Figure},
    {name: reason skipped})."""
    from radar_tasks.analysis import figures

    figs, skipped = {}, {}
    for name, figure in figures.FIGURES.items():
        try:
            figs[name] = figure.draw(runs, data)
        except figures.FigureSkipped as exc:
            skipped[name] = str(exc)
    return figs, skipped


def analyse(
    runs: Sequence[Run], bootstrap_iters: int = 1000, seed: int = 0, snr_last: int = signal_noise.LAST_N
) -> dict:
    """Every table of a report, in memory: results, summary, asymmetry, steps, signal, takeoff, snr, visual_gain,
    consecutive, notes. `snr_last`: the n of the published signal and noise (RunError below 3)."""
    signal_noise.check_last_n(snr_last)
    results, summary, notes = [], [], []
    for r in runs:
        results += tables.tidy_results(r)
        rows, run_notes = tables.summarize(r, iters=bootstrap_iters, seed=seed)
        summary += rows
        notes += run_notes + tables.check_groups(r, rows)
    notes += tables.coverage_notes(list(runs), summary)
    asym, steps = tables.asymmetry(list(runs), summary)
    signal = tables.signal_checks(list(runs), summary)
    metrics = tables.summary_metrics(summary)
    gain, gain_notes = paired.visual_gain(runs, metrics, iters=bootstrap_iters, seed=seed)
    changes, change_notes = paired.consecutive(runs, metrics, iters=bootstrap_iters, seed=seed)
    return {
        "results": results,
        "summary": summary,
        "asymmetry": asym,
        "steps": steps,
        "signal": signal,
        "takeoff": takeoff_table.takeoff(list(runs), summary),
        "snr": signal_noise.signal_and_noise(list(runs), summary, snr_last),
        "visual_gain": gain,
        "consecutive": changes,
        "snr_last": snr_last,
        "notes": notes + gain_notes + change_notes,
    }


# The CSV files of a report: file name -> (table of `analyse`, its columns in order)
CSV_TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "results.csv": (
        "results",
        ("run", "task", "kind", "subset", "category", "ability", "metric", "filter", "value", "stderr", "n"),
    ),
    "summary.csv": (
        "summary",
        (
            "run",
            "level",
            "name",
            "subset",
            "category",
            "ability",
            "metric",
            "value",
            "stderr",
            "ci_low",
            "ci_high",
            "ci_method",
            "n",
            "chance",
        ),
    ),
    "asymmetry.csv": (
        "asymmetry",
        (
            "run",
            "series",
            "metric",
            "perception",
            "chance_perception",
            "reasoning",
            "chance_reasoning",
            "gap",
            "gap_raw",
        ),
    ),
    "asymmetry_steps.csv": (
        "steps",
        (
            "series",
            "metric",
            "from",
            "to",
            "x",
            "x_from",
            "x_to",
            "delta_perception",
            "delta_reasoning",
            "rate_perception",
            "rate_reasoning",
            "rate_ratio",
            "delta_gap",
            "delta_gap_raw",
        ),
    ),
    "signal.csv": (
        "signal",
        (
            "series",
            "level",
            "name",
            "metric",
            "runs",
            "x",
            "first",
            "last",
            "chance",
            "z_last",
            "runs_above_chance",
            "kendall_tau",
            "tau_p",
            "mean_stderr",
            "spread_over_stderr",
            "no_signal",
            "flags",
        ),
    ),
    "takeoff.csv": (
        "takeoff",
        (
            "series",
            "level",
            "name",
            "metric",
            "reference",
            "runs",
            "x",
            "takeoff",
            "takeoff_x",
            "runs_from_takeoff",
            "z_last",
            "status",
        ),
    ),
    "snr.csv": (
        "snr",
        (
            "series",
            "images",
            "level",
            "name",
            "metric",
            "runs",
            "last_n",
            "final",
            "noise",
            "signal",
            "snr",
            "low_snr",
        ),
    ),
    "visual_gain.csv": (
        "visual_gain",
        (
            "run",
            "ablated",
            "images",
            "series",
            "x",
            "x_value",
            "level",
            "name",
            "metric",
            "with_images",
            "without",
            "gain",
            "ci_low",
            "ci_high",
            "p_value",
            "n_items",
            "excludes_zero",
        ),
    ),
    "consecutive.csv": (
        "consecutive",
        (
            "series",
            "from",
            "to",
            "x",
            "x_from",
            "x_to",
            "level",
            "name",
            "metric",
            "before",
            "after",
            "delta",
            "ci_low",
            "ci_high",
            "p_value",
            "n_items",
            "excludes_zero",
        ),
    ),
}


def write_report(
    runs: Sequence[Run | str | os.PathLike],
    out_dir: str | os.PathLike,
    labels: Any = None,
    *,
    manifest: str | os.PathLike | None = None,
    flags: Mapping[str, Any] | None = None,
    bootstrap_iters: int = 1000,
    seed: int = 0,
    snr_last: int = signal_noise.LAST_N,
    title: str = "RADAR report",
) -> Path:
    """Write the CSVs, figures, Markdown report and report.html of `runs` under `out_dir`; returns the report.md
    path.

    `runs`: results JSONs, lmms-eval output folders (every `*_results.json` below is a run) or `Run` objects.
    `labels`: None, a manifest path (YAML/CSV), a list of label dicts (one per run in order, or each with a `run`
    path), or a mapping `results path or folder -> label dict`; label fields: label, model, step, tokens, size,
    strategy, series. `manifest` / `flags` are the CLI's (`flags`: field -> comma-separated values, one per run).
    `snr_last`: the last checkpoints of a series that give its published noise and final score (at least 3).
    """
    signal_noise.check_last_n(snr_last)
    runs = load_runs(runs, manifest=manifest, flags=flags, labels=labels)
    out = Path(out_dir)
    data = analyse(runs, bootstrap_iters=bootstrap_iters, seed=seed, snr_last=snr_last)
    (out / "figures").mkdir(parents=True, exist_ok=True)

    write_csv(out / "runs.csv", [r.label_row() for r in runs])
    for file_name, (table, columns) in CSV_TABLES.items():
        write_csv(out / file_name, data[table], columns)

    figs, skipped = draw_figures(runs, data)
    figure_files = {}
    for name, fig in figs.items():
        path = out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=FIGURE_DPI)
        figure_files[name] = path
    report = out / "report.md"
    context = report_context(runs, data, figure_files, skipped, out, title, bootstrap_iters, seed)
    report.write_text(render_markdown(context), encoding="utf-8")
    from radar_tasks.analysis.html import write_html

    write_html(runs, data, context, figure_files, out)
    return report


# ---------------------------------------------------------------------------------------------------------------
# The report's content (`report_context`), and its Markdown rendering (`render_markdown`, templates/report.md.j2)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict:
    return {"header": list(header), "rows": [list(r) for r in rows]}


def report_context(
    runs: Sequence[Run], data: dict, figure_files: dict, skipped: dict, out: Path, title: str, iters: int, seed: int
) -> dict:
    """What the report says, with no markup: numbers formatted for display, tables as {header, rows} of cells,
    paths relative to `out`. Every renderer of the report reads this (report.md: `render_markdown`)."""
    from radar_tasks.analysis import figures

    summary = data["summary"]

    def cell(run: Run, level: str, name: str, metric: str) -> dict | None:
        return tables.lookup(summary, run.label, level, name, metric)

    runs_table = _table(
        ("run", "model", "series", "step", "tokens", "size", "strategy", "per-item logs", "results"),
        (
            (
                r.label,
                r.model,
                r.series,
                format_number(r.step),
                format_number(r.tokens),
                format_number(r.size),
                r.strategy or "",
                f"{len(r.sample_files)} task(s)" if r.has_logs else "no",
                _rel(r.results_path, out),
            )
            for r in runs
        ),
    )
    unlabelled = [
        f
        for f in ("step/tokens", "size", "strategy")
        if not any(getattr(r, n) is not None for r in runs for n in f.split("/"))
    ]

    score_rows = []
    for r in runs:
        ov = cell(r, "overall", "overall", "sds")
        score_rows.append(
            (
                r.label,
                tables.coverage_label(tables.coverage(r, summary)),
                _score_ci(ov),
                _score_ci(cell(r, "ability", "perception", "sds")),
                _score_ci(cell(r, "ability", "reasoning", "sds")),
                _f(ov["chance"] if ov else None),
                _score_ci(cell(r, "overall", "overall", "acc")),
                _score_ci(cell(r, "ability", "perception", "acc")),
                _score_ci(cell(r, "ability", "reasoning", "acc")),
                _score_ci(cell(r, "overall", "overall", "bpb")),
                _score_ci(cell(r, "overall", "overall", "brier")),
                ov["n"] if ov and ov["n"] is not None else "–",
            )
        )
    scores_table = _table(
        (
            "run",
            "scored",
            "SDS overall",
            "SDS perception",
            "SDS reasoning",
            "SDS chance",
            "acc overall",
            "acc perception",
            "acc reasoning",
            "BPB overall",
            "Brier overall",
            "scored items",
        ),
        score_rows,
    )

    subsets = list(dict.fromkeys(row["name"] for row in summary if row["level"] == "subset"))
    subset_rows = []
    for s in subsets:
        cells = [cell(r, "subset", s, "sds") for r in runs]
        subset_rows.append(
            (
                s,
                *[f"{_f(c['value'])} ± {_f(c['stderr'])}" if c else "–" for c in cells],
                _f(next((c["chance"] for c in cells if c), None)),
            )
        )
    subsets_table = _table(("subset", *[r.label for r in runs], "chance"), subset_rows) if subsets else None

    asymmetry_table = _table(
        ("run", "SDS perception", "chance", "SDS reasoning", "chance", "gap", "gap_raw"),
        (
            (
                a["run"],
                _f(a["perception"]),
                _f(a["chance_perception"]),
                _f(a["reasoning"]),
                _f(a["chance_reasoning"]),
                _f(a["gap"], signed=True),
                _f(a["gap_raw"], signed=True),
            )
            for a in data["asymmetry"]
        ),
    )
    steps_table = _table(
        ("series", "from", "to", "Δ perception", "Δ reasoning", "rate ratio", "Δ gap"),
        (
            (
                s["series"],
                s["from"],
                s["to"],
                _f(s["delta_perception"], signed=True),
                _f(s["delta_reasoning"], signed=True),
                _f(s["rate_ratio"], 2),
                _f(s["delta_gap"], signed=True),
            )
            for s in data["steps"]
        ),
    )

    signal = [s for s in data["signal"] if s["level"] != "category"]
    signal_table = _table(
        (
            "series",
            "task",
            "metric",
            "runs",
            "last",
            "chance",
            "z last",
            "runs > chance",
            "Kendall τ (p)",
            "mean stderr",
            "spread / stderr",
            "flags",
        ),
        (
            (
                s["series"],
                s["name"],
                s["metric"],
                s["runs"],
                _f(s["last"]),
                _f(s["chance"]),
                _f(s["z_last"], 1),
                "–" if s["runs_above_chance"] is None else s["runs_above_chance"],
                f"{_f(s['kendall_tau'], 2)} ({_f(s['tau_p'], 2)})",
                _f(s["mean_stderr"]),
                _f(s["spread_over_stderr"], 2),
                s["flags"] or "ok",
            )
            for s in signal
        ),
    )
    # categories of multi-category subsets (a single-file subset's category is the subset itself)
    categories = [s for s in data["signal"] if s["level"] == "category" and s["metric"] == "sds" and "/" in s["name"]]

    takeoff_header, takeoff_rows = takeoff_table.table_rows(data["takeoff"])
    snr_table = _table(
        ("series", "task", "metric", "runs", "final", "noise", "signal", "SNR"),
        (
            (
                s["series"],
                s["name"],
                tables.display_name(s["metric"]),
                s["runs"],
                _f(s["final"]),
                _f(s["noise"], 4),
                _f(s["signal"], 4),
                _f(s["snr"], 2) + (" (low)" if s["low_snr"] else ""),
            )
            for s in data["snr"]
        ),
    )
    gain_tables = visual_gain_tables(data["visual_gain"])
    consecutive = consecutive_table(data["consecutive"])

    return {
        "title": title,
        "runs": len(runs),
        "runs_with_logs": sum(r.has_logs for r in runs),
        "bootstrap_iters": iters,
        "seed": seed,
        "runs_table": runs_table,
        "unlabelled": unlabelled,
        "scores_table": scores_table,
        "partial": tables.partial_notes(list(runs), summary),
        "subsets_table": subsets_table,
        "asymmetry_table": asymmetry_table,
        "steps_table": steps_table if data["steps"] else None,
        "asymmetry_doc": tables.ASYMMETRY_DOC,
        "signal_table": signal_table if signal else None,
        "flagged": [s for s in signal if s["no_signal"] and s["metric"] == "sds"],
        "flagged_categories": sorted({s["name"] for s in categories if s["no_signal"]}),
        "categories": len({s["name"] for s in categories}),
        "ordered_by_run_order": any(r.labels.get("step") is None and r.labels.get("tokens") is None for r in runs),
        "signal_doc": tables.SIGNAL_DOC,
        "takeoff_table": _table(takeoff_header, takeoff_rows) if takeoff_rows else None,
        "takeoff_doc": takeoff_table.TAKEOFF_DOC,
        "snr_last": data["snr_last"],
        "snr_table": snr_table if data["snr"] else None,
        "snr_has_signal": any(math.isfinite(s["signal"]) for s in data["snr"]),
        "snr_flagged": sorted(
            {
                f"{s['name']} ({tables.display_name(s['metric'])}, {s['series']})"
                for s in data["snr"]
                if s["low_snr"] and s["level"] == "subset"
            }
        ),
        "snr_doc": signal_noise.SNR_DOC,
        "visual_gain_table": gain_tables[0],
        "visual_gain_subsets_table": gain_tables[1],
        "visual_gain_doc": paired.VISUAL_GAIN_DOC,
        "consecutive_table": consecutive,
        "consecutive_doc": paired.CONSECUTIVE_DOC,
        "figures": [
            {"name": name, "caption": figures.FIGURES[name].caption, "path": _rel(path, out)}
            for name, path in figure_files.items()
        ],
        "figures_skipped": skipped,
        "notes": data["notes"],
    }


def _paired_cell(row: dict | None, key: str) -> str:
    """`+0.012 [-0.004, +0.031]` of a paired difference (`key`: gain or delta), `*` when the interval excludes 0."""
    if row is None or not math.isfinite(row[key]):
        return "–"
    ci = (
        f" [{_f(row['ci_low'], signed=True)}, {_f(row['ci_high'], signed=True)}]"
        if math.isfinite(row["ci_low"])
        else ""
    )
    return f"{row[key]:+.3f}{ci}{' *' if row['excludes_zero'] else ''}"


def visual_gain_tables(rows: list[dict]) -> tuple[dict | None, dict | None]:
    """The report's visual-gain tables: (per checkpoint, ability and overall; per subset at the last checkpoint of
    each series), one column per metric: score with images, without, gain [95% CI]."""
    if not rows:
        return None, None
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    index = {(r["run"], r["ablated"], r["level"], r["name"], r["metric"]): r for r in rows}
    pairs = list(dict.fromkeys((r["run"], r["ablated"], r["images"], r["series"]) for r in rows))
    head = [col for m in metrics for col in (f"{tables.display_name(m)} with", "without", "gain [95% CI]")]

    def cells(run, ablated, level, name):
        out = []
        for m in metrics:
            r = index.get((run, ablated, level, name, m))
            out += [_f(r["with_images"]) if r else "–", _f(r["without"]) if r else "–", _paired_cell(r, "gain")]
        return out

    by_ability = _table(
        ("checkpoint", "images", "task", *head),
        (
            (run, images, name, *cells(run, ablated, level, name))
            for run, ablated, images, _series in pairs
            for level, name in dict.fromkeys(
                (r["level"], r["name"]) for r in rows if r["run"] == run and r["ablated"] == ablated
            )
            if level in ("ability", "overall")
        ),
    )
    last = {}
    for run, ablated, images, series in pairs:
        last[(series, images)] = (run, ablated, images)
    by_subset = _table(
        ("checkpoint", "images", "subset", *head),
        (
            (run, images, name, *cells(run, ablated, "subset", name))
            for run, ablated, images in last.values()
            for name in dict.fromkeys(
                r["name"] for r in rows if r["run"] == run and r["ablated"] == ablated and r["level"] == "subset"
            )
        ),
    )
    return by_ability, by_subset


def consecutive_table(rows: list[dict]) -> dict | None:
    """The report's table of changes between consecutive checkpoints: one row per series, step and metric; one
    column per ability and overall: delta [95% CI] (* when it excludes 0)."""
    rows = [r for r in rows if r["level"] in ("ability", "overall")]
    if not rows:
        return None
    names = list(dict.fromkeys(r["name"] for r in rows))
    index = {(r["series"], r["from"], r["to"], r["metric"], r["name"]): r for r in rows}
    steps = list(dict.fromkeys((r["series"], r["from"], r["to"], r["metric"]) for r in rows))
    return _table(
        ("series", "from", "to", "metric", *[f"Δ {n} [95% CI]" for n in names]),
        (
            (
                series,
                a,
                b,
                tables.display_name(m),
                *[_paired_cell(index.get((series, a, b, m, n)), "delta") for n in names],
            )
            for series, a, b, m in steps
        ),
    )


def render_markdown(context: dict) -> str:
    """report.md from `report_context`'s content (templates/report.md.j2)."""
    return _markdown_template().render(context)


@functools.cache
def _markdown_template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("radar_tasks.analysis", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = lambda v: str(v).replace("|", "\\|")  # a | inside a cell would end it
    return env.get_template("report.md.j2")


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)
