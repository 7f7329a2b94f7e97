"""Paired comparisons inside a report, with the `compare` machinery (`compare.compare_runs`: items matched by (task,
id), differences resampled within categories, balanced over categories and subsets as every score):

* visual gain: a run with its images against the same checkpoint's run without them (`images=none|blank`);
* consecutive checkpoints: each step of a series against the checkpoint before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from radar_tasks.analysis.compare import compare_runs
from radar_tasks.analysis.runs import Run, RunError, progress, series_of

LEVELS = ("subset", "ability", "overall")  # category rows stay out of the report's paired tables
# radar_hf settings two runs of a visual-gain pair must share (else the difference is not the images' alone)
SCORING = ("model_type", "prompt_style", "score", "protocol", "dtype")

VISUAL_GAIN_DOC = """\
Visual gain (MMStar's multi-modal gain: Chen et al., 2024, "Are We on the Right Way for Evaluating Large
Vision-Language Models?"), per checkpoint, subset, ability and overall, per metric:
  gain = score(images kept) - score(images=none, or blank)
on the items both runs scored (matched by task and id), each score balanced over categories and subsets as every
score here; 95% CI: paired bootstrap (the per-item differences resampled within each category, the same draw for
both runs), as `radar-tasks compare`. A pair: two runs of the same checkpoint (radar_hf's `pretrained`, and the
same step label when both have one) that differ in the `images` model arg only (model type, prompt style, score,
protocol and dtype alike), both with per-item logs. For a metric where lower is better (bpb) images help when the
gain is negative. `none`: the question without its images (language priors alone); `blank`: mid-grey images of
the same sizes (the same visual tokens, no content)."""

CONSECUTIVE_DOC = """\
Consecutive checkpoints (per series, ability and overall, per metric): delta = score(checkpoint t) -
score(checkpoint t-1) on the items both scored, with the paired bootstrap 95% CI of `radar-tasks compare`; `*`:
the interval excludes 0 (the step changed the score by more than the noise of the items)."""


def excludes_zero(row: dict) -> bool:
    return bool(row["ci_low"] > 0 or row["ci_high"] < 0)


def image_pairs(runs: Sequence[Run]) -> tuple[list[tuple[Run, Run]], list[str]]:
    """(run with images, the same checkpoint's run without them) for every run with `images` other than keep, and
    notes on those that have no partner (or several: the last in run order is taken)."""
    kept = [r for r in runs if r.images == "keep"]
    pairs, notes = [], []
    for ablated in (r for r in runs if r.images != "keep"):
        same = [
            k
            for k in kept
            if ablated.checkpoint is not None
            and k.checkpoint == ablated.checkpoint
            and (k.step is None or ablated.step is None or k.step == ablated.step)
        ]
        if not same:
            notes.append(
                f"{ablated.label} (images={ablated.images}): no run of its checkpoint with images "
                f"({ablated.checkpoint or 'not recorded'}): no visual gain"
            )
            continue
        with_images = same[-1]
        if len(same) > 1:
            notes.append(
                f"{ablated.label}: {len(same)} runs of its checkpoint with images; its visual gain is against "
                f"the last, {with_images.label}"
            )
        mine, theirs = ablated.results.model_settings, with_images.results.model_settings
        differ = [s for s in SCORING if mine.get(s) != theirs.get(s)]
        if differ:
            notes.append(
                f"{ablated.label} and {with_images.label} were scored differently ({', '.join(differ)}): no visual gain"
            )
            continue
        if not (ablated.has_logs and with_images.has_logs):
            notes.append(f"{ablated.label}: the visual gain needs the per-item logs of both runs (--log_samples)")
            continue
        pairs.append((with_images, ablated))
    return pairs, notes


def _x_of(runs: Sequence[Run]) -> dict[str, tuple[float, str]]:
    """Run label -> (its training progress within its series, the progress field)."""
    out = {}
    for members in series_of(runs).values():
        xs, field_name, _ = progress(members)
        out.update({r.label: (x, field_name) for r, x in zip(members, xs)})
    return out


def _paired(a: Run, b: Run, metrics: Sequence[str], iters: int, seed: int) -> list[dict]:
    """compare_runs(a, b)'s rows at the report's levels ([] when the logs hold no common M3-Bench item)."""
    try:
        result = compare_runs(a, b, iters=iters, seed=seed, metrics=tuple(metrics))
    except RunError:
        return []
    return [r for r in result["rows"] if r["level"] in LEVELS]


def visual_gain(runs: Sequence[Run], metrics: Sequence[str], iters: int = 1000, seed: int = 0):
    """(rows, notes): per image pair (`image_pairs`), level, name and metric: the scores with and without the
    images, the gain and its paired bootstrap CI (VISUAL_GAIN_DOC)."""
    pairs, notes = image_pairs(runs)
    x_of = _x_of(runs)
    rows = []
    for with_images, ablated in pairs:
        x, field_name = x_of.get(with_images.label, (math.nan, ""))
        for r in _paired(with_images, ablated, metrics, iters, seed):
            rows.append(
                {
                    "run": with_images.label,
                    "ablated": ablated.label,
                    "images": ablated.images,
                    "series": with_images.series,
                    "x": field_name,
                    "x_value": x,
                    **_where(r),
                    "with_images": r["a"],
                    "without": r["b"],
                    "gain": r["diff"],
                    **_interval(r),
                }
            )
    return rows, notes


def _where(r: dict) -> dict:
    """The level, name and metric of a paired comparison's row."""
    return {"level": r["level"], "name": r["name"], "metric": r["metric"]}


def _interval(r: dict) -> dict:
    """Its confidence interval, p-value, item count and whether the interval leaves zero out."""
    return {**{k: r[k] for k in ("ci_low", "ci_high", "p_value", "n_items")}, "excludes_zero": excludes_zero(r)}


def consecutive(runs: Sequence[Run], metrics: Sequence[str], iters: int = 1000, seed: int = 0):
    """(rows, notes): per series, step (t-1 -> t), level, name and metric: the change and its paired bootstrap CI
    over the items both checkpoints scored (CONSECUTIVE_DOC)."""
    rows, notes = [], []
    for series, members in series_of(runs).items():
        if len(members) < 2:
            continue
        if not all(m.has_logs for m in members):
            notes.append(f"series {series}: the changes between checkpoints need per-item logs of every run")
            continue
        xs, field_name, _ = progress(members)
        for (x0, before), (x1, after) in zip(zip(xs, members), list(zip(xs, members))[1:]):
            for r in _paired(after, before, metrics, iters, seed):
                rows.append(
                    {
                        "series": series,
                        "from": before.label,
                        "to": after.label,
                        "x": field_name,
                        "x_from": x0,
                        "x_to": x1,
                        **_where(r),
                        "before": r["b"],
                        "after": r["a"],
                        "delta": r["diff"],
                        **_interval(r),
                    }
                )
    return rows, notes
