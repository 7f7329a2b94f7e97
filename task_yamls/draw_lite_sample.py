"""Draw the lite sample (`radar_mmm_lite`) from an M3-Bench root into `_lite_ids.json`, then regenerate the tasks.

    python task_yamls/draw_lite_sample.py --root /data/M3-Bench     # default root: $RADAR_M3BENCH_DIR
    python task_yamls/draw_lite_sample.py --root ... --per-subset 50 --seed 0

Every item of every category present is read (and validated) with `radar_tasks.data.m3bench`; the draw is
`radar_tasks.data.lite.draw_sample` (stratified over categories, seeded, independent of file order). The file also
records what it was drawn from (the data fingerprint and the item counts), then `generate_tasks.py` writes the
ids into the task index. Commit both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from radar_tasks import taxonomy
from radar_tasks.data import lite, m3bench

HERE = Path(__file__).resolve().parent


def read_ids(root: Path) -> dict[tuple[str, str], list[str]]:
    """(subset, category) -> record ids in file order, for every category with a json file under `root`."""
    out = {}
    for spec in taxonomy.SUBSETS:
        if not (root / spec.folder).is_dir():
            continue
        by_category, _ = m3bench.subset_files(root, spec.name)
        for category in taxonomy.categories(spec.name):
            if category in by_category:
                out[(spec.name, category)] = list(m3bench.load_category(spec.name, category, root)["id"])
    return out


def sample_file(root: Path, per_subset: int, seed: int, source: str) -> dict:
    ids = read_ids(root)
    drawn = lite.draw_sample(ids, per_subset, seed)
    items = {}
    for (subset, _), members in ids.items():
        items[subset] = items.get(subset, 0) + len(members)
    return {
        "about": "Item ids of the lite tasks (radar_mmm_lite and its leaves), drawn by task_yamls/draw_lite_sample.py;"
        " regenerate the tasks with task_yamls/generate_tasks.py after redrawing.",
        "seed": seed,
        "per_subset": per_subset,
        "drawn_from": {
            "source": source,
            "fingerprint": m3bench.data_fingerprint(root),
            "items": items,
            "drawn": {s: sum(len(v) for (ss, _), v in drawn.items() if ss == s) for s in items},
        },
        # every leaf task, so that the generator writes them all; a category without data gets no items
        "tasks": {
            taxonomy.task_name(s, c): {"quota": len(drawn.get((s, c), [])), "ids": drawn.get((s, c), [])}
            for s, c in taxonomy.leaf_tasks()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="M3-Bench folder (default: $RADAR_M3BENCH_DIR)")
    parser.add_argument("--per-subset", type=int, default=lite.PER_SUBSET, help="items per subset at most")
    parser.add_argument("--seed", type=int, default=lite.SEED)
    parser.add_argument("--source", help="what the root is, recorded in the file (default: the folder name)")
    parser.add_argument("--out", default=str(HERE / lite.IDS_FILE), help="default: the task folder's file")
    args = parser.parse_args(argv)
    root = m3bench.resolve_root(args.root)
    data = sample_file(root, args.per_subset, args.seed, args.source or root.name)
    Path(args.out).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    empty = [t for t, v in data["tasks"].items() if not v["ids"]]
    print(
        f"{args.out}: {sum(len(t['ids']) for t in data['tasks'].values())} items; "
        + (f"no data for {len(empty)} categories (their lite tasks score nothing)" if empty else "every category")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
