"""RADAR for lmms-eval: M3-Bench tasks, the Soft Discrimination Score and the `radar_hf` likelihood wrapper.

Importing this package is cheap; lmms-eval, torch and transformers are imported only by the modules that need them.
"""

__version__ = "0.1.0"
__all__ = ["RadarCallback", "evaluate"]


def __getattr__(name):  # lazy: `import radar_tasks` stays free of torch and lmms-eval
    if name in ("evaluate", "RadarCallback"):
        from radar_tasks import inloop

        return getattr(inloop, name)
    raise AttributeError(f"module 'radar_tasks' has no attribute {name!r}")
