"""`radar-tasks sweep`: evaluate the checkpoints of a training run with lmms-eval and `radar_hf`, one after the other.

`sweep(checkpoints, tasks, out_dir, ...)`:

* **order**: checkpoints are folders (or glob patterns), ordered by the training step parsed from the folder name
  (`step_1000`, `step-1000`, `checkpoint-1000`, `iter_0001000`, `global_step1000`, a trailing number) or given by a
  manifest (the report's YAML/CSV format: `run` = the checkpoint folder, labels step, tokens, ...); tokens seen come
  from the manifest or the checkpoint's `trainer_state.json` (`num_input_tokens_seen`);
* **evaluation**: lmms-eval's CLI entry point in this process (`runner.run_in_process`: lmms-eval is imported once,
  the records are read once and then come from the `datasets` cache), into `out_dir/runs/<checkpoint name>/`;
* **resume**: a checkpoint folder is first evaluated into a hidden `.<name>.partial-<host>-<pid>` sibling, which is
  renamed to `<name>` only once its results JSON and `sweep.json` (what was evaluated: tasks, model args, limit,
  data fingerprint, weights stamp) are written. A later sweep skips a checkpoint whose `sweep.json` matches;
  partial folders of dead processes are removed, so an interrupted checkpoint is redone, never half counted;
* **shards**: `shard=(i, n)` takes every n-th checkpoint in step order, starting at the i-th (1-based): the n shards
  cover every checkpoint exactly once (each process lists all checkpoints, then keeps its share);
* **watch**: keep listing the checkpoint patterns (a folder given as `.../step_1000` is watched as `.../step_*`),
  evaluate each new checkpoint once its weights are completely written (`weights_complete`), stop after `watch`
  seconds without a new checkpoint;
* **report**: after each evaluated checkpoint, `out_dir/report/` is rewritten (`analysis.write_report`, every
  checkpoint with results, labels step / tokens / series) and swapped in whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from radar_tasks.staging import swap_in

SWEEP_FILE = "sweep.json"
REPORT_INPUTS = ".sweep-inputs.json"  # in the report folder: the runs and labels it was written from
SWEEP_VERSION = 1
_STEP = re.compile(r"(?:global_step|checkpoint|step|iter)[_-]?(\d+)$|(\d+)$", re.IGNORECASE)
_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.safetensors$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


class SweepError(ValueError):
    """Bad sweep input (one line naming the folder or file and what is wrong)."""


# ------------------------------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    path: Path
    step: int | None = None
    labels: dict = field(default_factory=dict)  # report labels: tokens, label, series, model, size, strategy

    @property
    def name(self) -> str:
        return self.path.name


def parse_step(name: str) -> int | None:
    """The training step in a checkpoint folder name (`step_1000`, `checkpoint-1000`, `iter_0001000`,
    `global_step1000`, `epoch3-1000`, ...: a trailing number); None when the name ends in no number."""
    m = _STEP.search(name)
    return int(m.group(1) or m.group(2)) if m else None


def watch_pattern(path: Path) -> str:
    """The glob that finds later checkpoints of the same run: the trailing number of the name replaced by `*`."""
    stem = re.sub(r"\d+$", "*", path.name)
    return str(path.parent / stem) if stem != path.name else str(path)


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not completely written (its header declares more bytes than it holds), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name}: {size} bytes, no header yet"
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                return f"{path.name}: header of {n} bytes, file of {size}"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        return f"{path.name}: unreadable ({exc})"
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{path.name}: {size} of {8 + n + end} bytes written"
    return None


def weights_problem(folder: Path) -> str | None:
    """Why the weights of a checkpoint folder are not completely written, or None when they are.

    safetensors files are checked exactly (the header names the byte length of the data); a sharded checkpoint
    needs its index and every shard it names (or, before the index is written, every `-of-N` shard); `.bin` and
    other formats are taken as complete when their index names only files that exist.
    """
    if not (folder / "config.json").is_file():
        return "no config.json"
    files = {p.name: p for p in folder.iterdir() if p.is_file()}
    indexes = [p for n, p in files.items() if n.endswith(".index.json")]
    needed: set[str] = set()
    for index in indexes:
        try:
            needed |= set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{index.name}: unreadable ({exc})"
    for name in files:
        m = _SHARD_NAME.search(name)
        if m:
            needed |= {
                _SHARD_NAME.sub(f"-{i:05d}-of-{m.group(2)}.safetensors", name) for i in range(1, int(m.group(2)) + 1)
            }
    weights = [
        n
        for n in files
        if n.endswith(WEIGHT_SUFFIXES)
        and n not in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")
    ]
    if not weights and not needed:
        return "no weight files"
    missing = sorted(needed - set(files))
    if missing:
        return f"{missing[0]} not written yet ({len(missing)} of {len(needed)} shards missing)"
    for name in sorted(set(weights) | needed):
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(files[name])
            if problem:
                return problem
    return None


def weights_stamp(folder: Path) -> str:
    """A digest of the names, sizes and modification times of the files of a checkpoint folder: a folder
    overwritten with other weights gets another stamp (its old results are not reused)."""
    digest = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            st = p.stat()
            digest.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def tokens_seen(folder: Path) -> int | None:
    """`num_input_tokens_seen` of a transformers Trainer checkpoint (`trainer_state.json`), when it counted them."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    value = state.get("num_input_tokens_seen") if isinstance(state, dict) else None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _manifest_entries(manifest: str | os.PathLike | None) -> dict[Path, dict]:
    if manifest is None:
        return {}
    from radar_tasks.analysis.runs import RunError, load_manifest

    try:
        entries = load_manifest(manifest)
    except RunError as exc:
        raise SweepError(str(exc)) from None
    if any("run" not in e for e in entries):
        raise SweepError(f"{manifest}: every entry needs `run`: the checkpoint folder it labels")
    return {Path(e["run"]).resolve(): {k: v for k, v in e.items() if k != "run"} for e in entries}


def list_checkpoints(
    targets: Sequence[str | os.PathLike], manifest: str | os.PathLike | None = None
) -> list[Checkpoint]:
    """The checkpoint folders of `targets` (folders or glob patterns; none: the manifest's `run` entries), with
    their steps and labels, in training order. SweepError on a target that is no folder, two checkpoints of one
    name, or steps that are known for some checkpoints only."""
    from radar_tasks.analysis.runs import parse_number

    labels = _manifest_entries(manifest)
    targets = [str(t) for t in targets] or [str(p) for p in labels]
    if not targets:
        raise SweepError("no checkpoints: give checkpoint folders (globs work) or a manifest naming them")
    folders: list[Path] = []
    for target in targets:
        if _is_pattern(target):
            found = sorted(p for p in map(Path, _glob(target)) if p.is_dir())
        else:
            p = Path(target).expanduser()
            if not p.is_dir():
                raise SweepError(f"{p}: not a checkpoint folder")
            found = [p]
        folders += [f.resolve() for f in found if f.resolve() not in folders]
    names: dict[str, Path] = {}
    checkpoints = []
    for folder in folders:
        if folder.name in names:
            raise SweepError(
                f"two checkpoints named {folder.name}: {names[folder.name]} and {folder}; "
                "sweep them into different --out folders"
            )
        names[folder.name] = folder
        entry = dict(labels.get(folder, {}))
        step = entry.pop("step", None)
        step = int(parse_number(step)) if step not in (None, "") else parse_step(folder.name)
        if "tokens" not in entry:
            tokens = tokens_seen(folder)
            if tokens is not None:
                entry["tokens"] = tokens
        entry.setdefault("series", folder.parent.name)
        checkpoints.append(Checkpoint(folder, step, entry))
    with_step = [c for c in checkpoints if c.step is not None]
    if with_step and len(with_step) != len(checkpoints):
        missing = [c.name for c in checkpoints if c.step is None]
        raise SweepError(
            f"no training step in the folder name of {', '.join(missing[:3])}: name it step_<N> "
            "(or checkpoint-<N>, iter_<N>, ...) or give its step in a --manifest"
        )
    if with_step:
        checkpoints.sort(key=lambda c: (c.step, c.name))
    return checkpoints


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(os.path.expanduser(pattern))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"I/N"` (1 <= I <= N) -> (I, N); None for None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise SweepError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
    return int(m.group(1)), int(m.group(2))


def share(checkpoints: Sequence[Checkpoint], shard: tuple[int, int] | None) -> list[Checkpoint]:
    """The checkpoints of shard (i, n): positions i-1, i-1+n, ... of the training order. Positions stay put
    while new checkpoints come with larger steps (watch), so a checkpoint never changes shard."""
    if shard is None:
        return list(checkpoints)
    i, n = shard
    return [c for k, c in enumerate(checkpoints) if k % n == i - 1]


# ----------------------------------------------------------------------------------------------------- resume


def task_subsets(tasks: Sequence[str]) -> list[str]:
    """The M3-Bench subsets that `tasks` (leaf or group names) read: what the data fingerprint covers."""
    from radar_tasks.task_yamls import generate_tasks as G
    from radar_tasks.tasks.plugin import TASK_DIR

    index = json.loads((Path(TASK_DIR) / G.INDEX_FILE).read_text())
    groups = G.all_groups()
    found: set[str] = set()

    def visit(name: str) -> None:
        if name in index:
            found.update(row["subset"] for row in index[name])
        for member in groups.get(name, ()):
            visit(member)

    for task in tasks:
        visit(task)
    from radar_tasks import taxonomy

    return sorted(found, key=taxonomy.subset_order)


def normalize_model_args(model_args: str) -> str:
    """`k=v,...` sorted by key (the same args in another order are the same run); `pretrained` is refused."""
    pairs = [p.strip() for p in (model_args or "").split(",") if p.strip()]
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SweepError(f"--model_args: {pair!r} is not key=value")
        if key.strip() == "pretrained":
            raise SweepError("--model_args: leave out pretrained (each checkpoint folder is the pretrained path)")
        parsed[key.strip()] = value.strip()
    return ",".join(f"{k}={parsed[k]}" for k in sorted(parsed))


def run_key(tasks: Sequence[str], model_args: str, limit: float | None, fingerprint: str) -> dict:
    """What makes two evaluations of one checkpoint the same run (the checkpoint's weights stamp is added)."""
    return {
        "version": SWEEP_VERSION,
        "tasks": sorted(set(tasks)),
        "model_args": model_args,
        "limit": limit,
        "data": fingerprint,
    }


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finished(run_dir: Path, key: Mapping, stamp: str, log_samples: bool) -> Path | None:
    """The results JSON of a complete earlier evaluation into `run_dir` of the same key and weights (with per-item
    logs when `log_samples` asks for them), or None."""
    meta = _read_json(run_dir / SWEEP_FILE)
    if not meta or meta.get("key") != dict(key) or meta.get("weights") != stamp:
        return None
    if log_samples and not meta.get("log_samples"):
        return None
    results = run_dir / str(meta.get("results", ""))
    data = _read_json(results) if results.is_file() else None
    if not data:
        return None
    entries = {**(data.get("groups") or {}), **(data.get("results") or {})}
    return results if all(t in entries for t in key["tasks"]) else None


def _partial_name(name: str) -> str:
    return f".{name}.partial-{socket.gethostname()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_partials(runs_dir: Path) -> list[Path]:
    """Remove the partial folders that processes of this host left behind when they died; returns them."""
    host = socket.gethostname()
    removed = []
    for p in runs_dir.glob(".*.partial-*") if runs_dir.is_dir() else ():
        owner = p.name.rsplit(".partial-", 1)[1]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# ----------------------------------------------------------------------------------------------------- the sweep


@dataclass
class Outcome:
    checkpoint: Checkpoint
    status: str  # evaluated | skipped | failed | incomplete
    seconds: float = 0.0
    results: Path | None = None
    message: str = ""


@dataclass
class SweepResult:
    outcomes: list[Outcome]
    report: Path | None

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in ("failed", "incomplete")]


def headline(results: Path, tasks: Sequence[str]) -> str:
    """`radar_mmm SDS 0.xxx` (or the first task's) from a results JSON."""
    data = _read_json(results) or {}
    entries = {**(data.get("groups") or {}), **(data.get("results") or {})}
    for task in ["radar_mmm", *tasks]:
        value = (entries.get(task) or {}).get("sds,none")
        if isinstance(value, (int, float)) and math.isfinite(value):
            return f"{task} SDS {value:.4f}"
    return ""


def evaluate_checkpoint(
    checkpoint: Path,
    tasks: str,
    output_path: Path,
    data_dir: Path,
    *,
    model_args: str,
    batch_size: str | None,
    limit: float | None,
    log_samples: bool,
    threads: int | None = None,
) -> Path:
    """One checkpoint through lmms-eval's CLI entry point, in this process; returns its results JSON."""
    from radar_tasks import runner

    args = ",".join(x for x in (f"pretrained={checkpoint}", model_args) if x)
    extra = [
        *(["--batch_size", str(batch_size)] if batch_size is not None else []),
        *(["--limit", f"{limit:g}"] if limit is not None else []),
    ]
    return runner.run_in_process(args, tasks, output_path, data_dir, extra, log_samples=log_samples, threads=threads)


class _Progress:
    """One line per checkpoint and a bar over the checkpoints (tqdm, on stderr)."""

    def __init__(self, print_fn: Callable[[str], None] | None):
        self.print_fn = print_fn
        self.bar = None
        if print_fn is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="checkpoint", desc="sweep", file=sys.stderr, dynamic_ncols=True)

    def total(self, n: int) -> None:
        if self.bar is not None and self.bar.total != n:
            self.bar.total = n
            self.bar.refresh()

    def line(self, text: str, advance: bool = False) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
            if advance:
                self.bar.update(1)
        else:
            self.print_fn(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def refresh_report(out_dir: Path, done: Sequence[tuple[Checkpoint, Path]]) -> Path | None:
    """Rewrite `out_dir/report/` from the checkpoints with results (in training order), unless it was already
    written from exactly these runs and labels; written into a hidden sibling and swapped in whole."""
    if not done:
        return None
    report_dir = out_dir / "report"
    labels = [{"label": c.name, **({"step": c.step} if c.step is not None else {}), **c.labels} for c, _ in done]
    inputs = {"runs": [str(r) for _, r in done], "labels": labels}
    if (report_dir / "report.md").is_file() and _read_json(report_dir / REPORT_INPUTS) == inputs:
        return report_dir / "report.md"
    from radar_tasks.analysis import write_report

    tmp = out_dir / f".report.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_report([r for _, r in done], tmp, labels=labels)
    (tmp / REPORT_INPUTS).write_text(json.dumps(inputs, indent=1) + "\n", encoding="utf-8")
    swap_in(tmp, report_dir)
    return report_dir / "report.md"


def sweep(
    checkpoints: Sequence[str | os.PathLike],
    tasks: str | Sequence[str],
    out_dir: str | os.PathLike,
    *,
    model_args: str = "",
    batch_size: str | int | None = None,
    limit: float | None = None,
    log_samples: bool = False,
    shard: str | tuple[int, int] | None = None,
    watch: float | None = None,
    manifest: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    poll: float = 30.0,
    threads: int | None = None,
    report: bool = True,
    print_fn: Callable[[str], None] | None = None,
    evaluate_fn: Callable[..., Path] = evaluate_checkpoint,
) -> SweepResult:
    """Evaluate, resume, shard and watch (module docstring). `print_fn`: where the per-checkpoint lines go (None:
    stdout, with a progress bar on stderr). `report`: refresh `out_dir/report/`. `evaluate_fn(checkpoint, tasks,
    output_path, data_dir, **options)` evaluates one checkpoint into `output_path` and returns its results JSON
    (default: lmms-eval in process)."""
    from radar_tasks.data import m3bench

    task_list = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not task_list:
        raise SweepError("--tasks: no task given")
    shard = parse_shard(shard) if isinstance(shard, (str, type(None))) else shard
    model_args = normalize_model_args(model_args)
    root = m3bench.resolve_root(data_dir).absolute()
    key = run_key(task_list, model_args, limit, m3bench.data_fingerprint(root, task_subsets(task_list) or None))
    out = Path(out_dir).absolute()
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(runs_dir)
    patterns = [str(t) for t in checkpoints]
    if watch is not None:  # also find later checkpoints of the runs given as folders
        patterns += [watch_pattern(Path(t)) for t in checkpoints if not _is_pattern(str(t))]
        patterns = list(dict.fromkeys(patterns))
    options = {
        "model_args": model_args,
        "batch_size": batch_size,
        "limit": limit,
        "log_samples": log_samples,
        "threads": threads,
    }

    progress = _Progress(print_fn)
    report_on, report = report, None
    outcomes: list[Outcome] = []
    handled: set[str] = set()
    seen: set[str] = set()
    last_new = time.monotonic()
    try:
        while True:
            listed = list_checkpoints(patterns, manifest)
            if {c.name for c in listed} - seen:
                seen |= {c.name for c in listed}
                last_new = time.monotonic()
            mine = share(listed, shard)
            progress.total(len(mine))
            pending = [c for c in mine if c.name not in handled]
            evaluated_any = False
            for c in pending:
                problem = weights_problem(c.path)
                if problem is not None:
                    if watch is None:  # nothing will finish writing it: say so, and count it as not done
                        handled.add(c.name)
                        outcomes.append(Outcome(c, "incomplete", message=problem))
                        progress.line(f"{c.name}: weights not completely written ({problem}): not evaluated", True)
                    continue
                handled.add(c.name)
                outcome = _one(c, key, task_list, runs_dir, root, options, evaluate_fn)
                outcomes.append(outcome)
                position = f"[{len(handled)}/{len(mine)}]"
                if outcome.status == "skipped":
                    progress.line(
                        f"{position} {c.name}: skipped, complete results for these tasks, model args and "
                        f"data ({headline(outcome.results, task_list)})",
                        True,
                    )
                elif outcome.status == "failed":
                    progress.line(f"{position} {c.name}: FAILED after {outcome.seconds:.1f} s: {outcome.message}", True)
                else:
                    evaluated_any = True
                    if report_on:
                        report = refresh_report(out, _done(listed, runs_dir, key, log_samples)) or report
                    progress.line(
                        f"{position} {c.name}: evaluated in {outcome.seconds:.1f} s, "
                        f"{headline(outcome.results, task_list)}",
                        True,
                    )
            if watch is None:
                break
            if evaluated_any:  # the wait for a new checkpoint starts when the work is done
                last_new = time.monotonic()
            if not evaluated_any:
                idle = time.monotonic() - last_new
                if idle >= watch:
                    progress.line(f"no new checkpoint for {idle:.0f} s: stopping")
                    for c in mine:
                        if c.name not in handled:
                            problem = weights_problem(c.path)
                            outcomes.append(Outcome(c, "incomplete", message=problem or "appeared at the end"))
                            progress.line(f"{c.name}: weights not completely written ({problem}): not evaluated")
                    break
                time.sleep(max(0.0, min(poll, watch - idle)))
        if report_on:
            report = refresh_report(out, _done(listed, runs_dir, key, log_samples)) or report
    finally:
        progress.close()
    return SweepResult(outcomes, report)


def _done(
    listed: Sequence[Checkpoint], runs_dir: Path, key: Mapping, log_samples: bool
) -> list[tuple[Checkpoint, Path]]:
    """Every listed checkpoint (all shards) with complete results of this key, in training order."""
    done = []
    for c in listed:
        results = finished(runs_dir / c.name, key, weights_stamp(c.path), log_samples) if c.path.is_dir() else None
        if results is not None:
            done.append((c, results))
    return done


def _one(
    c: Checkpoint, key: Mapping, tasks: Sequence[str], runs_dir: Path, root: Path, options: dict, evaluate_fn
) -> Outcome:
    """Skip or evaluate one checkpoint; results land in `runs_dir/<name>/` whole or not at all."""
    final = runs_dir / c.name
    stamp = weights_stamp(c.path)
    results = finished(final, key, stamp, options["log_samples"])
    if results is not None:
        return Outcome(c, "skipped", results=results)
    partial = runs_dir / _partial_name(c.name)
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.monotonic()
    try:
        produced = evaluate_fn(c.path, ",".join(tasks), partial, root, **options)
    except Exception as exc:  # one bad checkpoint does not stop a sweep of fifty; its partial folder goes
        shutil.rmtree(partial, ignore_errors=True)
        return Outcome(
            c, "failed", time.monotonic() - t0, message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        )
    seconds = time.monotonic() - t0
    meta = {
        "key": dict(key),
        "weights": stamp,
        "log_samples": bool(options["log_samples"]),
        "results": str(Path(produced).resolve().relative_to(partial.resolve())),
        "checkpoint": str(c.path),
        "step": c.step,
        "labels": c.labels,
        "seconds": round(seconds, 1),
    }
    (partial / SWEEP_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    if weights_stamp(c.path) != stamp:  # the folder changed while it was evaluated: these are not its results
        shutil.rmtree(partial, ignore_errors=True)
        return Outcome(c, "failed", seconds, message="the checkpoint folder changed during its evaluation")
    swap_in(partial, final)
    return Outcome(c, "evaluated", seconds, results=final / meta["results"])


def run_cli(args) -> int:
    """`radar-tasks sweep` (parsed arguments): exit 0 when every checkpoint has results, 1 otherwise, 2 on bad input."""
    from radar_tasks.errors import M3BenchError

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
            watch=args.watch,
            manifest=args.manifest,
            data_dir=args.data,
            poll=args.poll,
        )
    except (SweepError, M3BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {s: sum(o.status == s for o in result.outcomes) for s in ("evaluated", "skipped", "failed", "incomplete")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no checkpoint in this shard")
    if result.report:
        print(f"report: {result.report}")
    for o in result.failed:
        print(f"error: {o.checkpoint.path}: {o.message}", file=sys.stderr)
    return 1 if result.failed else 0
