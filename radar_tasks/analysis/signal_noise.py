"""Signal and noise as published: Heineman et al., 2025, "Signal and Noise: A Framework for Reducing Uncertainty in
Language Model Evaluation" (allenai/signal-and-noise, `snr/metrics.py`).

Per task (subset, ability, overall) and metric, from the summary rows (`tables.summarize`): the noise of each
series over its last n checkpoints, the signal across the final scores of the series, and their ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from radar_tasks.analysis import stats
from radar_tasks.analysis.runs import Run, RunError, series_of
from radar_tasks.analysis.tables import lookup, summary_metrics

LEVELS = ("subset", "ability", "overall")
LAST_N = 3  # the report's default n: the last checkpoints of a series that give its noise and its final score
MIN_LAST_N = 3  # a standard deviation over fewer checkpoints says next to nothing
MIN_SNR = 1.0  # a subset whose series differ less than one series moves between its last checkpoints

SNR_DOC = f"""\
Signal and noise (Heineman et al., 2025, "Signal and Noise: A Framework for Reducing Uncertainty in Language
Model Evaluation"; allenai/signal-and-noise, snr/metrics.py), per series, task (subset, ability, overall) and
metric, with n = the report's --snr-last (default {LAST_N}, at least {MIN_LAST_N}):
  final_s = mean of series s's last n scores (all of them when it has fewer);
  noise_s = std (ddof=0) of series s's last n scores / their mean (none for a series of fewer than n);
  signal = max over pairs of series |final_j - final_k| / mean of the finals, over the series of the report
    (with images and without are separate populations: each image mode has its own signal); needs 2 series;
  SNR_s = signal / noise_s.
The published code pools the last checkpoints of every model it compares into one noise (or takes one model's);
here each series has its own noise. A subset whose SNR is below {MIN_SNR:g} is flagged: its series differ less than
one series moves between its last checkpoints (the paper's advice: average the last checkpoints, and drop
low-SNR subtasks)."""


def check_last_n(last_n: int) -> int:
    """`last_n` as the report takes it; RunError (one line) below MIN_LAST_N."""
    if isinstance(last_n, bool) or not isinstance(last_n, int) or last_n < MIN_LAST_N:
        raise RunError(
            f"--snr-last {last_n}: the noise is a standard deviation over the last n checkpoints of a series; "
            f"give n >= {MIN_LAST_N}"
        )
    return last_n


def _final(values: Sequence[float], last_n: int) -> float:
    tail = np.asarray(values[-last_n:], dtype=np.float64)
    return float(tail.mean()) if tail.size and np.all(np.isfinite(tail)) else math.nan


def signal_and_noise(runs: list[Run], summary: list[dict], last_n: int = LAST_N, levels=LEVELS) -> list[dict]:
    """One row per series x task x metric: final, noise, the signal across the series and the SNR (SNR_DOC)."""
    check_last_n(last_n)
    groups = series_of(runs)
    names = list(dict.fromkeys((r["level"], r["name"]) for r in summary if r["level"] in levels))
    rows = []
    for level, name in names:
        for metric in summary_metrics(summary):
            per_series = []
            for series, members in groups.items():
                cells = [lookup(summary, r.label, level, name, metric) for r in members]
                if all(c is None for c in cells):
                    continue
                values = [c["value"] if c else math.nan for c in cells]
                noise = stats.relative_noise(values[-last_n:]) if len(values) >= last_n else math.nan
                per_series.append((series, members[0].images, len(values), _final(values, last_n), noise))
            signals = {
                mode: stats.relative_signal([final for _, m, _, final, _ in per_series if m == mode])
                for mode in {m for _, m, _, _, _ in per_series}
            }
            for series, mode, n_runs, final, noise in per_series:
                snr = stats.ratio(signals[mode], noise)
                rows.append(
                    {
                        "series": series,
                        "images": mode,
                        "level": level,
                        "name": name,
                        "metric": metric,
                        "runs": n_runs,
                        "last_n": min(last_n, n_runs),
                        "final": final,
                        "noise": noise,
                        "signal": signals[mode],
                        "snr": snr,
                        "low_snr": math.isfinite(snr) and snr < MIN_SNR,
                    }
                )
    return rows
