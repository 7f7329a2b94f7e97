"""Writing a whole folder at once: into a hidden sibling, renamed over the target when everything is written.

A reader never sees a half-written folder, and a failure (or Ctrl-C) leaves the target as it was. Used by every
command that writes a folder tree: `make-fixture`, `export-dataset`, `export-tasks`, the benchmarks' synthetic data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
    succeeds, and is removed when it does not. The caller decides beforehand whether `out` may be replaced."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        # mkdtemp makes the folder private (0700); the result gets the mode a plain mkdir would give it
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
