"""The one error type of bad M3-Bench input: a single line naming the file, the item id and what is wrong."""

from __future__ import annotations


class M3BenchError(ValueError):
    def __init__(self, problem: str, file: str | None = None, item: str | None = None):
        self.problem, self.file, self.item = problem, file, item
        where = ": ".join(x for x in (file, f"item {item!r}" if item is not None else None) if x)
        super().__init__(f"{where}: {problem}" if where else problem)


class CategoryFileMissing(M3BenchError):
    """The subset folder exists but holds no json file for a category the task list knows."""
