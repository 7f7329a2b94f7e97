"""Analysis of lmms-eval runs of M3-Bench: tidy tables, statistics, figures and reports (`radar-tasks report`,
`radar-tasks compare`).

Modules: `runs` (reads lmms-eval output folders, per-item logs and label manifests), `stats` (pure statistics),
`tables` (M3-Bench score hierarchy, bootstrap, asymmetry, signal checks), `takeoff`, `signal_noise` (signal and
noise as published), `paired` (visual gain, consecutive checkpoints), `figures` (matplotlib, Agg), `report` (CSV +
Markdown; `write_report`), `compare` (paired bootstrap between two runs), `cli` (argparse).
"""

from __future__ import annotations

__all__ = ["compare_runs", "load_runs", "write_report"]


def __getattr__(name):  # keep `import radar_tasks.analysis` light: matplotlib loads only when a report is written
    if name == "write_report":
        from radar_tasks.analysis.report import write_report

        return write_report
    if name == "compare_runs":
        from radar_tasks.analysis.compare import compare_runs

        return compare_runs
    if name == "load_runs":
        from radar_tasks.analysis.runs import load_runs

        return load_runs
    raise AttributeError(name)
