"""Warnings said once per process, inside `per_process()` blocks (the in-loop evaluator's calls).

A training job evaluates the same data every N steps: each problem (an item not scored, a prefix-sharing fallback,
a setting that does not act) belongs once in its log, not once per evaluation. Outside such a block (the CLI, a
sweep: one run per checkpoint, each with its own log) every run says its warnings, under its callers' own
once-per-run rules.
"""

from __future__ import annotations

import contextlib

from loguru import logger

_said: set[str] = set()  # messages said inside `per_process` blocks
_active = 0  # `per_process` blocks open


@contextlib.contextmanager
def per_process():
    """Inside, a warning whose message was said before (inside such a block) in this process is not said again."""
    global _active
    _active += 1
    try:
        yield
    finally:
        _active -= 1


def warning(message: str) -> None:
    """A loguru WARNING (attributed to the caller), unless said before inside a `per_process` block."""
    if _active:
        if message in _said:
            return
        _said.add(message)
    logger.opt(depth=1).warning(message)
