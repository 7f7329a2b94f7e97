"""`radar-tasks compare RUN_A RUN_B`: paired bootstrap of the score difference A - B on the same items.

Items are matched by (task, id) from the per-item logs; an item logged by one run only is counted and left out.
SDS, BPB and Brier use the items both runs scored (an item skipped or unscorable in either is left out, and
counted; BPB also needs both runs' summed NLL, radar_hf's); acc uses every matched item (skipped = wrong); any other
mean metric of the catalogue the items where both records hold its field. Differences are resampled within each
category (the same draw for A and B, since the per-item differences are resampled); a subset's difference is the
unweighted mean over its categories, an ability's and the overall difference the unweighted mean over subsets, as
in the results JSON. `better` names the run whose score is better where the interval excludes 0: the higher one for
SDS and acc, the lower one for BPB and Brier (the metric catalogue's `higher_is_better`).
"""

from __future__ import annotations

import math

import numpy as np

from radar_tasks import taxonomy
from radar_tasks.analysis import stats
from radar_tasks.analysis.runs import Run, RunError
from radar_tasks.analysis.tables import higher_is_better, item_field, levels_of, select_keys
from radar_tasks.metrics import sds

COLUMNS = ("level", "name", "metric", "a", "b", "diff", "ci_low", "ci_high", "p_value", "better", "n_items")
METRICS = ("sds", "acc", "bpb", "brier")  # what `compare` compares unless told


def _item_key(rec: dict) -> tuple[str, str]:
    return (rec["task"], str(rec["id"]))


def _is_m3(rec: dict) -> bool:
    """An M3-Bench item record (other tasks using the SDS metric log records without subset/category)."""
    return (
        bool(rec.get("subset"))
        and bool(rec.get("category"))
        and (rec.get("ability") in taxonomy.ABILITIES or rec["subset"] in taxonomy.SUBSETS_BY_NAME)
    )


def better(diff_low: float, diff_high: float, metric: str) -> str:
    """ "A" or "B": the better run where the interval of A - B excludes 0 (for a metric where lower is better, the
    run with the lower score), else ""."""
    if not (diff_low > 0 or diff_high < 0):  # also NaN bounds
        return ""
    a_higher = diff_low > 0
    return "A" if a_higher == higher_is_better(metric) else "B"


def compare_runs(
    run_a: Run, run_b: Run, iters: int = 2000, seed: int = 0, level_ci: float = 0.95, metrics=METRICS
) -> dict:
    """Paired comparison of two runs. Returns {'rows': [...], 'counts': {...}, 'a': label, 'b': label}."""
    for r in (run_a, run_b):
        if not r.has_logs:
            raise RunError(
                f"{r.results_path}: no per-item logs (*_samples_*.jsonl): rerun lmms-eval with "
                f"--log_samples to compare on matched items"
            )
    items_a = {_item_key(r): r for r in run_a.items() if _is_m3(r)}
    items_b = {_item_key(r): r for r in run_b.items() if _is_m3(r)}
    if not items_a or not items_b:
        raise RunError(
            "no M3-Bench item records in the per-item logs of "
            + " and ".join(str(r.results_path) for r, it in ((run_a, items_a), (run_b, items_b)) if not it)
        )
    common = sorted(set(items_a) & set(items_b))
    counts = {
        "items_a": len(items_a),
        "items_b": len(items_b),
        "matched": len(common),
        "only_a": len(set(items_a) - set(items_b)),
        "only_b": len(set(items_b) - set(items_a)),
        "unscored_in_one": 0,
        "unscored_in_both": 0,
    }
    diffs: dict[str, dict] = {m: {} for m in metrics}
    vals_a: dict[str, dict] = {m: {} for m in metrics}
    vals_b: dict[str, dict] = {m: {} for m in metrics}
    ability_of: dict[tuple[str, str], str] = {}
    fields = {m: item_field(m) for m in metrics}
    for key in common:
        ra, rb = items_a[key], items_b[key]
        stratum = (ra["subset"], ra["category"])
        ability_of[stratum] = ra.get("ability") or taxonomy.ability_of(*stratum)
        pa, pb = ra.get("p"), rb.get("p")
        if (pa is None) != (pb is None):
            counts["unscored_in_one"] += 1
        elif pa is None:
            counts["unscored_in_both"] += 1
        for m in metrics:  # `p` is None for an item not scored (out of SDS); `correct` is False for it (acc: wrong)
            a, b = ra.get(fields[m]), rb.get(fields[m])
            if a is None or b is None:
                continue
            a, b = float(a), float(b)
            vals_a[m].setdefault(stratum, []).append(a)
            vals_b[m].setdefault(stratum, []).append(b)
            diffs[m].setdefault(stratum, []).append(a - b)
    keys = sorted(ability_of, key=lambda k: (taxonomy.subset_order(k[0]), k))
    rows = []
    for m_i, m in enumerate(metrics):
        reps = stats.paired_bootstrap(diffs[m], iters=iters, seed=seed + m_i)
        for level, name, display in levels_of(keys, ability_of):
            sel = [k for k in select_keys(keys, level, name, ability_of) if k in diffs[m]]
            if not sel:
                continue
            r = sds.balanced({k: reps[k] for k in sel})
            lo, hi = stats.percentile_ci(r, level_ci)
            rows.append(
                {
                    "level": level,
                    "name": display,
                    "metric": m,
                    "a": sds.balanced({k: float(np.mean(vals_a[m][k])) for k in sel}),
                    "b": sds.balanced({k: float(np.mean(vals_b[m][k])) for k in sel}),
                    "diff": sds.balanced({k: float(np.mean(diffs[m][k])) for k in sel}),
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_value": stats.two_sided_p(r),
                    "better": better(lo, hi, m),
                    "n_items": sum(len(diffs[m][k]) for k in sel),
                }
            )
    return {
        "a": run_a.label,
        "b": run_b.label,
        "a_path": str(run_a.results_path),
        "b_path": str(run_b.results_path),
        "rows": rows,
        "counts": counts,
        "iters": iters,
        "seed": seed,
        "level_ci": level_ci,
    }


def format_table(result: dict, levels=("subset", "ability", "overall")) -> str:
    """A plain-text table of a `compare_runs` result (categories left out unless asked)."""
    head = ("level", "name", "metric", "A", "B", "A-B", f"{result['level_ci']:.0%} CI", "p", "better", "items")
    lines = [head]
    for r in result["rows"]:
        if r["level"] not in levels:
            continue
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if math.isfinite(r["ci_low"]) else "-"
        lines.append(
            (
                r["level"],
                r["name"],
                r["metric"],
                f"{r['a']:.4f}",
                f"{r['b']:.4f}",
                f"{r['diff']:+.4f}",
                ci,
                f"{r['p_value']:.3f}" if math.isfinite(r["p_value"]) else "-",
                r["better"] or "-",
                str(r["n_items"]),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    c = result["counts"]
    text.insert(
        0,
        f"A = {result['a']} ({result.get('a_path', '')})\nB = {result['b']} ({result.get('b_path', '')})\n"
        f"items: {c['matched']} matched by (task, id); {c['only_a']} only in A, {c['only_b']} only in B "
        f"(left out); {c['unscored_in_one']} scored in one run only (left out of SDS, BPB, Brier); "
        f"paired bootstrap, {result['iters']} resamples, seed {result['seed']}; better: the run with the higher "
        "SDS/acc, the lower BPB/Brier, where the interval excludes 0\n",
    )
    return "\n".join(text)
