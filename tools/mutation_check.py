"""Mutation check of the pure core: does the fast suite fail when the code is wrong?

    python tools/mutation_check.py                   # metrics/, taxonomy, data/m3bench, prompts; ~20 min on 2 cores
    python tools/mutation_check.py --minutes 5 --only 'radar_tasks/metrics/*'

Runs mutmut (`pip install mutmut`, 3.x) on a scratch copy of the repository in the installed layout
(`metrics/` -> `radar_tasks/metrics/`, `task_yamls/` -> `radar_tasks/task_yamls/`): mutmut puts its mutated copy
first on `sys.path`, which only shadows the editable install when the folders are where the import names say.
Only the fast test files that exercise these modules run (no lmms-eval subprocess, no model); each mutmut run of the
tests gets a fresh `datasets` cache, or records cached by an earlier mutant would hide the next one. Prints the
counts and writes the surviving mutants' diffs to `<work>/survivors.txt`. Not part of the test suite or of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MUTATED = ["radar_tasks/metrics/*", "radar_tasks/taxonomy.py", "radar_tasks/data/m3bench.py", "radar_tasks/prompts.py"]
# The fast test files that exercise the mutated modules (the ones that exist are used).
TESTS = [
    "test_sds.py",
    "test_prompts.py",
    "test_m3bench.py",
    "test_lm_eval.py",
    "test_analysis_stats.py",
    "test_fixture.py",
    "test_aggregation.py",
    "test_metric_contracts.py",
    "test_taxonomy.py",
    "test_bad_input.py",
    "test_prompt_contracts.py",
    "test_non_finite.py",
]

PLUGIN = '''\
"""pytest plugin of the mutation check: a fresh datasets cache for every run of the tests (one run per mutant)."""
import shutil
import tempfile
from pathlib import Path

CACHE = []


def pytest_configure(config):
    import datasets.config

    CACHE.append(tempfile.mkdtemp(prefix="mutmut-hf-"))
    datasets.config.HF_DATASETS_CACHE = Path(CACHE[-1])


def pytest_unconfigure(config):
    shutil.rmtree(CACHE.pop(), ignore_errors=True)
'''


def build(work: Path, only: list[str]) -> list[str]:
    if work.exists():
        shutil.rmtree(work)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO / "radar_tasks", work / "radar_tasks", ignore=ignore)
    shutil.copytree(REPO / "metrics", work / "radar_tasks" / "metrics", ignore=ignore)
    shutil.copytree(REPO / "task_yamls", work / "radar_tasks" / "task_yamls", ignore=ignore)
    shutil.copytree(REPO / "tests", work / "tests", ignore=ignore)
    shutil.copy(REPO / "README.md", work / "README.md")  # tests/test_taxonomy.py reads it
    tests = [f"tests/{t}" for t in TESTS if (REPO / "tests" / t).is_file()]
    (work / "_mutation_plugin.py").write_text(PLUGIN)
    (work / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [tool.mutmut]
        source_paths = ["radar_tasks/"]
        only_mutate = {json.dumps(only)}
        also_copy = ["_mutation_plugin.py", "README.md"]
        pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "_mutation_plugin", "-m", "not slow", "-W", "ignore"]
        pytest_add_cli_args_test_selection = {json.dumps(tests)}
        use_git_change_detection = false

        [tool.pytest.ini_options]
        markers = ["slow: runs lmms-eval end to end"]
        """)
    )
    return tests


def counts_per_file(work: Path) -> dict[str, dict[str, int]]:
    """file -> {status: mutants} from mutmut's result files (killed, survived, no tests, timeout, ...)."""
    from collections import Counter

    from mutmut.stats import status_by_exit_code

    out = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            name = str(meta.relative_to(work / "mutants"))[: -len(".meta")]
            out[name] = dict(Counter(status_by_exit_code[c] for c in codes.values()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp") / f"radar-tasks-mutation-{os.getpid()}")
    parser.add_argument("--minutes", type=float, default=20.0, help="stop mutmut after this long")
    parser.add_argument("--children", type=int, default=2, help="mutants tested in parallel")
    parser.add_argument("--only", nargs="*", default=MUTATED, help="glob patterns of the files to mutate")
    args = parser.parse_args(argv)

    tests = build(args.work, args.only)
    print(f"scratch copy: {args.work}\ntests: {' '.join(tests)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    mutmut = [sys.executable, "-m", "mutmut"]
    log = open(args.work / "mutmut.log", "w")  # noqa: SIM115 (closed on every path below) mutmut draws a spinner
    proc = subprocess.Popen(
        [*mutmut, "run", "--max-children", str(args.children)],
        cwd=args.work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        if proc.wait(timeout=args.minutes * 60) != 0:
            log.close()
            tail = (args.work / "mutmut.log").read_text(errors="replace")[-3000:]
            print(f"mutmut failed (exit {proc.returncode}); the end of {args.work / 'mutmut.log'}:\n{tail}")
            return 1
    except subprocess.TimeoutExpired:
        print(f"\nstopping mutmut after {args.minutes} min (the mutants not reached are not counted)", flush=True)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=args.work, env=env, check=True, capture_output=True)
    stats = json.loads((args.work / "mutants" / "mutmut-cicd-stats.json").read_text())
    if not stats["total"]:
        print(f"mutmut tested nothing: see {args.work / 'mutmut.log'}")
        return 1
    print(json.dumps(stats, indent=1))
    for name, counts in counts_per_file(args.work).items():
        print(f"{name:36s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    listed = subprocess.run([*mutmut, "results"], cwd=args.work, env=env, capture_output=True, text=True).stdout
    names = [line.split(":")[0].strip() for line in listed.splitlines() if line.strip().endswith(": survived")]
    with open(args.work / "survivors.txt", "w") as out:
        for name in names:
            shown = subprocess.run([*mutmut, "show", name], cwd=args.work, env=env, capture_output=True, text=True)
            out.write(f"# {name}\n{shown.stdout}\n")
    print(f"{len(names)} survivors: {args.work / 'survivors.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
