"""The size of report.html for a release-sized series: per-item logs and results JSONs of N checkpoints over every
item of an M3-Bench folder (no model: random candidate scores that favour the correct candidate a little more at
each checkpoint), then `radar-tasks report` on them; prints the files' sizes and the time taken.

    python benchmarks/synthetic_m3bench.py /tmp/m3-synthetic          # the 14,904-item synthetic M3-Bench
    python benchmarks/report_size.py /tmp/m3-synthetic /tmp/report-size [--checkpoints 5] [--seed 0]

The records are the ones lmms-eval would score (`data.m3bench.load_category`, the task text with image markers);
each item record is built by `metrics.items.score_item`, the function `process_results` calls, and written in
lmms-eval's per-item log layout (`input_media`: the item's image paths). `OUT` must not exist or be empty; never
write it into the repository.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from radar_tasks import prompts, taxonomy
from radar_tasks.analysis import write_report
from radar_tasks.analysis.html import HTML_FILE, ITEMS_FILE
from radar_tasks.data import m3bench
from radar_tasks.metrics import items as item_records


def synthesize(root: Path, out: Path, checkpoints: int, seed: int) -> list[Path]:
    """One run folder per checkpoint (`out/runs/step_<k>/model/`: results JSON and per-item logs); returns them."""
    rng = np.random.default_rng(seed)
    folders = [out / "runs" / f"step_{1000 * (k + 1)}" / "model" for k in range(checkpoints)]
    for folder in folders:
        folder.mkdir(parents=True)
    results: list[dict] = [{} for _ in folders]
    for subset, category in taxonomy.leaf_tasks():
        task = taxonomy.task_name(subset, category)
        docs = list(m3bench.load_category(subset, category, root))
        lines: list[list[str]] = [[] for _ in folders]
        for i, doc in enumerate(docs):
            if doc.get("absent"):
                continue
            prompt = prompts.task_text(doc, image_markers=True)
            base = rng.normal(size=len(doc["choices"]))
            for k in range(len(folders)):
                losses = -(base + rng.normal(scale=0.3, size=base.size) + np.eye(base.size)[0] * 0.25 * k)
                scored = [
                    item_records.CandidateResult((float(loss), False), candidate=c, prompt=prompt if j == 0 else None)
                    for j, (loss, c) in enumerate(zip(losses, doc["choices"]))
                ]
                record = item_records.score_item(doc, scored)
                lines[k].append(json.dumps({"doc_id": i, "input_media": list(doc["images"]), "sds": record}))
        for k, folder in enumerate(folders):
            (folder / f"20260101_00000{k}_samples_{task}.jsonl").write_text("\n".join(lines[k]) + "\n")
            recs = [json.loads(line)["sds"] for line in lines[k]]
            scored = [r["p"] for r in recs if r["p"] is not None]
            results[k][task] = {
                "sds,none": float(np.mean(scored)) if scored else float("nan"),
                "sds_stderr,none": "N/A",
                "acc,none": float(np.mean([bool(r["correct"]) for r in recs])),
                "acc_stderr,none": "N/A",
                "items,none": len(recs),
                "skipped,none": len(recs) - len(scored),
            }
    for k, folder in enumerate(folders):
        (folder / f"20260101_00000{k}_results.json").write_text(json.dumps({"results": results[k], "configs": {}}))
    return [f.parent for f in folders]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="an M3-Bench folder (e.g. benchmarks/synthetic_m3bench.py's)")
    parser.add_argument("out", help="a new folder: runs/ (the synthesized runs) and report/")
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty")
    t0 = time.monotonic()
    folders = synthesize(Path(args.root), out, args.checkpoints, args.seed)
    t1 = time.monotonic()
    labels = [{"step": int(f.name.split("_")[1]), "label": f.name} for f in folders]
    write_report(folders, out / "report", labels=labels)
    t2 = time.monotonic()
    n = sum(len(f.read_text().splitlines()) for f in folders[0].glob("model/*_samples_*.jsonl"))
    print(f"{n} items x {len(folders)} checkpoints: logs written in {t1 - t0:.0f} s, report in {t2 - t1:.0f} s")
    for name in (HTML_FILE, ITEMS_FILE, "report.md"):
        path = out / "report" / name
        if path.exists():
            print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
