"""Interactive figures of report.html (plotly): development curves, the radar chart, the category heatmaps.

Each function returns a `plotly.graph_objects.Figure` drawn from the report's tables (`report.analyse`), or raises
`figures.FigureSkipped(reason)` as the matplotlib figures do. They are generic over the metrics of the summary
table (sds, acc and whatever metric it gains: its direction from the metric catalogue) and draw what the tables
hold: values with their 95% intervals as bands, chance (mean 1/K) as dotted lines where the per-item logs give it,
and takeoff marks where a `takeoff` table gives them.

`catalogue(tables)` lists them in page order for the metrics present, as `figures.FIGURES` does for the PNGs;
`COVERS` names the PNG figures they replace on the page (the others are embedded as images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import plotly.graph_objects as go

from radar_tasks import taxonomy
from radar_tasks.analysis.figures import FigureSkipped
from radar_tasks.analysis.runs import Run, progress, series_of
from radar_tasks.analysis.tables import lookup

ABILITY_COLORS = {taxonomy.PERCEPTION: "#1f77b4", taxonomy.REASONING: "#d62728", "overall": "#7f7f7f"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DASHES = ("solid", "dash", "dot", "dashdot")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num(v) -> float | None:
    """A JSON-safe number (None for NaN / inf / missing)."""
    return float(v) if _finite(v) else None


def metrics_of(summary: list[dict]) -> list[str]:
    """The metrics of the summary table, in its order (sds, acc, then any other)."""
    return list(dict.fromkeys(r["metric"] for r in summary))


def higher_is_better(metric: str) -> bool:
    from radar_tasks.metrics import catalogue

    try:
        return catalogue.by_name(metric).higher_is_better
    except KeyError:
        return True


def metric_title(metric: str) -> str:
    name = {"sds": "SDS", "acc": "accuracy", "bpb": "BPB"}.get(metric, metric)
    return name if higher_is_better(metric) else f"{name} (lower is better)"


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _takeoffs(tables: dict, series: str, level: str, name: str, metric: str) -> list[dict]:
    """Takeoff rows of a `takeoff` table (when the report has one) for one curve: rows naming the series, the level,
    the name and the metric, with the run (`run`) or the progress value (`x`) where the curve takes off."""
    rows = tables.get("takeoff") or []
    out = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        if (row.get("series"), row.get("level", level), row.get("name"), row.get("metric", metric)) == (
            series,
            level,
            name,
            metric,
        ):
            out.append(row)
    return out


def development(runs: Sequence[Run], tables: dict, metric: str, level: str) -> go.Figure:
    """One line per ability (level "ability": perception, reasoning and overall) or per subset (level "subset")
    against training progress, each series its own dash; bands: 95% CI; dotted: chance."""
    summary = tables["summary"]
    groups = {k: v for k, v in series_of(runs).items() if len(v) >= 2}
    if not groups:
        raise FigureSkipped("development curves need a series of at least 2 runs (checkpoints)")
    if level == "ability":
        names = [*taxonomy.ABILITIES, "overall"]
        colors = dict(ABILITY_COLORS)
    else:
        names = sorted({r["name"] for r in summary if r["level"] == "subset"}, key=taxonomy.subset_order)
        colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    fig = go.Figure()
    xlabels, all_x, drawn = set(), [], 0
    for si, (series, members) in enumerate(groups.items()):
        xs, _, xlabel = progress(members)
        xlabels.add(xlabel)
        all_x += xs
        for name in names:
            lvl = "overall" if name == "overall" else level
            cells = [lookup(summary, r.label, lvl, name, metric) for r in members]
            if not any(c and _finite(c["value"]) for c in cells):
                continue
            drawn += 1
            color = colors[name]
            trace = name if len(groups) == 1 else f"{name} · {series}"
            group = f"{series}/{name}"
            lo = [_num(c["ci_low"]) if c else None for c in cells]
            hi = [_num(c["ci_high"]) if c else None for c in cells]
            if all(v is not None for v in lo + hi):
                fig.add_trace(
                    go.Scatter(
                        x=xs + xs[::-1],
                        y=hi + lo[::-1],
                        fill="toself",
                        mode="lines",
                        fillcolor=_rgba(color, 0.15 if level == "ability" else 0.07),  # 9 subsets: fainter
                        line={"width": 0},
                        hoverinfo="skip",
                        legendgroup=group,
                        showlegend=False,
                        name=f"{trace} 95% CI",
                    )
                )
            custom = [
                [
                    r.label,
                    _num(c["ci_low"]) if c else None,
                    _num(c["ci_high"]) if c else None,
                    c["n"] if c else None,
                    _num(c["chance"]) if c else None,
                ]
                for r, c in zip(members, cells)
            ]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[_num(c["value"]) if c else None for c in cells],
                    mode="lines+markers",
                    name=trace,
                    legendgroup=group,
                    line={"color": color, "dash": DASHES[si % len(DASHES)]},
                    customdata=custom,
                    hovertemplate=(
                        f"<b>{trace}</b> %{{customdata[0]}}<br>{xlabel} %{{x:,}}<br>{metric} %{{y:.4f}} "
                        "[%{customdata[1]:.4f}, %{customdata[2]:.4f}]<br>items %{customdata[3]}"
                        "<br>chance %{customdata[4]:.4f}<extra></extra>"
                    ),
                )
            )
            chance = [_num(c["chance"]) if c else None for c in cells]
            if all(v is not None for v in chance):
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=chance,
                        mode="lines",
                        name=f"chance, {trace}",
                        legendgroup=group,
                        showlegend=False,
                        line={"color": color, "dash": "dot", "width": 1},
                        hovertemplate=f"chance (1/K), {trace}: %{{y:.4f}}<extra></extra>",
                    )
                )
            marks = _takeoffs(tables, series, lvl, name, metric)
            by_label = {r.label: (x, c) for r, x, c in zip(members, xs, cells)}
            points = []
            for row in marks:
                if row.get("run") in by_label and by_label[row["run"]][1]:
                    x, c = by_label[row["run"]]
                    points.append((x, c["value"]))
                elif _finite(row.get("x")):
                    near = min(zip(xs, cells), key=lambda t: abs(t[0] - row["x"]))
                    points.append((row["x"], near[1]["value"] if near[1] else None))
            if points:
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in points],
                        y=[_num(p[1]) for p in points],
                        mode="markers",
                        marker={"symbol": "star", "size": 14, "color": color, "line": {"width": 1, "color": "black"}},
                        name=f"takeoff, {trace}",
                        legendgroup=group,
                        hovertemplate=f"takeoff of {trace} at %{{x:,}}<extra></extra>",
                    )
                )
    if not drawn:
        raise FigureSkipped(f"no {metric} at level {level} in the runs")
    wide = [x for x in all_x if _finite(x) and x > 0]
    log_x = len(wide) >= 2 and max(wide) / min(wide) >= 50 and len(wide) == len(all_x)
    what = "by ability" if level == "ability" else "by subset"
    fig.update_layout(
        title=f"{metric_title(metric)} {what} over training (bands: 95% CI; dotted: chance; click a legend entry "
        "to hide it, double-click to show it alone)",
        xaxis={"title": " / ".join(sorted(xlabels)), "type": "log" if log_x else "linear"},
        yaxis={"title": metric_title(metric)},
        hovermode="closest",
        legend={"groupclick": "togglegroup"},
        height=420,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def radar(runs: Sequence[Run], tables: dict, metric: str = "sds") -> go.Figure:
    """The per-subset score of every run on one polar chart (dashed grey: chance)."""
    summary = tables["summary"]
    subsets = sorted({r["name"] for r in summary if r["level"] == "subset"}, key=taxonomy.subset_order)
    if len(subsets) < 3:
        raise FigureSkipped(f"a radar chart needs at least 3 subsets; the runs hold {len(subsets)}")
    fig = go.Figure()
    for i, r in enumerate(runs):
        cells = [lookup(summary, r.label, "subset", s, metric) for s in subsets]
        values = [_num(c["value"]) if c else None for c in cells]
        if all(v is None for v in values):
            continue
        fig.add_trace(
            go.Scatterpolar(
                r=values + values[:1],
                theta=subsets + subsets[:1],
                mode="lines+markers",
                name=r.label,
                line={"color": PALETTE[i % len(PALETTE)]},
                hovertemplate=f"{r.label}<br>%{{theta}}: %{{r:.4f}}<extra></extra>",
            )
        )
    chance = [lookup(summary, runs[0].label, "subset", s, metric) for s in subsets] if runs else []
    chance = [_num(c["chance"]) if c else None for c in chance]
    if chance and all(v is not None for v in chance):
        fig.add_trace(
            go.Scatterpolar(
                r=chance + chance[:1],
                theta=subsets + subsets[:1],
                mode="lines",
                name="chance (1/K)",
                line={"color": "grey", "dash": "dash"},
                hovertemplate="chance %{theta}: %{r:.4f}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Per-subset {metric_title(metric)} by run",
        polar={"angularaxis": {"direction": "clockwise", "rotation": 90}},
        height=520,
        margin={"l": 60, "r": 60, "t": 60, "b": 40},
    )
    return fig


def heatmap(runs: Sequence[Run], tables: dict, metric: str) -> go.Figure:
    """The score of every category (rows, by subset and ability) in every run (columns), with its interval."""
    from radar_tasks.analysis.figures import _category_order

    summary = tables["summary"]
    order = _category_order(summary, metric)
    if not order:
        raise FigureSkipped(f"no M3-Bench category with {metric} in the runs")
    cats = [n for n, _ in order]
    labels = [r.label for r in runs]
    cells = [[lookup(summary, label, "category", c, metric) for label in labels] for c in cats]
    z = [[_num(c["value"]) if c else None for c in row] for row in cells]
    custom = [
        [[_num(c["ci_low"]) if c else None, _num(c["ci_high"]) if c else None, c["n"] if c else None] for c in row]
        for row in cells
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=[f"{n} ({a})" if a else n for n, a in order],
            customdata=custom,
            colorscale="Viridis",
            reversescale=not higher_is_better(metric),
            zmin=0 if metric in ("sds", "acc") else None,
            zmax=1 if metric in ("sds", "acc") else None,
            colorbar={"title": metric},
            text=[[f"{v:.2f}" if v is not None else "" for v in row] for row in z],
            texttemplate="%{text}" if len(cats) * len(labels) <= 600 else None,
            hovertemplate=(
                "%{y}<br>%{x}<br>" + metric + " %{z:.4f} [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                "<br>items %{customdata[2]}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        title=f"{metric_title(metric)} per category and run",
        yaxis={"autorange": "reversed", "tickfont": {"size": 10}},
        height=max(320, 22 * len(cats) + 140),
        margin={"l": 260, "r": 20, "t": 50, "b": 80},
    )
    return fig


class Entry(NamedTuple):
    caption: str
    # (runs, the report's tables) -> Figure
    draw: Callable[[Sequence[Run], dict], go.Figure]


def catalogue(tables: dict) -> dict[str, Entry]:
    """The page's interactive figures for the metrics of the summary table, in order: development curves per
    metric by ability and by subset, the radar chart (SDS), a heatmap per metric."""
    metrics = metrics_of(tables["summary"])
    out: dict[str, Entry] = {}
    for m in metrics:
        for level in ("ability", "subset"):
            out[f"development_{m}_{level}"] = Entry(
                f"Development: {metric_title(m)} by {level}",
                lambda runs, t, m=m, level=level: development(runs, t, m, level),
            )
    out["radar_sds"] = Entry("Per-subset SDS of every run", lambda runs, t: radar(runs, t, "sds"))
    for m in metrics:
        out[f"heatmap_{m}"] = Entry(f"{metric_title(m)} per category", lambda runs, t, m=m: heatmap(runs, t, m))
    return out


# The PNG figures (figures.FIGURES) the page shows interactively; the others are embedded as images.
COVERS = ("radar_sds", "development", "heatmap_sds")


def draw_all(runs: Sequence[Run], tables: dict) -> tuple[dict[str, tuple[str, go.Figure]], dict[str, str]]:
    """({name: (caption, figure)}, {name: reason skipped})."""
    drawn, skipped = {}, {}
    for name, entry in catalogue(tables).items():
        try:
            drawn[name] = (entry.caption, entry.draw(runs, tables))
        except FigureSkipped as exc:
            skipped[name] = str(exc)
    return drawn, skipped
