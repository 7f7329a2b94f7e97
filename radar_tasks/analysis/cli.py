"""The `report` and `compare` subcommands of `radar-tasks` (`add_parsers(subparsers)` adds them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPORT_EPILOG = """\
RUN: an lmms-eval results JSON (*_results.json) or an --output_path folder (searched recursively; several
results JSONs in one folder are several runs, in file-timestamp order). Per-item logs
(<date>_samples_<task>.jsonl, from --log_samples) next to a results JSON are used when present.

Labels (one value per run, comma-separated, in run order) or a manifest (YAML list / CSV with a header),
one entry per run: run (path of the results JSON or its folder), label, model, step, tokens, size, strategy,
series. Numbers take suffixes: 0.5B, 350M, 20k. Runs of one series (the `series` label, else strategy and
size) form one development curve, ordered by tokens, else steps, else run order.

example:
  radar-tasks report out/ckpt-1000 out/ckpt-2000 out/ckpt-4000 --steps 1000,2000,4000 --out report/
  radar-tasks report --manifest runs.yaml --out report/
"""


def _report(args) -> int:
    from radar_tasks.analysis.report import write_report
    from radar_tasks.analysis.runs import RunError

    flags = {
        "label": args.labels,
        "model": args.models,
        "step": args.steps,
        "tokens": args.tokens,
        "size": args.sizes,
        "strategy": args.strategies,
        "series": args.series,
    }
    try:
        path = write_report(
            args.runs,
            args.out,
            manifest=args.manifest,
            flags=flags,
            bootstrap_iters=args.bootstrap_iters,
            seed=args.seed,
            snr_last=args.snr_last,
        )
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _compare(args) -> int:
    from radar_tasks.analysis.compare import COLUMNS, METRICS, compare_runs, format_table
    from radar_tasks.analysis.report import write_csv
    from radar_tasks.analysis.runs import RunError, load_runs

    try:
        runs = []
        for target in (args.run_a, args.run_b):
            found = load_runs([target])
            if len(found) != 1:
                raise RunError(
                    f"{target}: holds {len(found)} runs; name one *_results.json: "
                    + ", ".join(str(r.results_path) for r in found)
                )
            runs.append(found[0])
        if runs[0].results_path == runs[1].results_path:
            raise RunError("RUN_A and RUN_B are the same results JSON")
        a, b = runs
        if args.label_a:
            a.labels["label"] = args.label_a
        if args.label_b:
            b.labels["label"] = args.label_b
        metrics = tuple(dict.fromkeys(args.metric or METRICS))
        result = compare_runs(a, b, iters=args.iters, seed=args.seed, metrics=metrics)
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    levels = ("category", "subset", "ability", "overall") if args.categories else ("subset", "ability", "overall")
    print(format_table(result, levels))
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() != ".csv":
            out.mkdir(parents=True, exist_ok=True)
            out = out / "compare.csv"
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"run_a": result["a"], "run_b": result["b"], **r} for r in result["rows"]]
        write_csv(
            out,
            rows,
            ["run_a", "run_b", *COLUMNS],
        )
        print(f"\n{out}")
    return 0


def add_parsers(subparsers) -> None:
    """Add `report` and `compare` to an argparse subparsers object (each sets `fn` to its handler)."""
    p = subparsers.add_parser(
        "report",
        help="CSV + Markdown + figures from lmms-eval runs (SDS, asymmetry, takeoff, signal and noise, visual gain)",
        description="Tidy CSVs, PNG figures and a Markdown report of M3-Bench runs.",
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="*", metavar="RUN", help="results JSON or lmms-eval output folder")
    p.add_argument("--out", required=True, help="folder for report.md, the CSVs and figures/")
    p.add_argument("--manifest", help="YAML or CSV label manifest (one entry per run)")
    p.add_argument("--labels", help="display names, one per run")
    p.add_argument("--models", help="model names, one per run")
    p.add_argument("--steps", help="training steps, one per run")
    p.add_argument("--tokens", help="tokens seen, one per run (e.g. 1B,2B,4B)")
    p.add_argument("--sizes", help="model sizes in parameters, one per run (e.g. 0.5B,7B)")
    p.add_argument("--strategies", help="pretraining strategies, one per run")
    p.add_argument("--series", help="series names, one per run (default: strategy and size)")
    p.add_argument("--bootstrap-iters", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--snr-last",
        type=int,
        default=3,
        metavar="N",
        help="signal and noise as published: the last N checkpoints of a series give its noise and final score "
        "(default 3, at least 3)",
    )
    p.set_defaults(fn=_report)

    p = subparsers.add_parser(
        "compare",
        help="paired bootstrap difference of SDS, acc, BPB and Brier between two runs on the same items",
        description="Paired bootstrap of A - B per subset, ability and overall on items matched by (task, id) "
        "in the per-item logs (lmms-eval --log_samples). Items in one run only are counted and "
        "left out.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="results JSON (or a folder holding exactly one)")
    p.add_argument("run_b", metavar="RUN_B", help="the run subtracted: results JSON (or a folder holding exactly one)")
    p.add_argument("--out", help="CSV file, or a folder for compare.csv")
    p.add_argument("--iters", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument(
        "--metric",
        action="append",
        choices=("sds", "acc", "bpb", "brier"),
        help="metric(s) to compare (repeatable; default: all four; bpb and brier: lower is better)",
    )
    p.add_argument("--categories", action="store_true", help="also print per-category rows")
    p.add_argument("--label-a", help="display name of RUN_A")
    p.add_argument("--label-b", help="display name of RUN_B")
    p.set_defaults(fn=_compare)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m radar_tasks.analysis.cli report ...`), the same subcommands."""
    parser = argparse.ArgumentParser(prog="python -m radar_tasks.analysis.cli")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
