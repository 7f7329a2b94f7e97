"""Measures, on the fixture, the two things that move SDS between `protocol=paper` and other runs of the scripts.

1. **The A/B draw** of MMMU-Pro items whose options hold images. The scripts draw "answer first or last" from one
   global random stream consumed in their unsorted directory order, which cannot be replayed; `radar_hf` draws per
   item (seeded). Every such item is scored in both orders, so the printed range bounds the MMMU-Pro SDS of ANY draw,
   the authors' included: per item |p(first) - p(last)|, and the subset SDS with our draw, all-first, all-last and
   the extremes (each item in the order that minimises / maximises its p).
2. **Transparency**: the fixture's MMMU-Pro and SeePhys PNGs rewritten with transparent black borders
   (`radar_tasks.demo.transparent`), scored with each image conversion (`white`, `qwen_vl_utils`, `pil_convert`)
   under each family's `protocol=paper`: the per-item and subset differences from the family script's own one.

Runs radar_hf itself (`loglikelihood` on lmms-eval Instances, fp32, CPU by default) on tiny random-weight models of
the three families (`radar_tasks.demo.tiny_models`), or on `--pretrained` checkpoints. Prints markdown tables and
writes `--out` (JSON).

    python benchmarks/paper_deviations.py --work /tmp/deviations            # a few minutes on 2 CPU cores
    python benchmarks/paper_deviations.py --pretrained qwen2_vl=/ckpt/step_1000 --families qwen2_vl
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from lmms_eval.api.instance import Instance

from radar_tasks import taxonomy
from radar_tasks.data import m3bench
from radar_tasks.data.images import CONVERSIONS
from radar_tasks.demo.fixture import make_fixture
from radar_tasks.demo.tiny_models import build_tiny_model
from radar_tasks.demo.transparent import add_transparency
from radar_tasks.metrics.sds import softmax
from radar_tasks.models import protocol
from radar_tasks.models.radar_hf import RadarHF
from radar_tasks.tasks.hooks import doc_to_choice, doc_to_visual

FAMILIES = {"qwen2_vl": "qwen2vl_base", "internvl": "internvl", "llava_onevision": "llava_ov_plain"}
TASK, SPLIT = "radar_deviations", "test"


class FixedDraw:
    """Every options block in one order (m3bench's per-item draw, overridden)."""

    def __init__(self, correct_first: bool):
        self.first = correct_first

    def correct_first(self, key: str) -> bool:
        return self.first


def records(root: Path, subset: str, draw=None, limit: int | None = None) -> list[dict]:
    """Every record of `subset` in the released layout, with m3bench's own draw or a fixed one; with `limit`, the
    first `limit` records, those with an options block first (the same items under every draw)."""
    out = []
    for category in taxonomy.categories(subset):
        for path in m3bench.category_files(root, subset, category):
            for qid, item in m3bench.read_json(path, root).items():
                out.append(m3bench.normalize_item(root, path, subset, category, qid, item, draw or m3bench._Draw()))
    if limit is not None:
        out = sorted(out, key=lambda doc: not doc["options_text"])[:limit]
    return out


def probabilities(wrapper: RadarHF, docs: list[dict]) -> list[float | None]:
    """p of the correct candidate per doc, as the tasks score them (None for skipped docs)."""
    wrapper.task_dict = {TASK: {SPLIT: docs}}
    requests, owners = [], []
    for d, doc in enumerate(docs):
        for c in doc_to_choice(doc):
            requests.append(
                Instance(
                    "loglikelihood",
                    ("", " " + c, doc_to_visual, d, TASK, SPLIT),
                    idx=len(requests),
                    metadata={"task": TASK, "doc_id": d, "repeats": 1},
                )
            )
            owners.append(d)
    losses = [r.text[0] for r in wrapper.loglikelihood(requests)]
    per_doc: dict[int, list[float]] = {}
    for d, loss in zip(owners, losses):
        per_doc.setdefault(d, []).append(-loss)
    return [None if doc["skipped"] else softmax(per_doc[d])[0] for d, doc in enumerate(docs)]


def subset_sds(docs, ps) -> float:
    """Mean over categories of the mean p of their scored items (the package's subset score)."""
    by_category: dict[str, list[float]] = {}
    for doc, p in zip(docs, ps):
        if p is not None:
            by_category.setdefault(doc["category"], []).append(p)
    return statistics.fmean(statistics.fmean(v) for v in by_category.values())


def ab_draw(wrapper, root, limit: int | None = None) -> dict:
    ours = records(root, "mmmu_pro", limit=limit)
    first = records(root, "mmmu_pro", FixedDraw(True), limit)
    last = records(root, "mmmu_pro", FixedDraw(False), limit)
    p_ours, p_first, p_last = (probabilities(wrapper, docs) for docs in (ours, first, last))
    blocks = [i for i, doc in enumerate(ours) if doc["options_text"]]
    diffs = [abs(p_first[i] - p_last[i]) for i in blocks]
    lo = [min(a, b) if i in blocks else a for i, (a, b) in enumerate(zip(p_first, p_last))]
    hi = [max(a, b) if i in blocks else a for i, (a, b) in enumerate(zip(p_first, p_last))]
    return {
        "items": len(ours),
        "items_with_block": len(blocks),
        "ours_first": sum(ours[i]["correct_first"] for i in blocks),
        "mean_abs_dp": statistics.fmean(diffs),
        "max_abs_dp": max(diffs),
        "sds_ours": subset_sds(ours, p_ours),
        "sds_all_first": subset_sds(first, p_first),
        "sds_all_last": subset_sds(last, p_last),
        "sds_min": subset_sds(ours, lo),
        "sds_max": subset_sds(ours, hi),
    }


def transparency(wrappers: dict[str, RadarHF], root, script_conversion: str, limit: int | None = None) -> dict:
    out = {}
    for subset in ("mmmu_pro", "seephys"):
        docs = records(root, subset, limit=limit)
        ps = {conv: probabilities(w, docs) for conv, w in wrappers.items()}
        ref = ps[script_conversion]
        for conv, p in ps.items():
            dp = [abs(a - b) for a, b in zip(p, ref) if a is not None]
            out[f"{subset}/{conv}"] = {
                "max_abs_dp": max(dp),
                "mean_abs_dp": statistics.fmean(dp),
                "sds": subset_sds(docs, p),
                "sds_minus_script": subset_sds(docs, p) - subset_sds(docs, ref),
            }
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/radar-paper-deviations", help="fixture and tiny models go here")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--pretrained", action="append", default=[], help="family=checkpoint (default: tiny)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default=None, help="JSON results (default: <work>/paper_deviations.json)")
    parser.add_argument("--items", type=int, default=None, help="smoke: the first N items of each subset")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    plain = work / "M3-Bench" if (work / "M3-Bench").is_dir() else make_fixture(work / "M3-Bench")
    transparent = work / "M3-Bench-transparent"
    if not transparent.is_dir():
        add_transparency(make_fixture(transparent))
    given = dict(item.split("=", 1) for item in args.pretrained)
    results = {}
    for family in args.families.split(","):
        folder = given.get(family) or (work / f"tiny-{family}")
        if family not in given and not Path(folder).is_dir():
            build_tiny_model(folder, family, seed=0)
        common = {"pretrained": str(folder), "device": args.device, "dtype": args.dtype, "protocol": "paper"}
        script = protocol.paper_preset(FAMILIES[family])["image_conversion"]
        paper = RadarHF(**common)
        results[family] = {
            "model": str(folder),
            "ab_draw_paper": ab_draw(paper, plain, args.items),  # two letters, as the scripts
            "ab_draw_every_letter": ab_draw(RadarHF(**common, mmmu_two_letters="false"), plain, args.items),
            "transparency": transparency(
                {c: paper if c == script else RadarHF(**common, image_conversion=c) for c in CONVERSIONS},
                transparent,
                script,
                args.items,
            ),
            "script_conversion": script,
        }
    out = Path(args.out or work / "paper_deviations.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        "| family | scoring | items with a block (ours first) | mean / max abs dp | MMMU-Pro SDS ours | "
        "all first | all last | any draw |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for family, r in results.items():
        for name in ("ab_draw_paper", "ab_draw_every_letter"):
            a = r[name]
            print(
                f"| {family} | {'two letters' if name.endswith('paper') else 'every letter'} | "
                f"{a['items_with_block']} ({a['ours_first']}) | {a['mean_abs_dp']:.3f} / {a['max_abs_dp']:.3f} | "
                f"{a['sds_ours']:.4f} | {a['sds_all_first']:.4f} | {a['sds_all_last']:.4f} | "
                f"{a['sds_min']:.4f} .. {a['sds_max']:.4f} |"
            )
    print(
        "\n| family (script's conversion) | subset | conversion | max / mean abs dp vs script | SDS | SDS - script's |"
    )
    print("|---|---|---|---|---|---|")
    for family, r in results.items():
        for key, t in r["transparency"].items():
            subset, conv = key.split("/")
            if conv != r["script_conversion"]:
                print(
                    f"| {family} ({r['script_conversion']}) | {subset} | {conv} | {t['max_abs_dp']:.4f} / "
                    f"{t['mean_abs_dp']:.4f} | {t['sds']:.4f} | {t['sds_minus_script']:+.4f} |"
                )
    if any(math.isnan(v) for r in results.values() for v in r["ab_draw_paper"].values() if isinstance(v, float)):
        raise SystemExit("non-finite results")


if __name__ == "__main__":
    main()
