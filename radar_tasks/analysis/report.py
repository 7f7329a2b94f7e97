"""`write_report(runs, out_dir, labels=None) -> Path`: tidy CSVs, PNG figures and a Markdown report of runs.

Files under `out_dir`:
  report.md            the report (returned path)
  results.csv          the results JSONs, tidy: one row per run x task (or group) x metric, with stderr and n
  summary.csv          M3-Bench levels per run (category, subset, ability, overall) x metric (sds, acc):
                       value, stderr, 95% CI (bootstrap from per-item logs, else ±1.96 stderr), n, chance
  asymmetry.csv        per run: perception and reasoning SDS, their chance levels, gap, gap_raw
  asymmetry_steps.csv  between consecutive runs of a series: deltas, rates, rate_ratio, delta_gap
  signal.csv           signal checks per series x level x task x metric
  runs.csv             the runs and their labels
  figures/*.png        radar chart, development curves, scaling, strategies, SDS vs acc, heatmap, asymmetry
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from radar_tasks.analysis import tables as T
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


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def esc(s) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _score_ci(cell: dict | None) -> str:
    if not cell or not math.isfinite(cell["value"]):
        return "–"
    if math.isfinite(cell["ci_low"]):
        return f"{cell['value']:.3f} [{cell['ci_low']:.3f}, {cell['ci_high']:.3f}]"
    return f"{cell['value']:.3f}"


def draw_figures(runs: Sequence[Run], summary: list[dict], asym_rows: list[dict]) -> tuple[dict, dict]:
    """All report figures (`figures.FIGURES`): ({name: Figure}, {name: reason skipped})."""
    from radar_tasks.analysis import figures as F

    figs, skipped = {}, {}
    for name, figure in F.FIGURES.items():
        try:
            figs[name] = figure.draw(runs, summary, asym_rows)
        except F.FigureSkipped as exc:
            skipped[name] = str(exc)
    return figs, skipped


def _caption(name: str) -> str:
    from radar_tasks.analysis import figures as F

    return F.FIGURES[name].caption if name in F.FIGURES else name


def analyse(runs: Sequence[Run], bootstrap_iters: int = 1000, seed: int = 0) -> dict:
    """Every table of a report, in memory: results, summary, asymmetry, steps, signal, notes."""
    results, summary, notes = [], [], []
    for r in runs:
        results += T.tidy_results(r)
        rows, run_notes = T.summarize(r, iters=bootstrap_iters, seed=seed)
        summary += rows
        notes += run_notes + T.check_groups(r, rows)
    notes += T.coverage_notes(list(runs), summary)
    asym, steps = T.asymmetry(list(runs), summary)
    signal = T.signal_checks(list(runs), summary)
    return {"results": results, "summary": summary, "asymmetry": asym, "steps": steps, "signal": signal, "notes": notes}


def write_report(
    runs: Sequence[Run | str | os.PathLike],
    out_dir: str | os.PathLike,
    labels: Any = None,
    *,
    manifest: str | os.PathLike | None = None,
    flags: Mapping[str, Any] | None = None,
    bootstrap_iters: int = 1000,
    seed: int = 0,
    title: str = "RADAR report",
) -> Path:
    """Write the CSVs, figures and Markdown report of `runs` under `out_dir`; returns the report.md path.

    `runs`: results JSONs, lmms-eval output folders (every `*_results.json` below is a run) or `Run` objects.
    `labels`: None, a manifest path (YAML/CSV), a list of label dicts (one per run in order, or each with a `run`
    path), or a mapping `results path or folder -> label dict`; label fields: label, model, step, tokens, size,
    strategy, series. `manifest` / `flags` are the CLI's (`flags`: field -> comma-separated values, one per run).
    """
    runs = load_runs(runs, manifest=manifest, flags=flags, labels=labels)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    data = analyse(runs, bootstrap_iters=bootstrap_iters, seed=seed)

    write_csv(out / "runs.csv", [r.label_row() for r in runs])
    write_csv(
        out / "results.csv",
        data["results"],
        ["run", "task", "kind", "subset", "category", "ability", "metric", "filter", "value", "stderr", "n"],
    )
    write_csv(
        out / "summary.csv",
        data["summary"],
        [
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
        ],
    )
    write_csv(
        out / "asymmetry.csv",
        data["asymmetry"],
        [
            "run",
            "series",
            "metric",
            "perception",
            "chance_perception",
            "reasoning",
            "chance_reasoning",
            "gap",
            "gap_raw",
        ],
    )
    write_csv(
        out / "asymmetry_steps.csv",
        data["steps"],
        [
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
        ],
    )
    write_csv(
        out / "signal.csv",
        data["signal"],
        [
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
            "noise",
            "snr",
            "no_signal",
            "flags",
        ],
    )

    figs, skipped = draw_figures(runs, data["summary"], data["asymmetry"])
    figure_files = {}
    for name, fig in figs.items():
        path = out / "figures" / f"{name}.png"
        fig.savefig(path, dpi=FIGURE_DPI)
        figure_files[name] = path
    report = out / "report.md"
    report.write_text(
        render_markdown(runs, data, figure_files, skipped, out, title, bootstrap_iters, seed), encoding="utf-8"
    )
    return report


def render_markdown(
    runs: Sequence[Run], data: dict, figure_files: dict, skipped: dict, out: Path, title: str, iters: int, seed: int
) -> str:
    summary = data["summary"]
    L: list[str] = [f"# {title}", ""]
    logs = [r for r in runs if r.has_logs]
    L.append(
        f"{len(runs)} run(s); per-item logs for {len(logs)}. Intervals: 95%, "
        + (f"stratified bootstrap over items ({iters} resamples, seed {seed})" if logs else "")
        + (" where per-item logs exist, else " if logs and len(logs) < len(runs) else "")
        + ("±1.96 × results-JSON stderr" if len(logs) < len(runs) else "")
        + "."
    )
    L += ["", "## Runs", ""]
    L.append(
        _md_table(
            ("run", "model", "series", "step", "tokens", "size", "strategy", "per-item logs", "results"),
            [
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
            ],
        )
    )
    unlabelled = [
        f
        for f in ("step/tokens", "size", "strategy")
        if not any(getattr(r, n) is not None for r in runs for n in f.split("/"))
    ]
    if unlabelled:
        L += ["", f"Labels not given: {', '.join(unlabelled)} (see `radar-tasks report --help`)."]

    L += [
        "",
        "## Scores",
        "",
        (
            "SDS and accuracy by ability (value [95% CI]); chance = mean 1/K over the same "
            "items (– without per-item logs)."
        ),
        "",
    ]
    rows = []
    for r in runs:

        def c(level, name, m, label=r.label):
            return T.lookup(summary, label, level, name, m)

        ov = c("overall", "overall", "sds")
        rows.append(
            (
                r.label,
                T.coverage_label(T.coverage(r, summary)),
                _score_ci(ov),
                _score_ci(c("ability", "perception", "sds")),
                _score_ci(c("ability", "reasoning", "sds")),
                _f(ov["chance"] if ov else None),
                _score_ci(c("overall", "overall", "acc")),
                _score_ci(c("ability", "perception", "acc")),
                _score_ci(c("ability", "reasoning", "acc")),
                ov["n"] if ov and ov["n"] is not None else "–",
            )
        )
    L.append(
        _md_table(
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
                "scored items",
            ),
            rows,
        )
    )
    partial = T.partial_notes(list(runs), summary)
    if partial:
        L += ["", "**Not all of M3-Bench was scored:**", ""] + [f"- {n}" for n in partial]

    subsets = []
    for row in summary:
        if row["level"] == "subset" and row["name"] not in subsets:
            subsets.append(row["name"])
    if subsets:
        L += ["", "### SDS per subset", "", "value ± stderr; chance in the last column (first run).", ""]
        body = []
        for s in subsets:
            cells = [T.lookup(summary, r.label, "subset", s, "sds") for r in runs]
            body.append(
                (
                    s,
                    *[f"{_f(c['value'])} ± {_f(c['stderr'])}" if c else "–" for c in cells],
                    _f(next((c["chance"] for c in cells if c), None)),
                )
            )
        L.append(_md_table(("subset", *[r.label for r in runs], "chance"), body))

    L += ["", "## Asymmetry", ""]
    L.append(
        _md_table(
            ("run", "SDS perception", "chance", "SDS reasoning", "chance", "gap", "gap_raw"),
            [
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
            ],
        )
    )
    if not all(r.has_logs for r in runs):
        L += [
            "",
            (
                "Chance levels need per-item logs (`n_candidates`); for runs without them only `gap_raw` "
                "(no chance correction) is given."
            ),
        ]
    if data["steps"]:
        L += ["", "Between consecutive runs of each series:", ""]
        L.append(
            _md_table(
                ("series", "from", "to", "Δ perception", "Δ reasoning", "rate ratio", "Δ gap"),
                [
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
                ],
            )
        )
    L += ["", "<details><summary>Definitions</summary>", "", "```text", T.ASYMMETRY_DOC, "```", "", "</details>"]

    L += ["", "## Signal checks", ""]
    sig = [s for s in data["signal"] if s["level"] != "category"]
    if sig:
        L.append(
            _md_table(
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
                    "noise",
                    "SNR",
                    "flags",
                ),
                [
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
                        _f(s["noise"]),
                        _f(s["snr"], 2),
                        s["flags"] or "ok",
                    )
                    for s in sig
                ],
            )
        )
    flagged = [s for s in data["signal"] if s["no_signal"] and s["metric"] == "sds" and s["level"] != "category"]
    # categories of multi-category subsets (a single-file subset's category is the subset itself)
    cats = [s for s in data["signal"] if s["level"] == "category" and s["metric"] == "sds" and "/" in s["name"]]
    flagged_cats = [s for s in cats if s["no_signal"]]
    L.append("")
    if flagged:
        L.append(
            "**Tasks without signal (SDS):** "
            + "; ".join(f"{s['name']} (series {s['series']}: {s['flags']})" for s in flagged)
            + "."
        )
    else:
        L.append("No subset, ability or overall score is flagged as carrying no SDS signal.")
    if flagged_cats:
        names = sorted({s["name"] for s in flagged_cats})
        L += [
            "",
            f"Categories without signal (SDS): {len(names)} of {len({s['name'] for s in cats})} "
            f"({', '.join(names[:12])}{' ...' if len(names) > 12 else ''}); all rows in `signal.csv`.",
        ]
    if len(runs) < 2:
        L += ["", "A single run: monotonicity and signal-to-noise need a series of runs."]
    if any(r.labels.get("step") is None and r.labels.get("tokens") is None for r in runs):
        L += ["", "Runs without steps or tokens are ordered by run order (argument order, then file timestamp)."]
    L += ["", "<details><summary>Definitions</summary>", "", "```text", T.SIGNAL_DOC, "```", "", "</details>"]

    L += ["", "## Figures", ""]
    for name, path in figure_files.items():
        L += [f"### {_caption(name)}", "", f"![{name}]({_rel(path, out)})", ""]
    if skipped:
        L += ["Figures not drawn:", ""]
        L += [f"- `{name}`: {reason}" for name, reason in skipped.items()]
        L.append("")

    if data["notes"]:
        L += ["## Notes", ""] + [f"- {n}" for n in data["notes"]] + [""]
    L += [
        "## Files",
        "",
        (
            "`results.csv` (results JSONs, tidy), `summary.csv` (M3-Bench levels with CIs and "
            "chance), `asymmetry.csv`, `asymmetry_steps.csv`, `signal.csv`, `runs.csv`, `figures/`."
        ),
        "",
    ]
    return "\n".join(L)


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)
