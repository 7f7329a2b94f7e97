"""Proof that a refactor changed no number: `radar_mmm` on the miniature M3-Bench, three configurations, before/after.

    python tools/behaviour_snapshot.py material DIR          # fixture + tiny Qwen2-VL + tiny InternVL (once)
    python tools/behaviour_snapshot.py run DIR OUT           # the three runs, each through the lmms-eval CLI
    python tools/behaviour_snapshot.py compare OUT_A OUT_B   # every results entry and per-item sample; exit 1 if any
                                                             # differs

Run `material` once, `run` on the old commit and on the new one with the same material (so paths match), then
`compare`. Fields that hold times, dates, hashes of the environment or output paths are left out (listed in
IGNORED); every other field, numbers included, must be equal to the bit. With `--subset-fields` the comparison
keeps only the fields the old run has (a change that adds metrics is then checked on what existed before).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

CONFIGS = {
    "qwen2vl_default": ("qwen2_vl", "device=cpu,dtype=float32"),
    "qwen2vl_paper": ("qwen2_vl", "device=cpu,dtype=float32,protocol=paper"),
    "internvl_quirks": (
        "internvl",
        "device=cpu,dtype=float32,prompt_style=internvl,internvl_reverse_images=true,llava_mmmu_one_distractor=true",
    ),
}
TASKS = "radar_mmm"
# times, dates, environment and output paths: not behaviour
IGNORED = {
    "lmms_eval_version",
    "date",
    "start_time",
    "end_time",
    "total_evaluation_time_seconds",
    "git_hash",
    "pretty_env_info",
    "transformers_version",
    "lm_eval_version",
    "upper_git_hash",
    "model_name_sanitized",
    "time_s",
    "host_preparation",
    "timing",
}


def material(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "radar_tasks.cli"]
    subprocess.run([*cli, "make-fixture", str(folder / "M3-Bench")], check=True)
    for arch in sorted({arch for arch, _ in CONFIGS.values()}):
        subprocess.run([*cli, "tiny-model", str(folder / f"tiny-{arch}"), "--arch", arch], check=True)


def run(folder: Path, out: Path) -> None:
    from radar_tasks import runner

    for name, (arch, args) in CONFIGS.items():
        model_args = f"pretrained={folder / f'tiny-{arch}'},{args}"
        path = runner.run_subprocess(
            model_args, TASKS, out / name, folder / "M3-Bench", ["--batch_size", "4"], log=out / f"{name}.log"
        )
        print(f"{name}: {path}")


ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # a function's repr in the logged task config
CHECKOUT = re.compile(r"/\S*?/task_yamls/")  # where the task folder lies: the checkout, not behaviour


def _clean(value, keep=None, out=""):
    """`value` without IGNORED keys (and, with `keep`, only the keys `keep` has), recursively; strings without
    memory addresses and with the run's own output folder as `<out>`."""
    if isinstance(value, dict):
        return {
            k: _clean(v, None if keep is None else keep.get(k), out)
            for k, v in value.items()
            if k not in IGNORED and (keep is None or k in keep)
        }
    if isinstance(value, list):
        keeps = keep if isinstance(keep, list) and len(keep) == len(value) else [None] * len(value)
        return [_clean(v, k, out) for v, k in zip(value, keeps)]
    if isinstance(value, str):
        value = value.replace(out, "<out>") if out else value
        return CHECKOUT.sub("<checkout>/task_yamls/", ADDRESS.sub("", value))
    return value


def _differences(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in {'A' if k in a else 'B'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    if a != b and not (a != a and b != b):  # NaN equals NaN here
        return [f"{where}: {str(a)[:120]} != {str(b)[:120]}"]
    return []


def _load_run(folder: Path) -> tuple[dict, dict[str, list[dict]]]:
    results = sorted(folder.rglob("*_results.json"))
    if not results:
        raise SystemExit(f"no results JSON under {folder}")
    data = json.loads(results[-1].read_text())
    samples = {}
    for path in sorted(results[-1].parent.glob("*_samples_*.jsonl")):
        task = path.stem.split("_samples_", 1)[1]
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        samples[task] = sorted(rows, key=lambda r: r.get("doc_id", 0))
    return data, samples


def compare(a: Path, b: Path, subset_fields: bool) -> int:
    failed = 0
    for name in CONFIGS:
        (ra, sa), (rb, sb) = _load_run(a / name), _load_run(b / name)
        out_a, out_b = str((a / name).absolute()), str((b / name).absolute())
        rb = _clean(rb, ra if subset_fields else None, out_b)
        ra = _clean(ra, None, out_a)
        diffs = _differences(ra, rb, "results")
        n_samples = 0
        for task in sorted(set(sa) | set(sb)):
            if task not in sa or task not in sb:
                diffs.append(f"samples {task}: only in {'A' if task in sa else 'B'}")
                continue
            n_samples += len(sa[task])
            rows_b = [_clean(y, x if subset_fields else None, out_b) for x, y in zip(sa[task], sb[task])]
            diffs += _differences([_clean(x, None, out_a) for x in sa[task]], rows_b, f"samples[{task}]")
            if len(sa[task]) != len(sb[task]):
                diffs.append(f"samples {task}: {len(sa[task])} rows != {len(sb[task])}")
        n_results = sum(len(v) for v in ra.get("results", {}).values())
        print(
            f"{name}: {len(ra.get('results', {}))} result entries ({n_results} values), {n_samples} samples, "
            f"{len(diffs)} difference(s)"
        )
        for d in diffs[:40]:
            print("   ", d)
        failed += bool(diffs)
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("material").add_argument("dir", type=Path)
    r = sub.add_parser("run")
    r.add_argument("dir", type=Path)
    r.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--subset-fields", action="store_true", help="compare only the fields A has")
    args = parser.parse_args(argv)
    if args.command == "material":
        material(args.dir)
    elif args.command == "run":
        run(args.dir, args.out)
    else:
        return compare(args.a, args.b, args.subset_fields)
    return 0


if __name__ == "__main__":
    sys.exit(main())
