"""Background preparation of questions: the host work of the next questions runs while the model scores these.

Per question the host has work to do before any forward: fetch the doc, decode and convert its images, build the
prompt, run the processor (tokenisation, pixel values) and tokenise every candidate (`SharedPrefixScorer.prepare`).
Done in turn with the model, it leaves an accelerator idle for that long per question. `QuestionPipeline` runs it
in worker processes (a torch `DataLoader` over the question indices, forked so that nothing is pickled on the way
in) with a bounded prefetch of one scoring window; the main process only scores, window by window, in the order
given. `num_workers=0` does everything in the main process, in turn: the reference, and for debugging.

Results do not depend on the number of workers: the windows, their batches and every number are the same (the
workers run the same deterministic code; tested bit-identical in float32). Errors in a worker reach the caller as
the same exception, at the same question, with the worker's traceback as a note; the workers end when the
iteration ends, fails or is interrupted (and on their own if the main process dies), so no process is left behind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import time
import traceback
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from radar_tasks.models.prefix_sharing import Question, SharedPrefixScorer

logger = logging.getLogger(__name__)

# `num_workers=auto`: this many at most ("a few": host work per question is milliseconds, and every worker is a
# forked copy of the main process, which holds the model)
AUTO_MAX_WORKERS = 8


# ----------------------------------------------------------------------------------------------------- workers
def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 `cpu.max`, else v1), None when unlimited or unknown."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def resolve_num_workers(value: int | str, processes: int = 1, *, device_type: str) -> int:
    """The `num_workers` model arg, as `models.args` checked it (`auto` or an integer >= 0), as a count. `auto` on an
    accelerator = the CPUs this process may use, shared among the `processes` evaluation processes of this machine
    (data parallel), less one for the process itself (it drives the model: launches, collation, lmms-eval's
    bookkeeping), at least 1 and at most `AUTO_MAX_WORKERS`. `auto` on a CPU device (`device_type` "cpu") = 0: the
    forwards already use every core through torch's intra-op threads, and a worker would only take cores from them
    (measured on a 2-core machine: one worker made a full-size run 26% slower, docs/speed.md)."""
    if value == "auto":
        if device_type == "cpu":
            return 0
        return max(1, min(AUTO_MAX_WORKERS, available_cpus() // max(1, processes) - 1))
    return int(value)


def can_fork() -> bool:
    """Workers are forked (they inherit the model, the processor and lmms-eval's docs, nothing is pickled)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


# ---------------------------------------------------------------------------------------------- ordered map
@dataclass
class _Done:
    value: Any
    seconds: float  # wall time of the call, in the process that ran it

    def pin_memory(self) -> _Done:  # torch's DataLoader pin thread (CUDA): the value's own pinning, if any
        if hasattr(self.value, "pin_memory"):
            self.value = self.value.pin_memory()
        return self


@dataclass
class _Failed:
    error: BaseException

    @classmethod
    def of(cls, error: Exception) -> _Failed:
        error.add_note(f"(in a background worker, pid {os.getpid()}:)\n{traceback.format_exc().rstrip()}")
        try:
            pickle.loads(pickle.dumps(error))  # some pickle, then fail to unpickle (another __init__ signature)
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}\n{error.__notes__[-1]}")
        return cls(error)


class _Calls(torch.utils.data.Dataset):
    """`fn(i)` for i in range(n), as a map-style dataset; a failure is returned, not raised (see `_Failed`)."""

    def __init__(self, fn: Callable[[int], Any], n: int):
        self.fn, self.n = fn, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        start = time.perf_counter()
        try:
            value = self.fn(i)
        except Exception as error:
            return _Failed.of(error)
        return _Done(value, time.perf_counter() - start)


def _as_is(item):
    return item


class OrderedMap:
    """`fn(0), fn(1), ...` computed ahead by `num_workers` forked processes, yielded in order as `(value, seconds)`;
    at most `depth` results wait (prefetch). A context manager: leaving it ends the workers, whatever happened.

        with OrderedMap(fn, n, num_workers=2, depth=32) as results:
            for value, seconds in results: ...
    """

    def __init__(self, fn: Callable[[int], Any], n: int, *, num_workers: int, depth: int, pin_memory=False):
        self.fn, self.n = fn, n
        self.num_workers = min(num_workers, n)
        self.depth = max(1, depth)
        self.pin_memory = pin_memory
        self._iterator = None

    def __enter__(self) -> Iterator[tuple[Any, float]]:
        if self.num_workers == 0:
            return self._in_turn()
        # a forked worker inherits the tokenizers' thread pool state: say once, here, that it is not used there
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = torch.utils.data.DataLoader(
            _Calls(self.fn, self.n),
            batch_size=None,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_as_is,
            pin_memory=self.pin_memory,
            multiprocessing_context="fork",
            prefetch_factor=math.ceil(self.depth / self.num_workers),
            generator=torch.Generator().manual_seed(0),  # its worker seeds, not drawn from the caller's global RNG
        )
        self._iterator = iter(loader)
        return self._from_workers()

    def __exit__(self, *exc) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            iterator._shutdown_workers()  # now, not when a traceback that refers to the iterator is freed

    def _in_turn(self):
        for i in range(self.n):
            start = time.perf_counter()
            value = self.fn(i)
            yield value, time.perf_counter() - start

    def _from_workers(self):
        for outcome in self._iterator:
            if isinstance(outcome, _Failed):
                raise outcome.error
            yield outcome.value, outcome.seconds


# ------------------------------------------------------------------------------------------------- questions
@dataclass
class Prepared:
    """One question as the workers hand it over: what the scorer needs, and the caller's own data of it."""

    index: int
    extra: Any  # the caller's data of the question (radar_hf: which candidates are scored, the continuations)
    tokenized: Any  # `SharedPrefixScorer.prepare`'s output; None: scored the per-candidate way
    question: Question | None  # the question itself, images included, when the scorer needs it (else reloaded)
    scored: bool = True  # False: `load` gave no question (not scored at all)

    def pin_memory(self) -> Prepared:
        if self.tokenized is not None:
            self.tokenized = self.tokenized.pin_memory()
        return self


def _nbytes(value) -> int:
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    return int(getattr(value, "nbytes", 0))  # numpy arrays (pickled by value); anything else: not counted


def prepared_bytes(prepared: Prepared) -> int:
    """The tensor bytes a kept `Prepared` holds: the prompt's processor outputs (pixel values, ids, grids) and
    every candidate's ids. Python objects around them (a few hundred bytes per question) are not counted."""
    tokenized = prepared.tokenized
    if tokenized is None:
        return 0
    return sum(_nbytes(v) for v in tokenized.encoding.values()) + sum(_nbytes(f) for f in tokenized.full_ids)


class PreparedCache:
    """Prepared questions kept across `QuestionPipeline` runs, by key, within `max_bytes` (`prepared_bytes`).

    What a question's preparation gives (its doc, images, prompt, processor outputs and candidate ids) depends on the
    data, the processor and the settings, never on the weights: the in-loop evaluator keeps one cache per model,
    processor and settings, and its later calls score kept questions without preparing them again. The question
    itself (its decoded images) is not kept: the rare question the scorer needs whole is loaded again.

    Evaluations ask for the same questions in the same order, so a least-recently-used policy would evict each
    entry just before its next use when the questions do not all fit: once full, a question is kept only in place
    of entries the latest run did not use (stale: data that changed), else not kept. `hits` and `misses` count
    lookups; `bytes` is what is kept.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.bytes = self.hits = self.misses = 0
        self._entries: dict[Hashable, tuple[Prepared, int, int]] = {}  # key -> (prepared, bytes, run last used)
        self._run = 0

    def __len__(self) -> int:
        return len(self._entries)

    def begin_run(self) -> None:
        self._run += 1

    def get(self, key: Hashable) -> Prepared | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries[key] = (entry[0], entry[1], self._run)
        return entry[0]

    def put(self, key: Hashable, prepared: Prepared) -> bool:
        """Keep `prepared` (without its question) under `key` if it fits; True if kept."""
        size = prepared_bytes(prepared)
        if size > self.max_bytes:
            return False
        stale = [k for k, (_, _, run) in self._entries.items() if run < self._run]
        while self.bytes + size > self.max_bytes and stale:
            self.bytes -= self._entries.pop(stale.pop())[1]
        if self.bytes + size > self.max_bytes:
            return False
        self._entries[key] = (dataclasses.replace(prepared, question=None), size, self._run)
        self.bytes += size
        return True


@dataclass
class QuestionPipeline:
    """Questions `0 .. n-1` scored by `scorer`, in order, with their host work done ahead in `num_workers` workers.

    `load(i) -> (Question, extra)` is the per-question work on the host up to the scorer: doc, images, prompt
    (radar_hf's `load_question`); the workers run it and then `scorer.prepare`. A None Question is not scored:
    it comes back with scores None. The main process scores windows
    of `window` questions (the scorer orders and batches within one) while the workers prepare the next window.
    `stats`: questions, workers, host_s (seconds of load + prepare, summed over the processes that ran them),
    wait_s (main process waiting for prepared questions), score_s (main process scoring), kept (questions taken
    from `cache`).

    `cache` with `key(i)` (None: question i is not kept): questions prepared by an earlier run under the same key
    are taken from the cache, in their place in the order, and only the others go to the workers; the windows,
    batches and numbers are those of a run that prepares them all.
    """

    scorer: SharedPrefixScorer
    load: Callable[[int], tuple[Question | None, Any]]
    n: int
    num_workers: int = 0
    window: int = 64
    pin_memory: bool = False
    cache: PreparedCache | None = None
    key: Callable[[int], Hashable | None] | None = None
    stats: dict = field(
        default_factory=lambda: {
            "questions": 0,
            "workers": 0,
            "host_s": 0.0,
            "wait_s": 0.0,
            "score_s": 0.0,
            "kept": 0,
        }
    )

    def __post_init__(self):
        if self.num_workers and not can_fork():  # spawned workers would need the model, processor, docs pickled
            logger.warning("background preparation needs the fork start method; preparing questions in turn")
            self.num_workers = 0

    def _prepare(self, i: int) -> Prepared:
        question, extra = self.load(i)
        if question is None:
            return Prepared(i, extra, None, None, scored=False)
        tokenized = self.scorer.prepare(question) if self.scorer.share_prefix else None
        needed = tokenized is None or tokenized.fallback is not None
        # the question travels back when the scorer will need it whole and it is cheap to send: images pickle,
        # a per-question processor (the model's, wrapped) would not; without workers it is at hand anyway
        keep = self.num_workers == 0 or (needed and question.processor is None)
        return Prepared(i, extra, tokenized, question if keep else None)

    def _kept(self) -> tuple[list, dict[int, Prepared]]:
        """The key of every question and the questions the cache holds, by index."""
        if self.cache is None or self.key is None:
            return [None] * self.n, {}
        self.cache.begin_run()
        keys = [self.key(i) for i in range(self.n)]
        found = {i: self.cache.get(k) for i, k in enumerate(keys) if k is not None}
        return keys, {i: dataclasses.replace(p, index=i) for i, p in found.items() if p is not None}

    def _in_order(self, keys: list, kept: dict[int, Prepared], prepared: Iterator) -> Iterator:
        """`(Prepared, seconds)` for every index in order: kept ones from the cache, the others from `prepared`
        (which kept them, when their key allows)."""
        for i in range(self.n):
            if i in kept:
                self.stats["kept"] += 1
                yield kept[i], 0.0
                continue
            item = next(prepared)
            if keys[i] is not None:
                self.cache.put(keys[i], item[0])
            yield item

    def scored(self, progress: Callable[[int], Any] | None = None) -> Iterator[tuple[int, Any, list]]:
        """`(index, extra, scores)` per question, in index order; `progress(n)`: n more questions scored."""
        keys, kept = self._kept()
        todo = [i for i in range(self.n) if i not in kept]
        workers = min(self.num_workers, len(todo))
        self.stats["workers"] = workers
        with OrderedMap(
            lambda j: self._prepare(todo[j]),
            len(todo),
            num_workers=workers,
            depth=self.window,
            pin_memory=self.pin_memory,
        ) as prepared:
            ordered = self._in_order(keys, kept, prepared)
            window: list[Prepared] = []
            while True:
                start = time.perf_counter()
                item = next(ordered, None)
                self.stats["wait_s"] += time.perf_counter() - start
                if item is not None:
                    window.append(item[0])
                    self.stats["host_s"] += item[1]
                if window and (item is None or len(window) == self.window):
                    yield from self._score(window, progress)
                    window = []
                if item is None:
                    break

    def _score(self, window: list[Prepared], progress):
        live = [p for p in window if p.scored]

        def question_of(j: int) -> Question:
            return live[j].question if live[j].question is not None else self.load(live[j].index)[0]

        start = time.perf_counter()
        scores = iter(self.scorer.score_prepared([p.tokenized for p in live], question_of, progress))
        self.stats["score_s"] += time.perf_counter() - start
        self.stats["questions"] += len(window)
        for p in window:
            yield p.index, p.extra, next(scores) if p.scored else None
