"""Figures of a report (matplotlib, no pyplot: figures are plain `Figure` objects drawn with the Agg canvas, so
nothing touches the caller's backend or global state).

Every function returns a `Figure`, or raises `FigureSkipped(reason)` when the labels it needs are absent
(no sizes, no strategies, a single run...): a figure is never drawn from made-up values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from radar_tasks import taxonomy
from radar_tasks.analysis.runs import Run, format_number, progress, series_of
from radar_tasks.analysis.tables import display_name, lookup, summary_metrics

ABILITY_COLORS = {taxonomy.PERCEPTION: "tab:blue", taxonomy.REASONING: "tab:red", "overall": "tab:gray"}
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


class FigureSkipped(Exception):
    """The figure cannot be drawn honestly from the runs given (the message says why)."""


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _cell(summary, run: str, level: str, name: str, metric: str) -> tuple[float, float, float, float]:
    c = lookup(summary, run, level, name, metric)
    if c is None:
        return (math.nan,) * 4
    return c["value"], c["ci_low"], c["ci_high"], c["chance"]


def _subsets(summary) -> list[str]:
    return sorted({r["name"] for r in summary if r["level"] == "subset"}, key=taxonomy.subset_order)


def _log_if_wide(ax, xs: Sequence[float], axis: str = "x") -> None:
    pos = [x for x in xs if _finite(x) and x > 0]
    if len(pos) >= 2 and max(pos) / min(pos) >= 50:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _count_axis(ax, xs: Sequence[float], field: str) -> None:
    """Large counts on the x axis (tokens, steps) as 2M / 1.5B instead of an offset exponent; run order in whole
    numbers (no "1.2nd run" ticks)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    if field in ("tokens", "step") and any(_finite(x) and abs(x) >= 1e4 for x in xs):
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_number(v)))
    if field == "order":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _radial_range(values: Sequence[float]) -> tuple[float, float]:
    """A radial range around the plotted values (scores and chance), in steps of 0.1 within 0..1: values near
    0.3 are not squeezed into the middle of a 0..1 disc."""
    known = [v for v in values if _finite(v)] or [0.0, 1.0]
    low = max(0.0, math.floor((min(known) - 0.05) * 10) / 10)
    high = min(1.0, math.ceil((max(known) + 0.05) * 10) / 10)
    return (low, high) if high - low >= 0.2 else (max(0.0, high - 0.2), max(high, 0.2))


def radar_chart(runs: Sequence[Run], summary: list[dict], metric: str = "sds") -> Figure:
    """Spider chart of the per-subset score of every run (dashed grey: chance, when per-item logs give it)."""
    subsets = _subsets(summary)
    if len(subsets) < 3:
        raise FigureSkipped(
            f"a radar chart needs at least 3 subsets; the runs hold {len(subsets)} ({', '.join(subsets) or 'none'})"
        )
    angles = np.linspace(0, 2 * np.pi, len(subsets), endpoint=False).tolist()
    fig = Figure(figsize=(8, 6.5), dpi=110)
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_offset(np.pi / 2)  # the first subset at the top, the others clockwise
    ax.set_theta_direction(-1)
    closed = angles + angles[:1]
    shown = [(i, r, [_cell(summary, r.label, "subset", s, metric)[0] for s in subsets]) for i, r in enumerate(runs)]
    shown = [(i, r, vals) for i, r, vals in shown if any(_finite(v) for v in vals)]
    chance = [_cell(summary, runs[0].label, "subset", s, metric)[3] for s in subsets] if runs else []
    chance = chance if chance and all(_finite(c) for c in chance) else []
    # one range for the whole chart, so a missing score sits at its centre whatever run it belongs to
    low, high = _radial_range([v for _, _, vals in shown for v in vals] + chance)
    for i, r, vals in shown:
        vals = [v if _finite(v) else low for v in vals]
        ax.plot(closed, vals + vals[:1], marker=MARKERS[i % len(MARKERS)], linewidth=1.4, label=r.label)
        ax.fill(closed, vals + vals[:1], alpha=0.06)
    if chance:
        ax.plot(closed, chance + chance[:1], color="grey", linestyle="--", linewidth=1, label="chance (1/K)")
    ax.set_ylim(low, high)
    ax.set_rlabel_position(180 / len(subsets))  # radial ticks between the first two spokes, off the labels
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xticks(angles)
    ax.set_xticklabels(subsets, fontsize=8)
    ax.tick_params(axis="x", pad=6)
    ax.set_xlabel("M3-Bench subset", labelpad=14)
    # the radial axis' name beside the disc, under the legend, clear of the subset names around it
    ax.set_ylabel(
        f"radius: {metric.upper()}\n({low:.1f} at the centre)", fontsize=8, rotation=0, ha="left", va="bottom"
    )
    ax.yaxis.set_label_coords(1.14, 0.0)
    ax.set_title(f"Per-subset {metric.upper()} by run", pad=22)
    ax.legend(loc="upper left", bbox_to_anchor=(1.12, 1.05), fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.7, bottom=0.12)
    return fig


def development_curves(runs: Sequence[Run], summary: list[dict], takeoff: Sequence[dict] = ()) -> Figure:
    """SDS and acc (and any other metric of the summary: bpb, ...) of perception and reasoning against training
    progress: one row of panels per series, one panel per metric.

    Bands: bootstrap 95% intervals from per-item logs when present, else ±1.96 results-JSON stderr.
    Dotted lines: chance (mean 1/K), when the per-item logs give it. Dashed (perception) and dash-dotted
    (reasoning) vertical lines: the takeoff of each ability (`takeoff.takeoff` rows), where it has one.
    """
    groups = {k: v for k, v in series_of(runs).items() if len(v) >= 2}
    if not groups:
        raise FigureSkipped("development curves need a series of at least 2 runs (checkpoints)")
    metrics = summary_metrics(summary)
    takeoff_x = {
        (t["series"], t["name"], t["metric"]): t["takeoff_x"]
        for t in takeoff
        if t["level"] == "ability" and t["status"] == "takeoff"
    }
    fig = Figure(figsize=(5.5 * len(metrics), 1.0 + 3.6 * len(groups)), dpi=110)
    axes = np.atleast_2d(fig.subplots(len(groups), len(metrics), squeeze=False))
    methods = set()
    for row, (series, members) in zip(axes, groups.items()):
        xs, field_name, xlabel = progress(members)
        for ax, metric in zip(row, metrics):
            for ability in taxonomy.ABILITIES:
                cells = [_cell(summary, r.label, "ability", ability, metric) for r in members]
                vals = np.array([c[0] for c in cells])
                if not np.any(np.isfinite(vals)):
                    continue
                lo, hi = np.array([c[1] for c in cells]), np.array([c[2] for c in cells])
                ax.plot(xs, vals, color=ABILITY_COLORS[ability], marker="o", label=ability)
                if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
                    ax.fill_between(xs, lo, hi, color=ABILITY_COLORS[ability], alpha=0.18, linewidth=0)
                ch = [c[3] for c in cells]
                if all(_finite(c) for c in ch):
                    ax.plot(
                        xs, ch, color=ABILITY_COLORS[ability], linestyle=":", linewidth=1, label=f"chance, {ability}"
                    )
                for r in members:
                    c = lookup(summary, r.label, "ability", ability, metric)
                    if c:
                        methods.add(c["ci_method"])
                x_takeoff = takeoff_x.get((series, ability, metric))
                if _finite(x_takeoff):
                    ax.axvline(  # two styles: the abilities' lines stay apart where they take off together
                        x_takeoff,
                        color=ABILITY_COLORS[ability],
                        linestyle="--" if ability == taxonomy.PERCEPTION else "-.",
                        linewidth=1.2,
                        label=f"takeoff, {ability}",
                    )
            _log_if_wide(ax, xs)
            _count_axis(ax, xs, field_name)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(display_name(metric))
            what = display_name(metric)
            what = what[0].upper() + what[1:]
            ax.set_title(f"{what} by ability over training" + (f" ({series})" if len(groups) > 1 else ""), fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    band = (
        "bootstrap 95% CI"
        if methods == {"bootstrap"}
        else "±1.96 stderr"
        if methods == {"1.96*stderr"}
        else "95% CI: bootstrap with per-item logs, else ±1.96 stderr"
    )
    fig.suptitle(f"Development curves (bands: {band})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def scaling(runs: Sequence[Run], summary: list[dict], metric: str = "sds") -> Figure:
    """Ability scores against model size (the last run of each series), one line per strategy."""
    finals = [members[-1] for members in series_of(runs).values()]
    sized = [r for r in finals if r.size is not None]
    if len({r.size for r in sized}) < 2:
        raise FigureSkipped("scaling needs runs labelled with at least 2 different sizes (--sizes / manifest `size`)")
    fig = Figure(figsize=(6.5, 4.5), dpi=110)
    ax = fig.add_subplot()
    strategies = sorted({r.strategy or "" for r in sized})
    for si, strat in enumerate(strategies):
        members = sorted([r for r in sized if (r.strategy or "") == strat], key=lambda r: r.size)
        xs = [r.size for r in members]
        for ability in taxonomy.ABILITIES:
            cells = [_cell(summary, r.label, "ability", ability, metric) for r in members]
            vals = np.array([c[0] for c in cells])
            if not np.any(np.isfinite(vals)):
                continue
            err = np.array([[v - c[1] for v, c in zip(vals, cells)], [c[2] - v for v, c in zip(vals, cells)]])
            name = ability + (f" ({strat})" if strat else "")
            ax.errorbar(
                xs,
                vals,
                yerr=np.where(np.isfinite(err), err, 0),
                color=ABILITY_COLORS[ability],
                linestyle=LINESTYLES[si % len(LINESTYLES)],
                marker=MARKERS[si % len(MARKERS)],
                capsize=3,
                label=name,
            )
    ax.set_xscale("log")
    ticks = sorted({r.size for r in sized})
    ax.minorticks_off()
    ax.set_xticks(ticks)
    ax.set_xticklabels([format_number(t) for t in ticks])
    ax.set_xlabel("model size (parameters)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric.upper()} by ability and model size (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def strategy_comparison(runs: Sequence[Run], summary: list[dict], asym_rows: list[dict], metric: str = "sds") -> Figure:
    """Perception and reasoning scores (and the asymmetry gap) of the last run of each labelled series."""
    finals = [members[-1] for members in series_of(runs).values()]
    labelled = [r for r in finals if r.strategy]
    if len({r.strategy for r in labelled}) < 2:
        raise FigureSkipped(
            "a strategy comparison needs runs labelled with at least 2 different strategies "
            "(--strategies / manifest `strategy`)"
        )
    labelled.sort(key=lambda r: (r.strategy, r.size or 0))
    fig = Figure(figsize=(10, 4.5), dpi=110)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(labelled))
    width = 0.38
    with_chance = False
    for j, ability in enumerate(taxonomy.ABILITIES):
        cells = [_cell(summary, r.label, "ability", ability, metric) for r in labelled]
        vals = np.array([c[0] for c in cells])
        err = np.array([[v - c[1] for v, c in zip(vals, cells)], [c[2] - v for v, c in zip(vals, cells)]])
        ax.bar(
            x + (j - 0.5) * width,
            np.nan_to_num(vals),
            width,
            yerr=np.where(np.isfinite(err), err, 0),
            color=ABILITY_COLORS[ability],
            capsize=3,
            label=ability,
        )
        ch = [c[3] for c in cells]
        if all(_finite(c) for c in ch):
            with_chance = True
            for xi, c in zip(x, ch):
                ax.hlines(c, xi + (j - 1) * width, xi + j * width, colors="black", linestyles=":", linewidth=1)
    names = [r.series for r in labelled]
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_xlabel("pretraining strategy (last run of each series)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{metric.upper()} by strategy (95% CI{'; dotted: chance' if with_chance else ''})")
    ax.legend(fontsize=8)
    gaps = {a["run"]: a for a in asym_rows}
    use_raw = not all(_finite(gaps.get(r.label, {}).get("gap")) for r in labelled)
    key = "gap_raw" if use_raw else "gap"
    ax2.bar(x, [gaps.get(r.label, {}).get(key, math.nan) for r in labelled], color="tab:purple")
    ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set_xticks(x)
    ax2.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax2.set_xlabel("pretraining strategy")
    ax2.set_ylabel("perception - reasoning" + (" (raw)" if use_raw else " (above chance)"))
    ax2.set_title("Asymmetry gap" + (" (chance unknown)" if use_raw else ""))
    fig.tight_layout()
    return fig


def _runs_shown(runs: Sequence[Run], limit: int = 6) -> str:
    labels = [r.label for r in runs]
    if len(labels) <= limit:
        return ", ".join(labels)
    return f"{', '.join(labels[: limit - 1])}, ... {labels[-1]} ({len(labels)} runs)"


def sds_vs_accuracy(runs: Sequence[Run], summary: list[dict]) -> Figure:
    """Per-subset SDS against accuracy, one colour per subset, one marker per run; crosses: each subset's chance
    (mean 1/K, where per-item logs give it)."""
    subsets = _subsets(summary)
    if not subsets:
        raise FigureSkipped("no M3-Bench subset in the runs")
    fig = Figure(figsize=(6.5, 5.8), dpi=110)
    ax = fig.add_subplot()
    cmap = __import__("matplotlib").colormaps["tab10"]
    xs_all, ys_all = [], []
    chance_shown = False
    for si, s in enumerate(subsets):
        for ri, r in enumerate(runs):
            a = _cell(summary, r.label, "subset", s, "acc")[0]
            d = _cell(summary, r.label, "subset", s, "sds")[0]
            if _finite(a) and _finite(d):
                ax.scatter(
                    [a],
                    [d],
                    color=cmap(si % 10),
                    marker=MARKERS[ri % len(MARKERS)],
                    s=30,
                    label=s if ri == 0 else None,
                    alpha=0.8,
                )
                xs_all.append(a)
                ys_all.append(d)
        chance_acc = next(
            (c for c in (_cell(summary, r.label, "subset", s, "acc")[3] for r in runs) if _finite(c)), None
        )
        chance_sds = next(
            (c for c in (_cell(summary, r.label, "subset", s, "sds")[3] for r in runs) if _finite(c)), None
        )
        if chance_acc is not None and chance_sds is not None:
            ax.scatter([chance_acc], [chance_sds], color=cmap(si % 10), marker="x", s=45, linewidths=1.2)
            chance_shown = True
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("accuracy")
    ax.set_ylabel("SDS")
    corr = ""
    if len(xs_all) >= 3 and np.std(xs_all) > 0 and np.std(ys_all) > 0:
        corr = f" (Pearson r = {np.corrcoef(xs_all, ys_all)[0, 1]:.2f})"
    ax.set_title(f"SDS vs accuracy per subset and run{corr}\nruns: {_runs_shown(runs)}", fontsize=9)
    first = ax.legend(fontsize=7, title="subset", title_fontsize=7, loc="upper left")
    from matplotlib.lines import Line2D

    handles = (
        [
            Line2D([], [], color="grey", marker=MARKERS[i % len(MARKERS)], linestyle="", label=r.label)
            for i, r in enumerate(runs)
        ]
        if len(runs) > 1
        else []
    )
    if chance_shown:
        handles.append(Line2D([], [], color="grey", marker="x", linestyle="", label="chance (1/K)"))
    if handles:
        ax.legend(
            handles=handles, fontsize=7, title="run" if len(runs) > 1 else None, title_fontsize=7, loc="lower right"
        )
        ax.add_artist(first)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _category_order(summary, metric: str) -> list[tuple[str, str | None]]:
    """(category row name, ability) in subset order, each subset's perception categories before its reasoning
    ones (MMBench is split by ability), then by name."""
    rows = {}
    for r in summary:
        if r["level"] == "category" and r["metric"] == metric:
            rows.setdefault(r["name"], (r.get("subset") or r["name"].split("/")[0], r.get("ability")))
    ability_rank = {a: i for i, a in enumerate(taxonomy.ABILITIES)}
    ordered = sorted(rows, key=lambda n: (taxonomy.subset_order(rows[n][0]), ability_rank.get(rows[n][1], 9), n))
    return [(n, rows[n][1]) for n in ordered]


def category_heatmap(runs: Sequence[Run], summary: list[dict], metric: str = "sds") -> Figure:
    """Score of every category (rows) in every run (columns); rows grouped by subset and, within MMBench, by
    ability (row labels coloured by ability, a line between groups)."""
    order = _category_order(summary, metric)
    if not order:
        raise FigureSkipped("no M3-Bench category in the runs")
    cats = [n for n, _ in order]
    grid = np.array([[_cell(summary, r.label, "category", c, metric)[0] for r in runs] for c in cats])
    fig = Figure(figsize=(max(5.5, 1.1 * len(runs) + 4.0), max(3.0, 0.28 * len(cats) + 1.8)), dpi=110)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(runs)))
    ax.set_xticklabels([r.label for r in runs], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(cats)))
    ax.set_yticklabels(cats, fontsize=7)
    for label, (_, ability) in zip(ax.get_yticklabels(), order):
        label.set_color(ABILITY_COLORS.get(ability, "black"))
    groups = [(n.split("/")[0], a) for n, a in order]
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="white", linewidth=1.5)
    if grid.size <= 600:
        for (i, j), v in np.ndenumerate(grid):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < 0.5 else "black")
    ax.set_xlabel("run")
    ax.set_ylabel("category (subset/category), by subset and ability")
    ax.set_title(f"{metric.upper()} per category\n(labels: blue perception, red reasoning)", fontsize=10)
    fig.colorbar(im, ax=ax, label=metric.upper())
    fig.tight_layout()
    return fig


def asymmetry_curve(runs: Sequence[Run], asym_rows: list[dict]) -> Figure:
    """The asymmetry gap of each run against training progress, one line per series."""
    groups = {k: v for k, v in series_of(runs).items() if len(v) >= 2}
    if not groups:
        raise FigureSkipped("an asymmetry curve needs a series of at least 2 runs")
    gaps = {a["run"]: a for a in asym_rows}
    use_raw = not all(_finite(gaps.get(r.label, {}).get("gap")) for m in groups.values() for r in m)
    key = "gap_raw" if use_raw else "gap"
    fig = Figure(figsize=(6.5, 4.5), dpi=110)
    ax = fig.add_subplot()
    all_x, fields = [], set()
    for si, (series, members) in enumerate(groups.items()):
        xs, field_name, xlabel = progress(members)
        all_x += xs
        fields.add(field_name)
        ax.plot(
            xs,
            [gaps[r.label][key] for r in members],
            marker=MARKERS[si % len(MARKERS)],
            linestyle=LINESTYLES[si % len(LINESTYLES)],
            label=series,
        )
    _log_if_wide(ax, all_x)
    if len(fields) == 1:
        _count_axis(ax, all_x, fields.pop())
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel if len(groups) == 1 else "training progress")
    ax.set_ylabel("gap: perception - reasoning" + (" (raw SDS)" if use_raw else " (SDS above chance)"))
    ax.set_title("Perception/reasoning asymmetry over training" + (" (chance unknown)" if use_raw else ""))
    ax.legend(fontsize=8, title="series", title_fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def visual_gain(runs: Sequence[Run], gain_rows: Sequence[dict], metric: str = "sds") -> Figure:
    """What the images contribute (`paired.visual_gain` rows): per subset at the last checkpoint of each series
    (bars with their paired 95% CI), and, for a series of two checkpoints or more, the gain of each ability over
    training (bands: the CI)."""
    rows = [r for r in gain_rows if r["metric"] == metric]
    if not rows:
        raise FigureSkipped(
            "no visual gain: it needs a run with images and a run without them (images=none|blank) of the same "
            "checkpoint, both with per-item logs (radar-tasks sweep --ablate-images --log_samples)"
        )
    pairs = list(dict.fromkeys((r["run"], r["ablated"], r["images"], r["series"]) for r in rows))
    curves = {}
    for run, ablated, images, series in pairs:
        curves.setdefault((series, images), []).append((run, ablated))
    over_training = {k: v for k, v in curves.items() if len(v) >= 2}
    fig = Figure(figsize=(11 if over_training else 6.5, 4.8), dpi=110)
    axes = fig.subplots(1, 2 if over_training else 1, squeeze=False)[0]
    ax = axes[0]
    shown = [(series, images, members[-1]) for (series, images), members in curves.items()]
    width = 0.8 / len(shown)
    subsets = sorted({r["name"] for r in rows if r["level"] == "subset"}, key=taxonomy.subset_order)
    x = np.arange(len(subsets))
    for i, (_series, images, (run, ablated)) in enumerate(shown):
        cells = {r["name"]: r for r in rows if r["run"] == run and r["ablated"] == ablated and r["level"] == "subset"}
        gains = np.array([cells[s]["gain"] if s in cells else math.nan for s in subsets])
        lo = np.array([cells[s]["ci_low"] if s in cells else math.nan for s in subsets])
        hi = np.array([cells[s]["ci_high"] if s in cells else math.nan for s in subsets])
        err = np.array([gains - lo, hi - gains])
        # a subset of one ability in its colour; MMBench (both abilities) or an unknown subset in grey
        colors = [
            ABILITY_COLORS.get(getattr(taxonomy.SUBSETS_BY_NAME.get(s), "ability", None), "tab:gray") for s in subsets
        ]
        ax.bar(
            x + (i - (len(shown) - 1) / 2) * width,
            np.nan_to_num(gains),
            width,
            yerr=np.where(np.isfinite(err), err, 0),
            color=colors,
            edgecolor="black",
            linewidth=0.5,
            hatch=None if images == "none" else "//",
            capsize=3,
            label=f"{run} (images={images})",
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(subsets, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("M3-Bench subset (blue: perception, red: reasoning, grey: both)")
    name = display_name(metric)
    ax.set_ylabel(f"{name} with images - {name} without (95% CI)")
    ax.set_title(f"Visual gain per subset ({name})", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    if over_training:
        ax2 = axes[1]
        fields = set()
        for si, ((series, _images), members) in enumerate(over_training.items()):
            for ability in taxonomy.ABILITIES:
                cells = [
                    next((r for r in rows if r["run"] == run and r["ablated"] == ab and r["name"] == ability), None)
                    for run, ab in members
                ]
                cells = [c for c in cells if c is not None]
                if not cells:
                    continue
                xs = [c["x_value"] for c in cells]
                fields.add(cells[0]["x"])
                gains = [c["gain"] for c in cells]
                ax2.plot(
                    xs,
                    gains,
                    color=ABILITY_COLORS[ability],
                    linestyle=LINESTYLES[si % len(LINESTYLES)],
                    marker=MARKERS[si % len(MARKERS)],
                    label=f"{ability}, {series}" if len(over_training) > 1 else ability,
                )
                lo, hi = [c["ci_low"] for c in cells], [c["ci_high"] for c in cells]
                if all(_finite(v) for v in lo + hi):
                    ax2.fill_between(xs, lo, hi, color=ABILITY_COLORS[ability], alpha=0.15, linewidth=0)
        ax2.axhline(0, color="black", linewidth=0.8)
        field = fields.pop() if len(fields) == 1 else ""
        ax2.set_xlabel({"tokens": "tokens seen", "step": "training step"}.get(field, "training progress"))
        if field:
            _count_axis(ax2, [c["x_value"] for c in rows], field)
        ax2.set_ylabel(f"visual gain ({name})")
        ax2.set_title("Visual gain by ability over training (bands: 95% CI)", fontsize=10)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


class Entry(NamedTuple):
    caption: str  # the report's heading of the figure
    # (runs, the report's tables: `report.analyse`'s results, summary, asymmetry, steps, signal, notes) -> Figure
    draw: Callable[[Sequence[Run], dict], Figure]


# Every figure of the report, in order; `figures/<name>.png`. A new figure is a function above and a line here:
# the report draws, saves, captions and lists it from this entry alone.
FIGURES: dict[str, Entry] = {
    "radar_sds": Entry(
        "Per-subset SDS of every run (dashed: chance 1/K)",
        lambda runs, tables: radar_chart(runs, tables["summary"], "sds"),
    ),
    "development": Entry(
        "Development curves: perception vs reasoning, SDS and accuracy (and BPB where the runs report it) against "
        "training progress; dashed: takeoff",
        lambda runs, tables: development_curves(runs, tables["summary"], tables.get("takeoff", ())),
    ),
    "scaling": Entry("Scaling with model size", lambda runs, tables: scaling(runs, tables["summary"])),
    "strategies": Entry(
        "Pretraining strategies compared",
        lambda runs, tables: strategy_comparison(runs, tables["summary"], tables["asymmetry"]),
    ),
    "sds_vs_acc": Entry(
        "SDS against accuracy, per subset and run", lambda runs, tables: sds_vs_accuracy(runs, tables["summary"])
    ),
    "heatmap_sds": Entry(
        "SDS per category and run", lambda runs, tables: category_heatmap(runs, tables["summary"], "sds")
    ),
    "asymmetry": Entry("Asymmetry gap over training", lambda runs, tables: asymmetry_curve(runs, tables["asymmetry"])),
    "visual_gain": Entry(
        "What the images contribute: SDS with images - SDS without them, same checkpoint, same items",
        lambda runs, tables: visual_gain(runs, tables.get("visual_gain", ())),
    ),
}


def describe(fig: Figure) -> list[dict]:
    """Title and axis labels of every axes of a figure (what the tests and the report check)."""
    out = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        out.append(
            {
                "title": ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else ""),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
            }
        )
    return out
