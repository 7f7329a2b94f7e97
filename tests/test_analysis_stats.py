"""Statistics of the analysis (radar_tasks.analysis.stats, tables) against hand-computed values."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from radar_tasks import taxonomy
from radar_tasks.analysis import stats, tables
from radar_tasks.analysis.runs import Run, RunError, format_number, parse_number, progress, series_of
from radar_tasks.metrics import sds

# ---------------------------------------------------------------------------------------------------------------
# Kendall tau


def test_kendall_tau_by_hand():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant (the 2<->3 swap) -> (5 - 1) / 6
    assert stats.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert stats.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert stats.kendall_tau([10, 20, 30], [0.1, 0.5, 0.9]) == pytest.approx(1.0)


def test_kendall_tau_b_with_ties_by_hand():
    # x = 1,2,3; y = 1,1,2: pair (1,2) tied in y; (1,3) and (2,3) concordant -> S = 2;
    # pairs untied in x = 3, in y = 2 -> tau_b = 2 / sqrt(3 * 2)
    assert stats.kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    # ties on both sides: x = 1,1,2,2; y = 1,2,1,2 -> S = 0
    assert stats.kendall_tau([1, 1, 2, 2], [1, 2, 1, 2]) == pytest.approx(0.0)


def test_kendall_tau_degenerate():
    assert math.isnan(stats.kendall_tau([1], [1]))
    assert math.isnan(stats.kendall_tau([1, 2, 3], [5, 5, 5]))  # constant score: undefined
    assert stats.kendall_tau([1, 2, float("nan"), 4], [1, 2, 9, 3]) == pytest.approx(1.0)  # NaN pair dropped
    with pytest.raises(ValueError):
        stats.kendall_tau([1, 2], [1, 2, 3])


def test_kendall_tau_exact_permutation_pvalue():
    # n = 4, perfectly ordered: of the 24 orderings only the identity (tau = 1) and its reverse (tau = -1)
    # reach |tau| >= 1 -> p = 2 / 24
    assert stats.kendall_tau_pvalue([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(2 / 24)
    # n = 3, tau = 1/3 ((1,3,2) order): |tau| >= 1/3 for every ordering -> p = 1
    assert stats.kendall_tau_pvalue([1, 2, 3], [1, 3, 2]) == pytest.approx(1.0)


def _enumerated_pvalue(x, y) -> float:
    """The permutation p-value by its definition, independently of the code under test: the share of all n!
    orderings of y whose tau-b (scipy.stats.kendalltau, one ordering at a time) is at least as far from 0 as
    the observed one (1e-12: ties between tau values that differ only in rounding)."""
    observed = abs(scipy.stats.kendalltau(x, y).statistic)
    taus = [
        abs(scipy.stats.kendalltau(x, [y[i] for i in order]).statistic)
        for order in itertools.permutations(range(len(y)))
    ]
    return sum(t >= observed - 1e-12 for t in taus) / len(taus)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]),  # no ties
        ([1, 2, 3, 4, 5, 6], [1, 1, 2, 3, 3, 2]),  # ties in y
        ([0, 0, 1, 1, 2, 2], [0.3, 0.1, 0.2, 0.5, 0.4, 0.6]),  # ties in x (several runs at one step)
        ([1, 1, 2, 2, 3, 3], [1, 2, 1, 2, 2, 2]),  # ties in both
        ([3, 1, 4, 1, 5, 9, 2], [2, 7, 1, 8, 2, 8, 1]),  # n = 7, ties in both, unsorted
    ],
)
def test_kendall_tau_exact_pvalue_with_ties_by_enumeration(x, y):
    assert stats.kendall_tau_pvalue(x, y) == pytest.approx(_enumerated_pvalue(x, y), abs=1e-12)


def test_kendall_tau_pvalue_drops_what_tau_drops():
    # the NaN and inf pairs left out: n = 4, perfectly ordered -> 2 / 24 (as above)
    assert stats.kendall_tau_pvalue([1, 2, math.nan, 3, 4], [1, 2, 0, 3, 4]) == pytest.approx(2 / 24)
    assert stats.kendall_tau_pvalue([1, 2, 3, 4, 5], [1, 2, math.inf, 3, 4]) == pytest.approx(2 / 24)
    assert math.isnan(stats.kendall_tau_pvalue([1, 2, 3], [5, 5, 5]))
    assert math.isnan(stats.kendall_tau_pvalue([1], [1]))


def test_kendall_tau_monte_carlo_pvalue():
    # n = 10 (beyond exact enumeration), no ties: the exact p-value is scipy's exact null distribution of tau
    # (kendalltau method="exact"); 10000 random orderings estimate it with a standard error below 0.005, so
    # 0.02 is four standard errors.
    x = list(range(10))
    y = [0, 2, 1, 4, 3, 6, 9, 5, 8, 7]
    exact = scipy.stats.kendalltau(x, y, method="exact").pvalue
    p = stats.kendall_tau_pvalue(x, y)
    assert p == pytest.approx(exact, abs=0.02)
    assert stats.kendall_tau_pvalue(x, y) == p  # seeded: reproducible
    # the observed ordering counts as one of the draws: never 0. Perfectly ordered, 100 draws: almost surely no
    # draw reaches |tau| = 1 (2 of 10! orderings), so p = (0 + 1) / (100 + 1)
    assert stats.kendall_tau_pvalue(x, x, iters=100) == pytest.approx(1 / 101)


# ---------------------------------------------------------------------------------------------------------------
# Balanced means and bootstrap


def test_balanced_mean_by_hand():
    parts = {("mmbench", "a"): 0.2, ("mmbench", "b"): 0.4, ("wiki_animal", "wiki_animal"): 0.9}
    assert sds.balanced(parts) == pytest.approx((0.3 + 0.9) / 2)
    # NaN categories (no scored item) are left out, as in the results JSON
    assert sds.balanced({**parts, ("mmbench", "c"): float("nan")}) == pytest.approx(0.6)
    # element-wise over replicate arrays
    reps = sds.balanced({("s", "a"): np.array([0.0, 1.0]), ("t", "t"): np.array([1.0, 1.0])})
    assert reps.tolist() == pytest.approx([0.5, 1.0])


def test_balanced_stderr_by_hand():
    se = sds.balanced_stderr({("a", "1"): 0.3, ("a", "2"): 0.4, ("b", "b"): 0.1})
    # subset a: sqrt(0.09 + 0.16) / 2 = 0.25; b: 0.1; total sqrt(0.25^2 + 0.1^2) / 2
    assert se == pytest.approx(math.sqrt(0.0625 + 0.01) / 2)


def test_bootstrap_ci_matches_normal_theory():
    x = [0.0, 1.0] * 50  # mean 0.5, population sd 0.5 -> se of the mean 0.05
    out = stats.bootstrap_ci(x, iters=4000, seed=1)
    assert out["mean"] == pytest.approx(0.5)
    assert out["se"] == pytest.approx(0.05, rel=0.1)
    assert out["ci_low"] < 0.5 < out["ci_high"]
    assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * 1.96 * 0.05, rel=0.15)
    # seeded: the same call gives the same interval
    assert stats.bootstrap_ci(x, iters=500, seed=3) == stats.bootstrap_ci(x, iters=500, seed=3)


def test_paired_bootstrap_uses_the_pairing():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.9, size=40)  # large spread between items
    a, b = base + 0.01, base
    reps = stats.paired_bootstrap({("s", "c"): a - b}, iters=500, seed=0)[("s", "c")]
    lo, hi = stats.percentile_ci(reps)
    # every item improves by exactly 0.01: paired resampling gives exactly 0.01 whatever the draw,
    # while an unpaired bootstrap of the two means would spread over +-0.14
    assert lo == pytest.approx(0.01) and hi == pytest.approx(0.01)
    assert stats.two_sided_p(reps) == 0.0


def test_paired_bootstrap_no_difference_and_p_value():
    d = np.array([0.2, -0.2] * 20)
    reps = stats.paired_bootstrap({"x": d}, iters=2000, seed=0)["x"]
    lo, hi = stats.percentile_ci(reps)
    assert lo < 0 < hi
    assert stats.two_sided_p(reps) > 0.5
    # by hand: replicates (-1, 1, 2, 3) -> P(<= 0) = 1/4, P(>= 0) = 3/4 -> p = 2 * 1/4
    assert stats.two_sided_p(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(0.5)


def test_percentile_ci_by_hand():
    lo, hi = stats.percentile_ci(np.arange(101, dtype=float), level=0.9)
    assert (lo, hi) == pytest.approx((5.0, 95.0))
    assert all(math.isnan(v) for v in stats.percentile_ci(np.array([np.nan])))


# ---------------------------------------------------------------------------------------------------------------
# Asymmetry and signal measures


def test_asymmetry_gap_by_hand():
    # (0.60 - 0.25) - (0.40 - 0.30) = 0.35 - 0.10
    assert stats.asymmetry_gap(0.60, 0.25, 0.40, 0.30) == pytest.approx(0.25)
    assert math.isnan(stats.asymmetry_gap(0.6, float("nan"), 0.4, 0.3))


def test_rates_by_hand():
    r = stats.rates((100, 0.50, 0.40), (200, 0.70, 0.50))
    assert r["delta_perception"] == pytest.approx(0.2) and r["delta_reasoning"] == pytest.approx(0.1)
    assert r["rate_perception"] == pytest.approx(0.002) and r["rate_reasoning"] == pytest.approx(0.001)
    assert r["rate_ratio"] == pytest.approx(2.0)
    flat = stats.rates((1, 0.5, 0.4), (2, 0.6, 0.4))
    assert math.isnan(flat["rate_ratio"])  # reasoning did not move
    assert math.isnan(stats.rates((1, 0.5, 0.4), (1, 0.6, 0.5))["rate_perception"])  # x did not advance


def test_spread_over_stderr_by_hand():
    # std(0.3, 0.4, 0.5; ddof=1) = 0.1; mean stderr 0.05 -> 2
    assert stats.spread_over_stderr([0.3, 0.4, 0.5], [0.04, 0.05, 0.06]) == pytest.approx(2.0)
    assert math.isnan(stats.spread_over_stderr([0.3], [0.05]))
    assert stats.z_above(0.5, 0.25, 0.05) == pytest.approx(5.0)
    assert math.isnan(stats.z_above(0.5, float("nan"), 0.05))
    # every item alike (acc 1.0 on all items): a zero stderr is certainty, not "unknown"
    assert stats.z_above(1.0, 0.25, 0.0) == math.inf
    assert stats.z_above(0.0, 0.25, 0.0) == -math.inf
    assert math.isnan(stats.z_above(0.25, 0.25, 0.0))


# ---------------------------------------------------------------------------------------------------------------
# Series tables from summary rows (in-memory runs: no files are read)


def _run(label, order, **labels):
    return Run(
        results_path=Path(f"/nowhere/{label}_results.json"),
        data={"results": {}},
        order=order,
        labels={"label": label, **labels},
    )


def _rows(run, values: dict, chance=0.25, se=0.02):
    rows = []
    for (level, name), v in values.items():
        for m in ("sds", "acc"):
            rows.append(
                {
                    "run": run,
                    "level": level,
                    "name": name,
                    "metric": m,
                    "value": v,
                    "stderr": se,
                    "ci_low": v - 0.04,
                    "ci_high": v + 0.04,
                    "chance": chance,
                    "n": 100,
                    "ci_method": "bootstrap",
                }
            )
    return rows


def test_asymmetry_tables_by_hand():
    runs = [_run("a", 0, step=100), _run("b", 1, step=300)]
    summary = _rows("a", {("ability", "perception"): 0.50, ("ability", "reasoning"): 0.40}) + _rows(
        "b", {("ability", "perception"): 0.70, ("ability", "reasoning"): 0.45}
    )
    per_run, steps = tables.asymmetry(runs, summary)
    assert [r["gap"] for r in per_run] == pytest.approx([(0.50 - 0.25) - (0.40 - 0.25), 0.70 - 0.45])
    assert [r["gap_raw"] for r in per_run] == pytest.approx([0.10, 0.25])
    [s] = steps
    assert (s["from"], s["to"], s["x"]) == ("a", "b", "step")
    assert s["rate_perception"] == pytest.approx(0.2 / 200) and s["rate_reasoning"] == pytest.approx(0.05 / 200)
    assert s["rate_ratio"] == pytest.approx(4.0)
    assert s["delta_gap"] == pytest.approx(0.15)


def test_signal_checks_flag_tasks_without_signal():
    runs = [_run(f"r{i}", i, tokens=f"{i + 1}B") for i in range(4)]
    summary = []
    good = [0.40, 0.50, 0.60, 0.70]  # above chance, monotonic, spread >> noise
    flat = [0.26, 0.25, 0.27, 0.26]  # never > 1.96 se above chance 0.25
    wobbly = [0.60, 0.61, 0.60, 0.61]  # above chance, but spread (0.006) < noise (0.02)
    down = [0.70, 0.60, 0.50, 0.40]  # real signal, decreasing
    for i, r in enumerate(runs):
        summary += _rows(
            r.label,
            {
                ("subset", "good"): good[i],
                ("subset", "flat"): flat[i],
                ("subset", "wobbly"): wobbly[i],
                ("subset", "down"): down[i],
            },
        )
    rows = {s["name"]: s for s in tables.signal_checks(runs, summary) if s["metric"] == "sds"}
    assert rows["good"]["flags"] == "" and not rows["good"]["no_signal"]
    assert rows["good"]["kendall_tau"] == pytest.approx(1.0)
    assert rows["good"]["spread_over_stderr"] == pytest.approx(np.std(good, ddof=1) / 0.02)
    assert rows["good"]["mean_stderr"] == pytest.approx(0.02)
    assert rows["good"]["runs_above_chance"] == 4 and rows["good"]["x"] == "tokens"
    assert rows["flat"]["no_signal"] and "at chance" in rows["flat"]["flags"]
    assert rows["wobbly"]["no_signal"] and "noisy" in rows["wobbly"]["flags"]
    assert not rows["down"]["no_signal"] and rows["down"]["flags"] == "not monotonic"
    assert rows["down"]["kendall_tau"] == pytest.approx(-1.0)


def test_series_grouping_and_progress():
    runs = [
        _run("p2", 0, strategy="projector", step=200),
        _run("f1", 1, strategy="full", step=100),
        _run("p1", 2, strategy="projector", step=100),
    ]
    groups = series_of(runs)
    assert [r.label for r in groups["projector"]] == ["p1", "p2"]  # sorted by step, not by order
    assert progress(groups["projector"])[:2] == ([100.0, 200.0], "step")
    unlabelled = [_run("x", 0), _run("y", 1)]
    assert progress(unlabelled)[1] == "order" and list(series_of(unlabelled)) == ["all"]


def test_parse_and_format_numbers():
    assert parse_number("0.5B") == 5e8 and parse_number("350M") == 3.5e8 and parse_number("2k") == 2000
    assert parse_number("1e9") == 1e9 and parse_number(1000) == 1000.0 and parse_number("1,000") == 1000
    assert parse_number("") is None and parse_number(None) is None
    with pytest.raises(RunError):
        parse_number("many")
    assert format_number(1.5e9) == "1.5B" and format_number(2e6) == "2M" and format_number(120) == "120"


def test_below_chance_is_not_at_chance():
    runs = [_run("r0", 0)]
    summary = _rows("r0", {("subset", "low"): 0.25 - 2.9 * 0.02, ("subset", "flat"): 0.26})
    rows = {s["name"]: s for s in tables.signal_checks(runs, summary) if s["metric"] == "sds"}
    assert rows["low"]["z_last"] == pytest.approx(-2.9) and "below chance" in rows["low"]["flags"]
    assert "at chance" not in rows["low"]["flags"] and rows["low"]["no_signal"]
    assert "at chance" in rows["flat"]["flags"]


def test_partial_runs_are_named():
    full = _run("full", 0)
    limited = Run(
        results_path=Path("/nowhere/lim_results.json"),
        data={"results": {}, "config": {"limit": 4}},
        order=1,
        labels={"label": "lim"},
    )
    subsets = [s.name for s in taxonomy.SUBSETS]
    summary = _rows("full", {("subset", s): 0.5 for s in subsets}) + _rows("lim", {("subset", "wiki_animal"): 0.5})
    assert tables.coverage_label(tables.coverage(full, summary)) == "all of M3-Bench"
    assert tables.coverage_label(tables.coverage(limited, summary)) == "1 of 9 subsets, --limit 4"
    notes = tables.partial_notes([full, limited], summary)
    assert len(notes) == 2 and all(n.startswith("lim ") for n in notes)
    assert "--limit 4" in notes[0] and "missing: mmbench, mmmu_pro" in notes[1]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_figures_read_as_a_reader_needs():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from radar_tasks.analysis import figures

    runs = [_run("ckpt-a", 0), _run("ckpt-b", 1)]
    subsets = [s.name for s in taxonomy.SUBSETS]
    summary = []
    for i, r in enumerate(runs):
        summary += _rows(
            r.label, {("subset", s): 0.28 + 0.01 * j + 0.02 * i for j, s in enumerate(subsets)}, chance=0.3
        )
    cats = [
        ("mmbench", "ocr", "perception"),
        ("mmbench", "function_reasoning", "reasoning"),
        ("mmbench", "action_recognition", "perception"),
        ("wiki_animal", "wiki_animal", "perception"),
    ]
    for r in runs:
        for subset, cat, ability in cats:
            name = f"{subset}/{cat}" if subset != cat else subset
            summary += [
                {**row, "subset": subset, "ability": ability} for row in _rows(r.label, {("category", name): 0.3})
            ]
    radar = figures.radar_chart(runs, summary)
    ax = radar.axes[0]
    low, high = ax.get_ylim()
    assert 0.1 <= low <= 0.25 and 0.45 <= high <= 0.6  # values 0.28..0.38 and chance 0.3 fill the disc
    FigureCanvasAgg(radar).draw()
    renderer = radar.canvas.get_renderer()
    label = ax.yaxis.label.get_window_extent(renderer)
    assert not any(_overlaps(label, t.get_window_extent(renderer)) for t in ax.get_xticklabels())
    assert label.x1 <= radar.bbox.x1 and label.x0 >= 0  # inside the figure, not cut off
    heat = figures.category_heatmap(runs, summary)
    rows = [t.get_text() for t in heat.axes[0].get_yticklabels()]
    assert rows == ["mmbench/action_recognition", "mmbench/ocr", "mmbench/function_reasoning", "wiki_animal"]
    colours = [t.get_color() for t in heat.axes[0].get_yticklabels()]
    assert (
        colours[:2] == [figures.ABILITY_COLORS["perception"]] * 2 and colours[2] == figures.ABILITY_COLORS["reasoning"]
    )
    scatter = figures.sds_vs_accuracy(runs, summary)
    title = scatter.axes[0].get_title()
    assert "ckpt-a" in title and "ckpt-b" in title
    legend_texts = [
        t.get_text()
        for legend in scatter.axes[0].findobj(__import__("matplotlib").legend.Legend)
        for t in legend.get_texts()
    ]
    assert "chance (1/K)" in legend_texts


def test_a_missing_score_sits_at_the_centre_of_the_radar_chart():
    import math as _math

    from radar_tasks.analysis import figures

    runs = [_run("ckpt-a", 0), _run("ckpt-b", 1)]
    subsets = [s.name for s in taxonomy.SUBSETS]
    # ckpt-a lacks its first subset; ckpt-b, plotted after it, lowers the chart's range
    summary = _rows("ckpt-a", {("subset", s): 0.6 for s in subsets[1:]})
    summary += _rows("ckpt-a", {("subset", subsets[0]): _math.nan})
    summary += _rows("ckpt-b", {("subset", s): 0.2 for s in subsets})
    ax = figures.radar_chart(runs, summary).axes[0]
    low = ax.get_ylim()[0]
    first = ax.get_lines()[0]  # ckpt-a's line: its point at the first spoke
    assert low < 0.5 and first.get_ydata()[0] == low
