"""Background preparation (`models.pipeline`): the same results as in turn, in order, and no process left behind.

Speed is measured by `benchmarks/bench_pipeline.py`, not here: these tests make no timing assertion.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from lmms_eval.api.instance import Instance

from radar_tasks import prompts, taxonomy
from radar_tasks.data import m3bench
from radar_tasks.errors import M3BenchError
from radar_tasks.models import args as model_args
from radar_tasks.models import pipeline
from radar_tasks.models.pipeline import OrderedMap, resolve_num_workers
from radar_tasks.models.radar_hf import RadarHF
from radar_tasks.tasks import hooks

SPLIT = "test"
# leaf tasks of the fixture with every prompt shape: single and multi-image, inline images, image options (letters),
# a skipped 13-image item (text-only request), shared Wiki images, grayscale / palette / RGBA files
LEAVES = [
    ("mmbench", "ocr"),
    ("mmmu_pro", "Art"),
    ("mmmu_pro", "Biology"),
    ("mmmu_pro", "Physics"),
    ("mmmu_pro", "Math"),
    ("seephys", "seephys"),
    ("spatial", "spatial"),
    ("wiki_animal", "wiki_animal"),
]
WINDOW = 4  # questions per scoring window: several windows, each prepared while the previous one is scored


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The main process on one torch thread, as the workers are: on a CPU shared with other work, two-thread
    regions stall for seconds. Preprocessing does not depend on the thread count (`test_..._thread_count`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task_dict(fixture_root):
    return {taxonomy.task_name(s, c): {SPLIT: m3bench.load_category(s, c, fixture_root)} for s, c in LEAVES}


def requests_of(task_dict, seed=0):
    """lmms-eval's multiple_choice requests of every doc, shuffled (the wrapper must map results back)."""
    requests = []
    for task, splits in task_dict.items():
        for doc_id, doc in enumerate(splits[SPLIT]):
            context = prompts.task_text(doc, image_markers=True)
            for k, choice in enumerate(hooks.doc_to_choice(doc)):
                args = (context, " " + choice, hooks.doc_to_visual, doc_id, task, SPLIT)
                requests.append(
                    Instance("loglikelihood", args, idx=k, metadata={"task": task, "doc_id": doc_id, "repeats": 1})
                )
    random.Random(seed).shuffle(requests)
    return requests


def wrapper(folder, task_dict, **kwargs) -> RadarHF:
    model = RadarHF(pretrained=str(folder), device="cpu", dtype="float32", **kwargs)
    model.task_dict = task_dict
    model._window = lambda: WINDOW
    return model


@pytest.mark.parametrize(
    "arch, args", [("qwen2_vl", {"batch_size": "3"}), ("internvl", {"batch_size": "2", "protocol": "paper"})]
)
def test_workers_give_the_same_results_in_the_same_order(tiny_checkpoint, task_dict, arch, args):
    """num_workers=2 vs 0 on the fixture (several windows of questions): bit-identical float32 results."""
    requests = requests_of(task_dict)
    runs = {}
    for workers in (0, 2):
        model = wrapper(tiny_checkpoint(arch), task_dict, num_workers=str(workers), **args)
        runs[workers] = [r.text for r in model.loglikelihood(requests)]
        assert model.pipeline_stats["workers"] == workers
        assert model.pipeline_stats["questions"] == len({(r.args[4], r.args[3]) for r in requests})
    assert runs[2] == runs[0]  # exact float equality, request by request


def test_kept_questions_give_the_same_results_without_preparing_them_again(tiny_checkpoint, task_dict, monkeypatch):
    """In-loop calls: a fresh wrapper per call shares one `PreparedCache`. The second call prepares nothing, starts
    no worker, loads only the questions its fresh scorer needs whole (its first-batch check) and returns the first
    call's results exactly; a cache too small for every question keeps the first ones it sees."""
    requests = [r for r in requests_of(task_dict) if r.args[4] in ("radar_seephys", "radar_wiki_animal")]
    questions = len({(r.args[4], r.args[3]) for r in requests})
    cache = pipeline.PreparedCache(max_bytes=2**30)
    loaded = []
    original = RadarHF.load_question

    def counted(self, task, split, doc_id, *args):
        loaded.append((task, doc_id))
        return original(self, task, split, doc_id, *args)

    monkeypatch.setattr(RadarHF, "load_question", counted)
    runs = []
    for _ in range(2):
        model = wrapper(tiny_checkpoint("qwen2_vl"), task_dict, num_workers="2", batch_size="3")
        model.prepared_cache = cache
        loaded.clear()
        runs.append([r.text for r in model.loglikelihood(requests)])
    assert runs[1] == runs[0]
    assert len(cache) == questions and cache.hits == questions
    assert model.pipeline_stats["kept"] == questions and model.pipeline_stats["workers"] == 0
    assert 0 < len(loaded) <= 2  # the first-batch check's question of each kind (with images, without)
    small = pipeline.PreparedCache(max_bytes=cache.bytes // 2)
    for _ in range(2):
        model = wrapper(tiny_checkpoint("qwen2_vl"), task_dict, num_workers="0", batch_size="3")
        model.prepared_cache = small
        assert [r.text for r in model.loglikelihood(requests)] == runs[0]
    assert 1 <= len(small) < questions and small.hits == len(small) and small.bytes <= cache.bytes // 2


@pytest.mark.parametrize("arch", ["qwen2_vl", "internvl", "llava_onevision", "idefics3", "llava"])
def test_image_processing_does_not_depend_on_the_thread_count(tiny_loaded, arch):
    """Workers run torch on one thread, the main process on several: the pixel values must not differ."""
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in ((640, 480), (203, 517))]
    processor = tiny_loaded(arch)[1]
    pixels = []
    for threads in (1, 3):
        torch.set_num_threads(threads)
        pixels.append(processor.image_processor(images=images, return_tensors="pt")["pixel_values"])
    torch.set_num_threads(1)
    assert torch.equal(*pixels)


def test_num_workers_arg(tiny_checkpoint, task_dict, monkeypatch):
    cpus = pipeline.available_cpus()
    on_gpu = functools.partial(resolve_num_workers, device_type="cuda")
    assert on_gpu("auto") == max(1, min(pipeline.AUTO_MAX_WORKERS, cpus - 1))  # one CPU for the model
    assert on_gpu("auto", processes=cpus * 2) == 1  # data parallel: the CPUs are shared, at least one
    # on a CPU device the forwards take every core: no worker unless asked for
    assert resolve_num_workers("auto", device_type="cpu") == 0 and resolve_num_workers(2, device_type="cpu") == 2
    # the model arg is checked once, by its parser (models.args); resolve_num_workers counts what that lets through
    assert on_gpu(model_args.workers("0")) == 0 and on_gpu(3) == 3
    for bad in ("-1", "many", 1.5):
        with pytest.raises(ValueError, match="num_workers"):
            model_args.check_model_args({"pretrained": str(tiny_checkpoint("qwen2_vl")), "num_workers": bad})
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(pipeline, "_cgroup_cpu_quota", lambda: 1.5)  # a container allowed one and a half CPUs
    assert pipeline.available_cpus() == 1 and on_gpu("auto") == 1
    monkeypatch.undo()
    assert wrapper(tiny_checkpoint("qwen2_vl"), task_dict).num_workers == 0  # the tests' wrappers run on the CPU


def test_a_failing_question_raises_its_own_error_and_no_worker_is_left(tiny_checkpoint, task_dict):
    """A doc whose image cannot be loaded: the same one-line error as in turn (file, item), workers gone."""
    requests = requests_of(task_dict)
    bad_task, bad_doc = requests[len(requests) // 2].args[4:2:-1]

    def doc_to_visual(doc):
        if doc["id"] == task_dict[bad_task][SPLIT][bad_doc]["id"]:
            raise M3BenchError("truncated image file", doc["source_file"], doc["id"])
        return hooks.doc_to_visual(doc)

    requests = [
        Instance("loglikelihood", (*r.args[:2], doc_to_visual, *r.args[3:]), idx=r.idx, metadata=r.metadata)
        for r in requests
    ]
    errors = {}
    for workers in (0, 2):
        model = wrapper(tiny_checkpoint("qwen2_vl"), task_dict, num_workers=str(workers), batch_size="2")
        with pytest.raises(M3BenchError) as caught:
            model.loglikelihood(requests)
        errors[workers] = caught.value
        assert multiprocessing.active_children() == []
    assert str(errors[2]) == str(errors[0]) and "truncated image file" in str(errors[0])
    assert str(errors[2]).count("\n") == 0 and errors[2].item == errors[0].item
    assert any("background worker" in note for note in errors[2].__notes__)  # the worker's traceback


def test_an_interrupt_while_scoring_ends_the_workers(tiny_checkpoint, task_dict, monkeypatch):
    model = wrapper(tiny_checkpoint("qwen2_vl"), task_dict, num_workers="2", batch_size="2")
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = model.scorer.score_prepared
    monkeypatch.setattr(model.scorer, "score_prepared", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.loglikelihood(requests_of(task_dict))
    assert len(calls) == 2 and multiprocessing.active_children() == []


def _slow(i):
    time.sleep(0.002 * (i % 5))  # uneven: later items are often ready first
    if i == 37:
        raise KeyError(f"item {i}")
    return i * i


class _Unpicklable(Exception):
    def __init__(self, a, b):  # pickles as cls(message) and fails: it must still reach the caller
        super().__init__(f"{a}/{b}")


def _unpicklable(i):
    raise _Unpicklable(i, "x")


def test_ordered_map_keeps_order_and_reraises():
    for workers in (0, 2):
        got = []
        with pytest.raises(KeyError, match="item 37"), OrderedMap(_slow, 50, num_workers=workers, depth=8) as out:
            for value, seconds in out:
                assert seconds >= 0
                got.append(value)
        assert got == [i * i for i in range(37)]
        assert multiprocessing.active_children() == []
    with (
        pytest.raises(RuntimeError, match="_Unpicklable: 0/x"),
        OrderedMap(_unpicklable, 3, num_workers=2, depth=2) as out,
    ):
        list(out)


def _dies(i):
    if i == 5:
        os._exit(3)  # as if killed (out of memory): no exception, no result
    time.sleep(0.01)
    return i


def test_a_dead_worker_is_an_error_and_the_other_workers_end():
    with (
        pytest.raises(RuntimeError, match="exited unexpectedly") as caught,
        OrderedMap(_dies, 200, num_workers=2, depth=4) as out,
    ):
        list(out)
    # the traceback refers to the DataLoader's iterator: the workers must have been ended explicitly
    assert caught.traceback and multiprocessing.active_children() == []


_CHILD = textwrap.dedent("""
    import os, sys, time
    from radar_tasks.models.pipeline import OrderedMap

    def work(i):
        time.sleep(0.05)
        return os.getpid()

    with OrderedMap(work, 10_000, num_workers=2, depth=4) as out:
        seen = set()
        for pid, _ in out:
            if pid not in seen:
                seen.add(pid)
                print(pid, flush=True)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_no_orphan_worker_after_ctrl_c_or_kill(how):
    """Ctrl-C (SIGINT to the process group) and a killed main process (SIGKILL): the workers end too."""
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers = {int(child.stdout.readline()) for _ in range(2)}
        assert child.pid not in workers and all(_alive(pid) for pid in workers)
        if how == signal.SIGINT:
            os.killpg(child.pid, signal.SIGINT)
        else:
            child.kill()
        child.wait(timeout=20)
        deadline = time.monotonic() + 20  # after SIGKILL the workers notice their parent is gone (5 s polls)
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
