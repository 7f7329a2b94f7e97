"""Writing a whole folder at once: into a hidden sibling, renamed over the target when everything is written.

A reader never sees a half-written folder, and a failure (or Ctrl-C) leaves the target as it was. Used by every
command that writes a folder tree: `make-fixture`, `export-dataset`, `export-tasks`, the benchmarks' synthetic data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """A hidden sibling folder of `out` to write into: it replaces `out` (whatever `out` held) when the block
    succeeds, and is removed when it does not. The caller decides beforehand whether `out` may be replaced
    (`replaceable`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        # mkdtemp makes the folder private (0700); the result gets the mode a plain mkdir would give it
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in(partial: Path, final: Path) -> None:
    """Rename `partial` to `final`, replacing an older `final` (never leaving neither)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{socket.gethostname()}-{os.getpid()}")
        os.rename(final, old)
    os.rename(partial, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replaceable(out: Path, marker_file: str, marker: str, head: int | None = None) -> bool:
    """`out` may be replaced by an export: absent, an empty folder, or an earlier export (its `marker_file`
    holds `marker`, within its first `head` characters when given)."""
    if not out.exists():
        return True
    if not out.is_dir():
        return False
    file = out / marker_file
    return not any(out.iterdir()) or (file.is_file() and marker in file.read_text(encoding="utf-8")[:head])
