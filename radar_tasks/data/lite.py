"""The lite subset of M3-Bench (`radar_mmm_lite`): a fixed, seeded, stratified sample for evaluation in the loop.

At most `PER_SUBSET` items per subset; MMBench and MMMU-Pro spread theirs over their categories (every category
keeps at least one item, the rest in proportion to the category sizes, largest remainder first). Within a
category the items drawn are those of smallest `sha256(seed, subset, category, id)`: the draw depends only on the
ids, never on file order, so it is the same on every machine.

The ids are drawn once from the released data (`task_yamls/draw_lite_sample.py`) into the checked-in
`task_yamls/_lite_ids.json`; `task_yamls/generate_tasks.py` writes them into the task index, and the lite tasks
score exactly those items. On data that lacks some of them (another release, or the miniature M3-Bench) the lite
task draws the same way from the data it has, with a warning (`select`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

PER_SUBSET = 50
SEED = 0
IDS_FILE = "_lite_ids.json"  # in the task folder
SUFFIX = "_lite"  # radar_wiki_animal -> radar_wiki_animal_lite, radar_mmm -> radar_mmm_lite


def _rank(seed: int, *parts: str) -> str:
    return hashlib.sha256("\0".join([str(seed), *parts]).encode("utf-8")).hexdigest()


def quotas(
    counts: Mapping[str, int], per_subset: int = PER_SUBSET, seed: int = SEED, subset: str = ""
) -> dict[str, int]:
    """Items to draw per category of one subset: all of them when the subset has at most `per_subset`; else one
    per category (when `per_subset` allows) and the rest in proportion to the remaining sizes, largest remainder
    first (ties broken by a seeded hash of the category)."""
    counts = {c: int(n) for c, n in counts.items() if n > 0}
    if sum(counts.values()) <= per_subset:
        return dict(counts)
    base = {c: 1 for c in counts} if per_subset >= len(counts) else {c: 0 for c in counts}
    room = {c: n - base[c] for c, n in counts.items()}
    left = per_subset - sum(base.values())
    share = {c: left * room[c] / sum(room.values()) for c in counts}
    out = {c: base[c] + math.floor(share[c]) for c in counts}
    by_remainder = sorted(counts, key=lambda c: (-(share[c] - math.floor(share[c])), _rank(seed, subset, c)))
    for c in by_remainder[: per_subset - sum(out.values())]:
        out[c] += 1
    return out


def draw(ids: Sequence[str], k: int, *, subset: str, category: str, seed: int = SEED) -> list[str]:
    """The `k` ids of smallest seeded hash, in their original order."""
    chosen = set(sorted(ids, key=lambda i: _rank(seed, subset, category, str(i)))[:k])
    return [i for i in ids if i in chosen]


def draw_sample(
    ids_by_category: Mapping[tuple[str, str], Sequence[str]], per_subset: int = PER_SUBSET, seed: int = SEED
) -> dict[tuple[str, str], list[str]]:
    """(subset, category) -> the ids drawn, for every category given (see the module docstring)."""
    subsets: dict[str, dict[str, int]] = {}
    for (subset, category), ids in ids_by_category.items():
        subsets.setdefault(subset, {})[category] = len(ids)
    out = {}
    for subset, counts in subsets.items():
        for category, k in quotas(counts, per_subset, seed, subset).items():
            out[(subset, category)] = draw(
                list(ids_by_category[(subset, category)]), k, subset=subset, category=category, seed=seed
            )
    return out


def select(ids: Sequence[str], row: Mapping) -> tuple[list[int], str | None]:
    """Positions of the lite items among a category's record ids (a task-index row: subset, category, ids, quota,
    seed), and a warning when the data lacks some of the pinned ids (then the same draw runs on this data)."""
    pinned = [str(i) for i in row["ids"]]
    position = {str(i): n for n, i in enumerate(ids)}
    missing = [i for i in pinned if i not in position]
    if not missing:
        return sorted(position[i] for i in pinned), None
    chosen = set(
        draw(
            [str(i) for i in ids],
            int(row["quota"]),
            subset=row["subset"],
            category=row["category"],
            seed=int(row["seed"]),
        )
    )
    warning = (
        f"{len(missing)} of the {len(pinned)} lite items pinned in {IDS_FILE} (e.g. {missing[0]!r}) are not in "
        f"this data: drew the same seeded sample ({len(chosen)} items) from the data present; scores are "
        f"not comparable with runs on the pinned sample"
    )
    return [n for n, i in enumerate(ids) if str(i) in chosen], warning
