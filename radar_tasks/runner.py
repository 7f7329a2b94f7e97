"""Running lmms-eval with `radar_hf` from Python: in this process (no second start-up) or as a subprocess.

Used by the demo, the checkpoint series and the sweep. Both ways run lmms-eval's own CLI entry point with the same
arguments, so the output folder is exactly what `lmms-eval ... --output_path` writes. lmms-eval's CLI exits 0
when the evaluation fails; these functions look for the results JSON and raise when there is none.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from radar_tasks.results import find_results


class RunFailed(RuntimeError):
    """lmms-eval wrote no results (the message ends with the tail of its log). `log`: the run's log file (or
    None); `cause`: the first cause found in it, one line (`log_cause`), or None."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log
        self.cause = log_cause(log) if log is not None else None


# A Python exception line of a traceback: `json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)`
_EXCEPTION = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failure|Warning)|[A-Za-z_][\w.]*Error\w*):(.*)$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"\|\s*ERROR\s*\|.*? - (.*)$")  # loguru's ERROR lines (lmms-eval's log format)


def describe_failure(exc: BaseException) -> str:
    """One line saying why an evaluation failed: a `RunFailed`'s cause from its log (`log_cause`), else the
    exception's type and the first line of its message."""
    if isinstance(exc, RunFailed):
        if exc.cause:
            return exc.cause
        lines = []
        if exc.log is not None:
            with contextlib.suppress(OSError):
                lines = [
                    x for x in Path(exc.log).read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()
                ]
        return "lmms-eval wrote no results" + (
            f"; the last line of its log: {_ANSI.sub('', lines[-1]).strip()}" if lines else ""
        )
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def log_cause(log: str | os.PathLike) -> str | None:
    """Why a run failed, one line, from its log: radar_tasks' `error: ...` line; else the exception of the last
    traceback (`Type: message`, the message's first line) with the root of its chain (`(caused by Type: message)`:
    a chained traceback prints its root first; e.g. the JSONDecodeError, with its line and column, under
    transformers' "not a valid JSON file"); else the last ERROR line; else None."""
    try:
        lines = [_ANSI.sub("", line) for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: ") :].strip()
    # tracebacks: a chain is printed root first, its parts joined by "During handling..." / "The above exception..."
    chains: list[list[str]] = []
    in_traceback, joined = False, False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            if not joined:
                chains.append([])
            joined = False
            continue
        if in_traceback and not line.startswith((" ", "\t")) and line.strip():
            in_traceback = False
            m = _EXCEPTION.match(line)
            if m and chains:
                name = m.group(1).rsplit(".", 1)[-1]
                chains[-1].append(f"{name}: {m.group(2).strip()}" if m.group(2).strip() else name)
            continue
        if line.startswith(("During handling of the above exception", "The above exception was the direct cause")):
            joined = True
    found = [chain for chain in chains if chain]
    if found:
        chain = found[-1]
        return chain[-1] if len(chain) == 1 else f"{chain[-1]} (caused by {chain[0]})"
    logged = [m.group(1).strip() for m in map(_ERROR_LINE.search, lines) if m]
    return logged[-1] if logged else None


def lmms_eval_args(
    model_args: str,
    tasks: str,
    output_path: str | os.PathLike,
    extra: Sequence[str] = (),
    log_samples: bool = True,
    model: str = "radar_hf",
) -> list[str]:
    """The lmms-eval CLI arguments of a run of `model` (radar_hf unless given; per-item logs unless `log_samples` is
    false)."""
    return [
        "--model",
        model,
        "--model_args",
        model_args,
        "--tasks",
        tasks,
        "--output_path",
        str(output_path),
        *(["--log_samples"] if log_samples else []),
        *extra,
    ]


def lmms_eval_env(data_dir: str | os.PathLike) -> dict[str, str]:
    """Environment of such a run: the data root, and no hub access."""
    return {"RADAR_M3BENCH_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def results_json(output_path: str | os.PathLike) -> Path:
    """Newest `*_results.json` under an lmms-eval --output_path (FileNotFoundError when the evaluation wrote none)."""
    found = find_results(output_path)
    if not found:
        raise FileNotFoundError(f"no *_results.json under {output_path}: the evaluation failed (see its log)")
    return found[-1]


@contextlib.contextmanager
def environment(**values: str):
    """`os.environ` with `values` set, restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_subprocess(
    model_args: str,
    tasks: str,
    output_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    extra: Sequence[str] = (),
    *,
    log: str | os.PathLike | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """`python -m lmms_eval ...` in a subprocess; returns its results JSON (RunFailed when it wrote none).

    Its output goes to this terminal, or with `log` to that file; `on_progress(done, total)` is then called as
    radar_hf's progress bar (questions scored) moves.
    """
    cmd = [sys.executable, "-m", "lmms_eval", *lmms_eval_args(model_args, tasks, output_path, extra)]
    env = {**os.environ, **lmms_eval_env(data_dir)}
    if log is None:
        print("$ " + " ".join(cmd), flush=True)
        code = subprocess.run(cmd, env=env).returncode
    else:
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(0.5)
                if on_progress:
                    found = _last_progress(log)
                    if found:
                        on_progress(*found)
            code = proc.returncode
    try:
        return results_json(output_path)
    except FileNotFoundError:
        where = f" (log: {log})" if log is not None else ""
        tail = _error_lines(log) if log is not None else ""
        raise RunFailed(
            f"lmms-eval wrote no results into {output_path}, exit status {code}{where}{tail}", log
        ) from None


_PROGRESS = re.compile(r"radar_hf:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def _last_progress(log: Path) -> tuple[int, int] | None:
    """The last `done/total` of radar_hf's progress bar in a log."""
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 4096))
        tail = f.read().decode("utf-8", errors="replace")
    found = _PROGRESS.findall(tail)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _error_lines(log: Path) -> str:
    """The `error: ...` line of a failed run (radar_tasks' one-line errors), or the log's last lines."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    return ":\n" + "\n".join(errors[-1:] or lines[-15:])


def run_in_process(
    model_args: str,
    tasks: str,
    output_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    extra: Sequence[str] = (),
    *,
    threads: int | None = None,
    log_samples: bool = True,
) -> Path:
    """lmms-eval's CLI entry point (`lmms_eval.__main__.cli_evaluate`) in this process, its output going to
    `output_path/lmms_eval.log`; returns the results JSON. Saves the ~25 s of importing lmms-eval per run.
    `threads`: torch's intra-op threads during the run (restored afterwards). The task index is built once per
    process (`plugin.reuse_task_index`) and the model is freed afterwards: a sweep calls this once per checkpoint."""
    import torch

    output_path, data_dir = Path(output_path).absolute(), Path(data_dir).absolute()
    output_path.mkdir(parents=True, exist_ok=True)
    log = output_path / "lmms_eval.log"
    argv = ["lmms-eval", *lmms_eval_args(model_args, tasks, output_path, extra, log_samples)]
    old_threads, old_argv = torch.get_num_threads(), sys.argv
    with (
        environment(**lmms_eval_env(data_dir)),
        open(log, "w", encoding="utf-8") as f,
        contextlib.redirect_stdout(f),
        contextlib.redirect_stderr(f),
    ):
        print("$ " + " ".join(argv), flush=True)
        from lmms_eval.__main__ import cli_evaluate

        from radar_tasks.tasks.plugin import reuse_task_index

        reuse_task_index()  # the second and later runs of this process skip lmms-eval's task indexing

        sys.argv = argv  # cli_evaluate parses sys.argv, as the CLI does
        if threads:
            torch.set_num_threads(threads)
        try:
            cli_evaluate()
        except SystemExit as exc:
            if exc.code:
                raise RunFailed(f"lmms-eval exited with {exc.code}; see {log}", log) from None
        finally:
            sys.argv = old_argv
            torch.set_num_threads(old_threads)
            _restore_loguru()
            _free_memory()
    try:
        return results_json(output_path)
    except FileNotFoundError:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RunFailed(f"lmms-eval wrote no results into {output_path} (log: {log}):\n{tail}", log) from None


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _restore_loguru() -> None:
    """cli_evaluate points loguru at the (redirected) stdout; point it back at stderr."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
