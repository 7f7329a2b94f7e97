"""Tables of runs: the tidy results-JSON table, the M3-Bench score hierarchy with bootstrap intervals and chance
levels, the perception/reasoning asymmetry, and the signal checks of a series of runs.

Hierarchy (as the results JSON): a category's score is the mean over its items (SDS: scored items; acc: all items,
skipped ones counted wrong); a subset's score is the unweighted mean over its categories; an ability's score
(and the overall score) is the unweighted mean over subsets, a subset contributing the mean of its categories of
that ability (MMBench has categories of both abilities). The subset/ability mapping is `radar_tasks.taxonomy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from radar_tasks import taxonomy
from radar_tasks.analysis import stats
from radar_tasks.analysis.runs import Run, progress, series_of
from radar_tasks.metrics import catalogue, sds
from radar_tasks.results import SCORED_ONLY, ability_split

METRICS = ("sds", "acc")  # in every summary; the catalogue's other mean metrics (bpb, ...) where runs report them
SIGNAL_Z = stats.Z95  # "above chance": more than 1.96 standard errors above
SIGNAL_MIN_SPREAD = 1.0  # "noisy": the spread across the series is smaller than the mean stderr
MONOTONIC_MIN_RUNS = 3  # Kendall tau is judged from 3 runs on
METRIC_NAMES = {"sds": "SDS", "acc": "accuracy", "brier": "Brier"}  # display names; any other: its name in capitals


def mean_metrics() -> list[str]:
    """The catalogue's metrics that average items (sds, acc, and any added since: bpb, ...), in catalogue order;
    read at call time."""
    return [m.name for m in catalogue.METRICS if m.aggregation is catalogue.MEAN]


def item_field(metric: str) -> str:
    """The field of the per-item record a mean metric averages (`p` for sds, `correct` for acc, ...)."""
    return catalogue.by_name(metric).value


def higher_is_better(metric: str) -> bool:
    """The catalogue's direction of a metric (lower is better for bpb); True for a metric it does not know."""
    try:
        return catalogue.by_name(metric).higher_is_better
    except KeyError:
        return True


def display_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.upper())


def item_values(records: list[dict], metric: str) -> np.ndarray:
    """The values a leaf's mean of `metric` is over: each record's field where it has one (`p` is None for an item
    not scored, which SDS leaves out; `correct` is False for it: acc counts it wrong)."""
    field_name = item_field(metric)
    return np.array([float(r[field_name]) for r in records if r.get(field_name) is not None], dtype=np.float64)


def _inverse_k(record: dict) -> float:
    return 1.0 / record["n_candidates"] if record.get("n_candidates") else math.nan


# The chance level of the metrics that have one, per leaf from its item records (mean 1/K over the items the metric
# averages; acc counts an unscored item wrong, so its chance is 0). The other metrics (bpb, ...) have none.
CHANCE = {
    "sds": lambda records: (
        float(np.mean([_inverse_k(r) for r in records if r.get("p") is not None]))
        if any(r.get("p") is not None for r in records)
        else math.nan
    ),
    "acc": lambda records: (
        float(np.mean([0.0 if r.get("p") is None else _inverse_k(r) for r in records])) if records else math.nan
    ),
}


def summary_metrics(summary: list[dict]) -> list[str]:
    """The metrics of summary rows, in catalogue order (sds, acc, then the others present)."""
    present = {r["metric"] for r in summary}
    return [m for m in mean_metrics() if m in present] + sorted(present - set(mean_metrics()))


def _float(value: float | None) -> float:
    """A number of the results JSON as a float; NaN for none (absent, or lmms-eval's 'N/A' stderr)."""
    return math.nan if value is None else float(value)


@dataclass
class Leaf:
    """One category leaf task of a run: the results-JSON numbers and, with logs, its items."""

    task: str
    subset: str
    category: str
    ability: str
    values: dict = field(default_factory=dict)  # metric -> value from the results JSON
    stderrs: dict = field(default_factory=dict)
    samples: int | None = None
    skipped: int | None = None
    items: list = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.subset, self.category)


def leaf_info(task: str, config: dict | None = None) -> tuple[str, str, str] | None:
    """(subset, category, ability) of a leaf task: from the taxonomy, else from the task config's metadata."""
    leaf = taxonomy.leaf_of(task)
    if leaf is not None:
        s, c = leaf
        return s, c, taxonomy.ability_of(s, c)
    meta = (config or {}).get("metadata") or {}
    if meta.get("subset") and meta.get("category") and meta.get("ability") in taxonomy.ABILITIES:
        return str(meta["subset"]), str(meta["category"]), str(meta["ability"])
    return None


def leaves(run: Run) -> dict[str, Leaf]:
    """The M3-Bench category leaves of a run (results JSON), with their item records when logs exist."""
    out: dict[str, Leaf] = {}
    for task, entry in run.results.entries.items():
        info = leaf_info(task, run.results.configs.get(task))
        if info is None or not entry.has("sds"):
            continue
        s, c, a = info
        leaf = Leaf(task, s, c, a, samples=entry.count(), skipped=entry.skipped)
        for m in mean_metrics():
            if m in METRICS or entry.has(m):
                leaf.values[m] = _float(entry.value(m))
                leaf.stderrs[m] = _float(entry.stderr(m))
        out[task] = leaf
    if run.has_logs:
        for rec in run.items():
            if rec["task"] in out:
                out[rec["task"]].items.append(rec)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Tidy results JSON


def tidy_results(run: Run) -> list[dict]:
    """One row per (task or group) x score of the results JSON (any metric: `results.Entry.scores`), with its
    stderr and n.

    n: the item count (`items`, else `samples`) for whole-task metrics (sds counts scored items: minus `skipped`),
    `items_<ability>` for the ability-split metrics (`results.Entry.n`). Item counts are the n of the rows, not
    rows of their own.
    """
    rows = []
    for task, entry in sorted(run.results.entries.items()):
        info = leaf_info(task, run.results.configs.get(task))
        kind = "leaf" if info else "group" if run.results.is_group(task) else "task"
        for metric, filt in entry.scores():
            value = entry.value(metric, filt)
            if value is None:
                continue
            ability = ability_split(metric)
            rows.append(
                {
                    "run": run.label,
                    "task": task,
                    "kind": kind,
                    "subset": info[0] if info else "",
                    "category": info[1] if info else "",
                    "ability": ability or (info[2] if info else ""),
                    "metric": metric,
                    "filter": filt,
                    "value": float(value),
                    "stderr": _float(entry.stderr(metric, filt)),
                    "n": entry.n(metric, filt),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Score hierarchy


def select_keys(keys, level: str, name: str, ability_of: dict) -> list:
    if level == "category":
        return [k for k in keys if k == name]
    if level == "subset":
        return [k for k in keys if k[0] == name]
    if level == "ability":
        return [k for k in keys if ability_of[k] == name]
    return list(keys)


def levels_of(keys, ability_of: dict) -> list[tuple[str, object, str]]:
    """(level, key, display name) of every level present, in a stable order."""
    out = [("category", k, f"{k[0]}/{k[1]}" if k[0] != k[1] else k[0]) for k in keys]
    subsets = sorted({k[0] for k in keys}, key=taxonomy.subset_order)
    out += [("subset", s, s) for s in subsets]
    out += [("ability", a, a) for a in taxonomy.ABILITIES if any(ability_of[k] == a for k in keys)]
    out.append(("overall", "overall", "overall"))
    return out


def summarize(run: Run, iters: int = 1000, seed: int = 0, level_ci: float = 0.95) -> tuple[list[dict], list[str]]:
    """Per level (category, subset, ability, overall) and metric (sds, acc, and every other mean metric of the
    catalogue the leaves report: bpb, ...): value, stderr, CI, n, chance.

    Values are those of the results JSON (leaves) combined by the balanced means. With per-item logs: the stderr
    and the CI come from a stratified bootstrap (items resampled within each category, `iters` replicates) and
    `chance` is the mean of 1/K over the same items (SDS: scored items; acc: all items, a skipped item's chance
    is 0 since it counts as wrong; `CHANCE`: metrics such as bpb have none, NaN). Without logs: stderr from the
    results JSON (balanced), CI = ±1.96 stderr, chance unknown (NaN). Returns (rows, notes); notes tell where logs
    and the results JSON disagree.
    """
    lv = leaves(run)
    notes: list[str] = []
    by_key: dict[tuple[str, str], Leaf] = {}
    for leaf in lv.values():
        by_key[leaf.key] = leaf
    keys = sorted(by_key, key=lambda k: (taxonomy.subset_order(k[0]), k))
    ability_of = {k: by_key[k].ability for k in keys}
    use_logs = run.has_logs and all(by_key[k].items for k in keys)
    if run.has_logs and not use_logs:
        missing = [by_key[k].task for k in keys if not by_key[k].items]
        notes.append(
            f"{run.label}: no per-item log for {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}: intervals from the results JSON stderrs"
        )
    metrics = [m for m in mean_metrics() if any(m in by_key[k].values for k in keys)]
    rng = np.random.default_rng(seed)
    # sds and acc draw from `rng` as they always did; every other metric from a stream of its own (its intervals
    # leave theirs unchanged)
    rng_of = {m: rng if m in CHANCE else np.random.default_rng([seed, i]) for i, m in enumerate(metrics)}
    reps: dict[str, dict] = {m: {} for m in metrics}
    chance: dict[str, dict] = {m: {} for m in metrics}
    counts: dict[str, dict] = {m: {} for m in metrics}
    for k in keys:
        leaf = by_key[k]
        if use_logs:
            for m in metrics:
                x = item_values(leaf.items, m)
                chance[m][k] = CHANCE[m](leaf.items) if m in CHANCE else math.nan
                reps[m][k] = sds.bootstrap_means(x, iters, rng_of[m])
                counts[m][k] = int(x.size)
                own = float(x.mean()) if x.size else math.nan
                if m not in leaf.values:
                    continue
                if not (math.isnan(own) and math.isnan(leaf.values[m])) and abs(own - leaf.values[m]) > 1e-6:
                    notes.append(
                        f"{run.label}: {leaf.task} {m}: per-item logs give {own:.6f}, results JSON "
                        f"{leaf.values[m]:.6f} (logs of another run?)"
                    )
        else:
            n_all = leaf.samples if isinstance(leaf.samples, int) else None
            sk = leaf.skipped
            for m in metrics:  # an item count of the results JSON: every item, less the skipped ones for SDS & co
                scored_only = m in SCORED_ONLY and n_all is not None and isinstance(sk, (int, float))
                counts[m][k] = n_all - int(sk) if scored_only else n_all
                chance[m][k] = math.nan
    rows = []
    for level, name, display in levels_of(keys, ability_of):
        sel = select_keys(keys, level, name, ability_of)
        for m in metrics:
            value = sds.balanced({k: by_key[k].values.get(m, math.nan) for k in sel})
            if use_logs:
                r = sds.balanced({k: reps[m][k] for k in sel})
                se = stats.replicate_se(r)
                lo, hi = stats.percentile_ci(r, level_ci)
                ch = sds.balanced({k: chance[m][k] for k in sel})
            else:
                se = sds.balanced_stderr({k: by_key[k].stderrs.get(m, math.nan) for k in sel})
                lo, hi = (value - stats.Z95 * se, value + stats.Z95 * se) if math.isfinite(se) else (math.nan, math.nan)
                ch = math.nan
            ns = [counts[m][k] for k in sel]
            rows.append(
                {
                    "run": run.label,
                    "level": level,
                    "name": display,
                    "subset": name[0] if level == "category" else (name if level == "subset" else ""),
                    "category": name[1] if level == "category" else "",
                    "ability": (ability_of[name] if level == "category" else name if level == "ability" else ""),
                    "metric": m,
                    "value": value,
                    "stderr": se,
                    "ci_low": lo,
                    "ci_high": hi,
                    "ci_method": "bootstrap" if use_logs else "1.96*stderr",
                    "n": sum(ns) if all(isinstance(n, int) for n in ns) else None,
                    "chance": ch,
                }
            )
    return rows, notes


# Groups of the results JSON and the summary level they must equal: (group, metric suffix) -> (level, name).
GROUP_LEVELS = {
    ("radar_mmm", ""): ("overall", "overall"),
    **{("radar_mmm", f"_{a}"): ("ability", a) for a in taxonomy.ABILITIES},
    **{(f"radar_{a}", ""): ("ability", a) for a in taxonomy.ABILITIES},
    ("radar_mmbench", ""): ("subset", "mmbench"),
    ("radar_mmmu_pro", ""): ("subset", "mmmu_pro"),
}


def check_groups(run: Run, rows: list[dict]) -> list[str]:
    """Notes where a group score of the results JSON differs from the same level recomputed from its leaves."""
    notes = []
    entries = run.results.entries
    for (group, suffix), (level, name) in GROUP_LEVELS.items():
        entry = entries.get(group)
        if entry is None:
            continue
        for m in summary_metrics(rows):
            value = _float(entry.value(m + suffix))
            cell = lookup(rows, run.label, level, name, m)
            if math.isnan(value) or cell is None:
                continue
            if abs(value - cell["value"]) > 1e-6:
                notes.append(
                    f"{run.label}: {group} {m}{suffix} = {value:.6f} in the results JSON, but its leaves "
                    f"give {cell['value']:.6f} ({level} {name})"
                )
    return notes


def coverage_notes(runs: list[Run], summary: list[dict]) -> list[str]:
    """Notes where runs score different categories or different numbers of items (not comparable as they are)."""
    cats: dict[str, dict] = {}
    for r in summary:
        if r["level"] == "category" and r["metric"] == "acc":
            cats.setdefault(r["run"], {})[r["name"]] = r["n"]
    if len(cats) < 2:
        return []
    notes = []
    every = set().union(*[set(v) for v in cats.values()])
    for run in runs:
        missing = sorted(every - set(cats.get(run.label, {})))
        if missing:
            notes.append(
                f"{run.label} lacks {len(missing)} categor{'y' if len(missing) == 1 else 'ies'} that "
                f"other runs score ({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}): its "
                f"subset/ability/overall scores average over fewer categories"
            )
    differ = sorted(c for c in every if len({v.get(c) for v in cats.values() if c in v}) > 1)
    if differ:
        notes.append(
            f"runs score different numbers of items in {len(differ)} categor"
            f"{'y' if len(differ) == 1 else 'ies'} ({', '.join(differ[:4])}{' ...' if len(differ) > 4 else ''}"
            f"; --limit?)"
        )
    return notes


def coverage(run: Run, summary: list[dict]) -> dict:
    """How much of M3-Bench a run scored: lmms-eval's `--limit` (None: every item) and the subsets it lacks."""
    limit = run.results.limit
    present = {r["name"] for r in summary if r["run"] == run.label and r["level"] == "subset"}
    missing = [s.name for s in taxonomy.SUBSETS if s.name not in present]
    return {"limit": limit, "missing": missing, "present": len(present)}


def coverage_label(cov: dict) -> str:
    parts = []
    if cov["missing"]:
        parts.append(f"{cov['present']} of {len(taxonomy.SUBSETS)} subsets")
    if cov["limit"] is not None:
        parts.append(
            f"--limit {cov['limit']:g}" if isinstance(cov["limit"], (int, float)) else f"--limit {cov['limit']}"
        )
    return ", ".join(parts) or "all of M3-Bench"


def partial_notes(runs: list[Run], summary: list[dict]) -> list[str]:
    """What the report must say of runs that did not score all of M3-Bench."""
    notes = []
    for run in runs:
        cov = coverage(run, summary)
        if cov["limit"] is not None:
            notes.append(
                f"{run.label} ran with --limit {cov['limit']}: only the first items of each category were "
                "scored, so its scores are not M3-Bench scores (lmms-eval: for testing only)"
            )
        if cov["missing"]:
            notes.append(
                f"{run.label} scored {cov['present']} of {len(taxonomy.SUBSETS)} subsets (missing: "
                f"{', '.join(cov['missing'])}): its overall and ability scores average the subsets present"
            )
    return notes


_INDEX: dict[int, tuple[int, dict]] = {}


def lookup(rows: list[dict], run: str, level: str, name: str, metric: str) -> dict | None:
    """The summary row of (run, level, name, metric), or None (indexed once per rows list)."""
    cached = _INDEX.get(id(rows))
    if cached is None or cached[0] != len(rows) or (rows and cached[1].get("__first__") is not rows[0]):
        index = {(r["run"], r["level"], r["name"], r["metric"]): r for r in rows}
        index["__first__"] = rows[0] if rows else None
        if len(_INDEX) > 64:
            _INDEX.clear()
        _INDEX[id(rows)] = cached = (len(rows), index)
    return cached[1].get((run, level, name, metric))


# ---------------------------------------------------------------------------------------------------------------
# Asymmetry


ASYMMETRY_DOC = """\
Asymmetry (per run, from the summary rows; metric SDS unless said otherwise):
  gap = (SDS_perception - chance_perception) - (SDS_reasoning - chance_reasoning)
where SDS_a is the ability score (unweighted mean over subsets of the unweighted mean over their categories of
ability a, as in the results JSON) and chance_a is the same balanced mean of each category's mean of 1/K over
its scored items (K = number of candidates scored for the item, `n_candidates` in the per-item logs). Positive gap:
perception stands further above chance than reasoning. Without per-item logs chance is unknown and only
gap_raw = SDS_perception - SDS_reasoning is reported.
Between consecutive runs of a series (ordered by tokens, else steps, else run order):
  rate_a = (SDS_a(t+1) - SDS_a(t)) / (x(t+1) - x(t)),  rate_ratio = rate_perception / rate_reasoning
(= delta_perception / delta_reasoning; chance cancels when both runs score the same items). rate_ratio > 1:
perception improved faster; < 0: the abilities moved in opposite directions; NaN when reasoning did not move.
delta_gap = gap(t+1) - gap(t) is reported with it."""


def asymmetry(runs: list[Run], summary: list[dict], metric: str = "sds") -> tuple[list[dict], list[dict]]:
    """(per-run rows, consecutive-checkpoint rows) of the asymmetry measures defined in ASYMMETRY_DOC."""
    per_run = []
    for r in runs:
        p = lookup(summary, r.label, "ability", taxonomy.PERCEPTION, metric)
        q = lookup(summary, r.label, "ability", taxonomy.REASONING, metric)
        vals = {
            "run": r.label,
            "series": r.series,
            "metric": metric,
            "perception": p["value"] if p else math.nan,
            "chance_perception": p["chance"] if p else math.nan,
            "reasoning": q["value"] if q else math.nan,
            "chance_reasoning": q["chance"] if q else math.nan,
        }
        vals["gap_raw"] = vals["perception"] - vals["reasoning"]
        vals["gap"] = stats.asymmetry_gap(
            vals["perception"], vals["chance_perception"], vals["reasoning"], vals["chance_reasoning"]
        )
        per_run.append(vals)
    by_label = {v["run"]: v for v in per_run}
    steps = []
    for series, members in series_of(runs).items():
        xs, field_name, _ = progress(members)
        for (x0, a), (x1, b) in zip(zip(xs, members), list(zip(xs, members))[1:]):
            va, vb = by_label[a.label], by_label[b.label]
            rt = stats.rates((x0, va["perception"], va["reasoning"]), (x1, vb["perception"], vb["reasoning"]))
            steps.append(
                {
                    "series": series,
                    "metric": metric,
                    "from": a.label,
                    "to": b.label,
                    "x": field_name,
                    "x_from": x0,
                    "x_to": x1,
                    **rt,
                    "delta_gap": vb["gap"] - va["gap"],
                    "delta_gap_raw": vb["gap_raw"] - va["gap_raw"],
                }
            )
    return per_run, steps


# ---------------------------------------------------------------------------------------------------------------
# Signal checks


SIGNAL_DOC = f"""\
Signal checks (per series of runs, per subset, ability and overall, for every metric; above chance: SDS and acc):
  above chance: a run is above chance when z = (score - chance) / stderr > 1.96, where chance = the balanced
    mean over the task's categories of the per-item mean of 1/K (K = n_candidates; unknown without per-item
    logs) and stderr = the bootstrap stderr; the report gives z of the last run and the count of runs above.
  monotonic: Kendall tau-b between training progress (tokens, else steps, else run order) and the score,
    with an exact permutation p-value (n <= 8); judged from {MONOTONIC_MIN_RUNS} runs on (tau <= 0: not monotonic;
    tau >= 0 for a metric where lower is better, such as bpb).
  mean stderr: mean over the series of the score's bootstrap stderr (per-item logs; else the results-JSON stderr).
  spread / stderr: standard deviation (ddof=1) of the score across the series / that mean stderr (not the
    published signal-to-noise ratio below: that one compares series, and its noise is across checkpoints).
A task is flagged `no signal` when it is not above chance in any run of the series (`below chance` when a run
is more than 1.96 standard errors below it, else `at chance`), or when its spread / stderr is below
{SIGNAL_MIN_SPREAD:g} (the checkpoints differ less than the noise of one evaluation); `not monotonic` is a separate
warning."""


def series_cells(runs: list[Run], summary: list[dict], levels):
    """Per series, (level, name) of `levels` and summary metric, the summary cell of each of the series' runs:
    (series, members, xs, x field name, level, name, metric, cells), leaving out a combination no run has."""
    names = list(dict.fromkeys((r["level"], r["name"]) for r in summary if r["level"] in levels))
    for series, members in series_of(runs).items():
        xs, field_name, _ = progress(members)
        for level, name in names:
            for metric in summary_metrics(summary):
                cells = [lookup(summary, r.label, level, name, metric) for r in members]
                if any(c is not None for c in cells):
                    yield series, members, xs, field_name, level, name, metric, cells


def signal_checks(
    runs: list[Run], summary: list[dict], levels=("subset", "ability", "overall", "category")
) -> list[dict]:
    rows = []
    for series, members, xs, field_name, level, name, m, cells in series_cells(runs, summary, levels):
        vals = [c["value"] if c else math.nan for c in cells]
        ses = [c["stderr"] if c else math.nan for c in cells]
        chs = [c["chance"] if c else math.nan for c in cells]
        zs = [stats.z_above(v, ch, se) for v, ch, se in zip(vals, chs, ses)]
        known = [z for z in zs if not math.isnan(z)]
        tau = stats.kendall_tau(xs, vals) if len(members) >= 2 else math.nan
        p_tau = stats.kendall_tau_pvalue(xs, vals) if len(members) >= 2 else math.nan
        spread = stats.spread_over_stderr(vals, ses)
        flags = []
        if known and not any(z > SIGNAL_Z for z in known):
            flags.append("below chance" if min(known) < -SIGNAL_Z else "at chance")
        if math.isfinite(spread) and spread < SIGNAL_MIN_SPREAD:
            flags.append("noisy")
        no_signal = bool(flags)
        improving = tau if higher_is_better(m) else -tau
        if len(members) >= MONOTONIC_MIN_RUNS and math.isfinite(tau) and improving <= 0:
            flags.append("not monotonic")
        rows.append(
            {
                "series": series,
                "level": level,
                "name": name,
                "metric": m,
                "runs": len(members),
                "x": field_name,
                "first": vals[0],
                "last": vals[-1],
                "chance": chs[-1],
                "z_last": zs[-1],
                "runs_above_chance": sum(z > SIGNAL_Z for z in known) if known else None,
                "kendall_tau": tau,
                "tau_p": p_tau,
                "mean_stderr": float(np.nanmean(ses)) if any(math.isfinite(s) for s in ses) else math.nan,
                "spread_over_stderr": spread,
                "no_signal": no_signal,
                "flags": ", ".join(flags),
            }
        )
    return rows
