"""The checkpoints of a training run, as a sweep finds them: folders in training order, their steps and tokens seen,
and whether their weights are completely written.

* **order**: the training step parsed from the folder name (`step_1000`, `step-1000`, `checkpoint-1000`,
  `iter_0001000`, `global_step1000`, a trailing number) or given by a manifest (the report's YAML/CSV format:
  `run` = the checkpoint folder, labels step, tokens, ...); tokens seen come from the manifest or the checkpoint's
  `trainer_state.json` (`num_input_tokens_seen`);
* **completeness**: a checkpoint still being written is not evaluated: safetensors files must hold the bytes their
  header declares, a sharded checkpoint every shard its index (or its `-of-N` names) lists (`weights_problem`);
* **identity**: `weights_stamp`, a digest of the folder's file names, sizes and times: other weights in the same
  folder are another checkpoint.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from radar_tasks.analysis.runs import RunError, load_manifest, parse_number

_STEP = re.compile(r"(?:global_step|checkpoint|step|iter)[_-]?(\d+)$|(\d+)$", re.IGNORECASE)
_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.safetensors$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")  # a Trainer's other files


class CheckpointError(ValueError):
    """Bad checkpoint input (one line naming the folder or manifest and what is wrong)."""


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


def is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


# ------------------------------------------------------------------------------------------------ completeness


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
    weights = [n for n in files if n.endswith(WEIGHT_SUFFIXES) and n not in NOT_WEIGHTS]
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


# ----------------------------------------------------------------------------------------------- order, labels


def tokens_seen(folder: Path) -> int | None:
    """`num_input_tokens_seen` of a transformers Trainer checkpoint (`trainer_state.json`), when it counted them."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    value = state.get("num_input_tokens_seen") if isinstance(state, dict) else None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def manifest_labels(manifest: str | os.PathLike | None) -> dict[Path, dict]:
    """Checkpoint folder -> its labels in a manifest (the report's format, `run` = the checkpoint folder)."""
    if manifest is None:
        return {}
    try:
        entries = load_manifest(manifest)
    except RunError as exc:
        raise CheckpointError(str(exc)) from None
    if any("run" not in e for e in entries):
        raise CheckpointError(f"{manifest}: every entry needs `run`: the checkpoint folder it labels")
    return {Path(e["run"]).resolve(): {k: v for k, v in e.items() if k != "run"} for e in entries}


def list_checkpoints(
    targets: Sequence[str | os.PathLike], manifest: str | os.PathLike | None = None
) -> list[Checkpoint]:
    """The checkpoint folders of `targets` (folders or glob patterns; none: the manifest's `run` entries), with
    their steps and labels, in training order. CheckpointError on a target that is no folder, two checkpoints of
    one name, or steps that are known for some checkpoints only."""
    labels = manifest_labels(manifest)
    targets = [str(t) for t in targets] or [str(p) for p in labels]
    if not targets:
        raise CheckpointError("no checkpoints: give checkpoint folders (globs work) or a manifest naming them")
    folders: list[Path] = []
    for target in targets:
        if is_pattern(target):
            found = sorted(p for p in map(Path, glob.glob(os.path.expanduser(target))) if p.is_dir())
        else:
            p = Path(target).expanduser()
            if not p.is_dir():
                raise CheckpointError(f"{p}: not a checkpoint folder")
            found = [p]
        folders += [f.resolve() for f in found if f.resolve() not in folders]
    names: dict[str, Path] = {}
    checkpoints = []
    for folder in folders:
        if folder.name in names:
            raise CheckpointError(
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
        raise CheckpointError(
            f"no training step in the folder name of {', '.join(missing[:3])}: name it step_<N> "
            "(or checkpoint-<N>, iter_<N>, ...) or give its step in a --manifest"
        )
    if with_step:
        checkpoints.sort(key=lambda c: (c.step, c.name))
    return checkpoints
