"""The `radar-tasks` command: argument parsing and dispatch (every command's work lives in its own module)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

DEMO_ARCH = "qwen2_vl"  # = radar_tasks.demo.quickstart.DEMO_ARCH (not imported: the parser is built light)


def _make_fixture(args) -> int:
    from radar_tasks.demo.fixture import make_fixture

    print(make_fixture(args.out, seed=args.seed))
    return 0


def _tiny_model(args) -> int:
    from radar_tasks.demo.tiny_models import build_tiny_model

    print(build_tiny_model(args.out, args.arch, seed=args.seed))
    return 0


def _check_data(args) -> int:
    from radar_tasks import taxonomy
    from radar_tasks.data import m3bench
    from radar_tasks.errors import M3BenchError

    leaves = None if not args.subset else {leaf for name in args.subset for leaf in _selected_leaves(name)}
    subsets = None if leaves is None else [s.name for s in taxonomy.SUBSETS if any(s.name == x for x, _ in leaves)]
    try:
        report = m3bench.check_root(args.root, subsets, leaves)
    except M3BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for spec in taxonomy.SUBSETS:
        cats = {c: n for (s, c), n in report.counts.items() if s == spec.name}
        if not cats:
            continue
        skipped = sum(n for (s, _), n in report.skipped.items() if s == spec.name)
        print(
            f"{spec.name:16s} {spec.folder:36s} {sum(cats.values()):6d} items in {len(cats)} categories"
            + (f", {skipped} skipped (> {taxonomy.MAX_IMAGES} images)" if skipped else "")
        )
        if spec.file_pattern:
            for c, n in cats.items():
                print(f"    {c:40s} {n:6d}")
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"{len(report.problems)} problem(s) in {report.root}")
    return 0 if report.ok else 1


def _export_dataset(args) -> int:
    from radar_tasks.data.export import export_dataset
    from radar_tasks.errors import M3BenchError

    try:
        summaries = export_dataset(args.out, args.root, args.subset or None)
    except M3BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for s in summaries:
        if s.absent:
            print(
                f"warning: {s.config}: no json file for category {s.category!r}: exported as an absent "
                "stand-in (its task reports no score)",
                file=sys.stderr,
            )
    items = sum(s.items for s in summaries)
    print(
        f"{args.out}: {len(summaries)} configs, {items} items, "
        f"{sum(s.skipped for s in summaries)} skipped, {sum(s.shards for s in summaries)} parquet shards"
    )
    return 0


def _export_tasks(args) -> int:
    from radar_tasks.tasks import export

    path = export.resolve_dataset_path(args.dataset_path)
    if path == args.dataset_path and not Path(path).expanduser().is_dir():
        print(
            f"note: {path} is not a local folder: the tasks will load it as a Hugging Face hub dataset id",
            file=sys.stderr,
        )
    try:
        if args.check:
            stale = export.check_tasks(args.out, path)
            for name in stale:
                print(f"out of date: {Path(args.out) / name}")
            return 1 if stale else 0
        files = export.export_tasks(args.out, path)
    except export.ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    missing = export.missing_configs(path)
    if missing:
        print(
            f"warning: {path} lacks the configs of {len(missing)} tasks ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}): those tasks fail to load",
            file=sys.stderr,
        )
    print(f"{args.out}: {len(files)} files (dataset_path {path})")
    return 0


def _task_dir(_args) -> int:
    from radar_tasks.tasks.plugin import TASK_DIR

    print(TASK_DIR)
    return 0


def _demo(args) -> int:
    if args.series:
        from radar_tasks.demo.series import DEFAULT_STEPS, run_series

        if args.arch != DEMO_ARCH:
            print(f"error: --series trains a tiny {DEMO_ARCH} only", file=sys.stderr)
            return 2
        work = Path(args.out or tempfile.mkdtemp(prefix="radar-series-"))
        steps = [int(s) for s in args.steps.split(",")] if args.steps else DEFAULT_STEPS
        print(f"report: {run_series(work, steps=steps, tasks=args.tasks)}")
        return 0
    from radar_tasks.demo.quickstart import run_demo
    from radar_tasks.runner import RunFailed

    try:
        run_demo(Path(args.out or tempfile.mkdtemp(prefix="radar-demo-")), args.arch, args.tasks, verbose=args.verbose)
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _sweep(args) -> int:
    """Exit 0 when every checkpoint (of this shard) has results, 1 otherwise, 2 on bad input."""
    from radar_tasks.checkpoints import CheckpointError
    from radar_tasks.errors import M3BenchError
    from radar_tasks.sweep import SweepError, sweep

    try:
        result = sweep(
            args.checkpoints,
            args.tasks,
            args.out,
            model_args=args.model_args or "",
            batch_size=args.batch_size,
            limit=args.limit,
            log_samples=args.log_samples,
            shard=args.shard,
            ablate_images=args.ablate_images,
            watch=args.watch,
            manifest=args.manifest,
            data_dir=args.data,
            poll=args.poll,
            wandb=args.wandb,
            tensorboard=args.tensorboard,
        )
    except (SweepError, CheckpointError, M3BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {s: sum(o.status == s for o in result.outcomes) for s in ("evaluated", "skipped", "failed", "incomplete")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no checkpoint in this shard")
    if result.report:
        print(f"report: {result.report}")
    if result.failed:
        print(f"{len(result.failed)} checkpoint(s) without results (a later sweep tries them again):", file=sys.stderr)
    for o in result.failed:
        kept = f" (log: {o.kept})" if o.kept else ""
        print(f"error: {o.checkpoint.path}: {o.status}: {o.message}{kept}", file=sys.stderr)
    return 1 if result.failed else 0


SWEEP_EPILOG = """\
CHECKPOINT: a checkpoint folder (config.json + weights + processor files) or a quoted glob ('run/step_*').
Order: the training step in the folder name (step_1000, step-1000, checkpoint-1000, iter_0001000,
global_step1000, a trailing number), or the manifest's `step`. Tokens seen: the manifest's `tokens`, else
num_input_tokens_seen of the checkpoint's trainer_state.json.

Output: DIR/runs/<checkpoint name>/ (lmms-eval's output, lmms_eval.log, sweep.json) and DIR/report/
(report.md, report.html, CSVs, figures). A failed checkpoint's log is kept in DIR/runs/<name>.failed/ with
failure.json (the cause), until a later sweep evaluates it.
A checkpoint already evaluated with the same tasks, model args, --limit, data and weights is skipped;
an interrupted one is redone. Exit status: 0 when every checkpoint of this shard has results, 1 when one
failed or its weights were incomplete, 2 on bad arguments.
--ablate-images: each checkpoint twice, the second run with the radar_hf model arg images=none (or blank)
into DIR/runs/<checkpoint name>.images-none/, skipped and resumed the same way (put the flag after the
checkpoints, or give its value: a bare flag before them would take a checkpoint for its value).

example:
  radar-tasks sweep ckpt/step_* --tasks radar_mmm --model_args dtype=bfloat16 --out sweep/ --log_samples
  radar-tasks sweep 'ckpt/checkpoint-*' --tasks radar_mmm_lite --out sweep/ --watch 3600   # a running job
  radar-tasks sweep ckpt/step_* --tasks radar_mmm --out sweep/ --shard $SLURM_ARRAY_TASK_ID/8
  radar-tasks sweep ckpt/step_* --tasks radar_mmm_lite --out sweep/ --log_samples --ablate-images  # visual gain
  radar-tasks sweep ckpt/step_* --tasks radar_mmm_lite --out sweep/ --wandb my-project --tensorboard tb/
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (`radar-tasks check-data: error: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _selected_leaves(name: str):
    """The leaves `check-data --subset` names: a radar_* task or group, or a subset by its name (`mmbench`)."""
    from radar_tasks import taxonomy

    return taxonomy.leaves_of(taxonomy.task_name(name) if name in taxonomy.SUBSETS_BY_NAME else name)


def _data_selection(name: str) -> str:
    from radar_tasks import taxonomy

    if _selected_leaves(name) is None:
        subsets = ", ".join(s.name for s in taxonomy.SUBSETS)
        raise argparse.ArgumentTypeError(f"{name!r} is neither a subset ({subsets}) nor a radar_* task or group")
    return name


def build_parser() -> argparse.ArgumentParser:
    from radar_tasks.demo.tiny_models import TINY_ARCHS

    parser = _Parser(prog="radar-tasks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-fixture", help="write a miniature M3-Bench in the released layout")
    p.add_argument("out", help="folder to write (it becomes the M3-Bench root)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn scenes and distractors (default 0)")
    p.set_defaults(fn=_make_fixture)

    p = sub.add_parser("tiny-model", help="write a tiny random-weight checkpoint (no download)")
    p.add_argument("out", help="checkpoint folder to write")
    p.add_argument("--arch", default=DEMO_ARCH, choices=TINY_ARCHS, help=f"architecture (default {DEMO_ARCH})")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.set_defaults(fn=_tiny_model)

    p = sub.add_parser("check-data", help="validate an M3-Bench root: counts and every problem (exit 1 on any)")
    p.add_argument("root", nargs="?", help="M3-Bench folder (default: $RADAR_M3BENCH_DIR)")
    p.add_argument(
        "--subset",
        action="append",
        type=_data_selection,
        metavar="NAME",
        help="only this subset (wiki_animal) or task / group (radar_wiki_animal, radar_mmbench_ocr, "
        "radar_perception); repeatable",
    )
    p.set_defaults(fn=_check_data)

    p = sub.add_parser("task-dir", help="print the lmms-eval task folder (for --include_path)")
    p.set_defaults(fn=_task_dir)

    p = sub.add_parser(
        "export-dataset",
        help="the validated records as a Hugging Face dataset folder (parquet, "
        "one config per category, images embedded, dataset card)",
    )
    p.add_argument("out", help="dataset folder to write (replaces an earlier export)")
    p.add_argument("--root", help="M3-Bench folder (default: $RADAR_M3BENCH_DIR)")
    p.add_argument("--subset", action="append", help="only this subset (repeatable; default: all)")
    p.set_defaults(fn=_export_dataset)

    p = sub.add_parser("export-tasks", help="a self-contained lmms-eval task folder (no import of this package)")
    p.add_argument("out", help="task folder to write (replaces an earlier export)")
    p.add_argument("--dataset-path", required=True, help="the exported dataset: a local folder or a hub id")
    p.add_argument("--check", action="store_true", help="only report files of OUT that differ from a fresh export")
    p.set_defaults(fn=_export_tasks)

    p = sub.add_parser("demo", help="offline demo: fixture + tiny model + lmms-eval run + table")
    p.add_argument("--out", help="working folder (default: a new temporary folder)")
    p.add_argument(
        "--arch", default=DEMO_ARCH, choices=TINY_ARCHS, help=f"architecture of the tiny model (default {DEMO_ARCH})"
    )
    p.add_argument("--tasks", help="default: radar_mmm; with --series: the subsets the synthetic data teaches")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show lmms-eval's whole output (default: progress and the table; the log goes to a file)",
    )
    p.add_argument(
        "--series",
        action="store_true",
        help="pretrain a tiny Qwen2-VL on CPU, evaluate 5 checkpoints with and without their images, write the "
        "report (a few minutes: docs/training-runs.md)",
    )
    p.add_argument("--steps", help="with --series: checkpoint steps, comma-separated (default 0,250,500,750,1000)")
    p.set_defaults(fn=_demo)

    p = sub.add_parser(
        "sweep",
        help="evaluate every checkpoint of a run (resumable, shardable, watching) + report",
        description="Evaluate checkpoints one after the other with lmms-eval and radar_hf, in one "
        "process; refresh the report after each.",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT", help="checkpoint folder or quoted glob")
    p.add_argument("--tasks", required=True, help="lmms-eval tasks, comma-separated (e.g. radar_mmm)")
    p.add_argument("--out", required=True, help="output folder: runs/ and report/")
    p.add_argument("--model_args", default="", help="radar_hf args without pretrained, e.g. device=cpu,dtype=float32")
    p.add_argument("--batch_size", help="lmms-eval --batch_size (questions per batch, or auto)")
    p.add_argument("--limit", type=float, help="lmms-eval --limit (items per task; testing only)")
    p.add_argument("--log_samples", action="store_true", help="write per-item logs (item-level report intervals)")
    p.add_argument("--shard", help="I/N: evaluate this process's share of the checkpoints (e.g. a SLURM array job)")
    p.add_argument(
        "--ablate-images",
        nargs="?",
        const="none",
        choices=("none", "blank"),
        help="also evaluate each checkpoint without its images (none, the default) or with mid-grey ones (blank), "
        "into runs/<name>.images-<mode>/; the report shows the visual gain",
    )
    p.add_argument(
        "--watch",
        type=float,
        metavar="SECONDS",
        help="keep looking for new checkpoints; stop after SECONDS without a new one",
    )
    p.add_argument("--poll", type=float, default=30.0, help="with --watch: seconds between looks (default 30)")
    p.add_argument("--manifest", help="YAML/CSV manifest (the report's format; run = checkpoint folder)")
    p.add_argument("--data", help="M3-Bench folder (default: $RADAR_M3BENCH_DIR)")
    p.add_argument(
        "--wandb",
        metavar="PROJECT[/RUN]",
        help="log each checkpoint's scores to this W&B project (RUN: the run id, e.g. the training run's; default: "
        'one per --out folder) against its training step; needs pip install "radar-tasks[wandb]"',
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="log each checkpoint's scores as TensorBoard scalars into DIR (at its training step); needs "
        'pip install "radar-tasks[tensorboard]"',
    )
    p.set_defaults(fn=_sweep)

    from radar_tasks.analysis.cli import add_parsers as add_analysis_parsers
    from radar_tasks.convert.cli import add_parsers as add_convert_parsers

    add_analysis_parsers(sub)
    add_convert_parsers(sub)
    return parser


# Flags whose value may be left out: a bare one takes its default even when a checkpoint path follows it (argparse's
# nargs="?" would take that path for the flag's value).
OPTIONAL_VALUES = {"--ablate-images": (("none", "blank"), "none")}


def _bare_flags_completed(argv: list[str]) -> list[str]:
    out = []
    for i, word in enumerate(argv):
        if word in OPTIONAL_VALUES:
            values, default = OPTIONAL_VALUES[word]
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following not in values:
                word = f"{word}={default}"
        out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_bare_flags_completed(argv))
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
