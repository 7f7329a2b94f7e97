"""The `!function` hooks named by task_yamls/_default_template_yaml.

How a task gets its data: the YAML loads one row of the checked-in task index (`_task_index.json`, json builder,
`field: <task name>`), which names the subset and category; `process_docs` swaps it for that category's records
read from $RADAR_M3BENCH_DIR (radar_tasks.data.m3bench). This keeps lmms-eval's own loading path, model-specific
prompt kwargs and caching, with no conversion step. The prompt text is `radar_tasks.prompts`; `doc_to_visual`,
`doc_to_text`, `doc_to_choice` and the selection of a lite task's docs (`select_docs`) are shared with the exported
task folder (radar_tasks.tasks.exported_hooks).
"""

from __future__ import annotations

from loguru import logger

from radar_tasks import taxonomy
from radar_tasks.data import m3bench
from radar_tasks.errors import CategoryFileMissing
from radar_tasks.metrics import lmms as lmms_metrics

# One definition for our task folder and the exported one (the docs are the same records there)
from radar_tasks.tasks.exported_hooks import doc_to_choice, doc_to_text, doc_to_visual, select_docs  # noqa: F401


def process_docs(index_rows):
    rows = list(index_rows)
    if len(rows) != 1:
        raise ValueError(f"task index: expected one row naming subset and category, got {len(rows)}")
    subset, category = rows[0]["subset"], rows[0]["category"]
    try:
        records = m3bench.load_category(subset, category)
    except CategoryFileMissing as exc:
        logger.warning(
            f"{exc}: task {taxonomy.task_name(subset, category)} reports no score, and its groups "
            "average the categories present (as the reference scripts do)"
        )
        return m3bench.absent_category(subset, category)
    selected = select_docs(records, rows[0])  # a lite task: its pinned sample of the category
    return selected if selected is not None else m3bench.absent_category(subset, category)


def process_results(doc: dict, results) -> dict:
    if doc.get("absent"):  # stand-in for a missing category file: no metric at all, so no score anywhere
        return {}
    return lmms_metrics.process_results(doc, results, convention="loss")
