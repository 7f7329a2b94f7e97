"""The error types of bad input: each message is a single line naming where the problem is and what it is.

`InputError` is what a run refuses to start with (bad data, bad arguments): the lmms-eval CLI prints its message as
one line and exits non-zero (`radar_tasks.tasks.plugin`); `radar-tasks` commands do the same.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input given to a run: one line, no traceback needed to understand it."""


class M3BenchError(InputError):
    """Bad M3-Bench data: the file, the item id and what is wrong."""

    def __init__(self, problem: str, file: str | None = None, item: str | None = None):
        self.problem, self.file, self.item = problem, file, item
        where = ": ".join(x for x in (file, f"item {item!r}" if item is not None else None) if x)
        super().__init__(one_line(f"{where}: {problem}" if where else problem))


class CategoryFileMissing(M3BenchError):
    """The subset folder exists but holds no json file for a category the task list knows."""


class ArgumentError(InputError):
    """A model arg or command-line argument with a value it cannot take (the message lists the valid ones)."""


def one_line(text: str, limit: int = 2000) -> str:
    """`text` on one line (newlines shown as `\\n`), cut to `limit` characters: messages quote user data."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cause_of(exc: BaseException | None, kind: type[BaseException] = InputError):
    """The `kind` error behind `exc` (itself, its causes, or the last attempt of a tenacity retry), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kind):
            return exc
        attempt = getattr(exc, "last_attempt", None)
        inner = attempt.exception() if attempt is not None and hasattr(attempt, "exception") else None
        exc = inner or exc.__cause__ or exc.__context__
    return None
