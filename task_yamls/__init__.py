"""The lmms-eval task folder of M3-Bench (installed as `radar_tasks.task_yamls`)."""

from pathlib import Path

TASK_DIR = str(Path(__file__).resolve().parent)
