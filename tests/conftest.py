"""Shared pytest fixtures, grouped by the module that needs them."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# ------------------------------------------------------------------------------------------------------------------
# Caches: the suite writes only into temporary folders. Every cache a library would keep under the user's home goes
# to one folder per session, removed at exit; the lmms-eval subprocesses inherit it. Set here, before any test module
# imports `datasets`, which reads HF_DATASETS_CACHE once, at import (tests/test_isolation.py checks it took effect).
# ------------------------------------------------------------------------------------------------------------------
SESSION_CACHE = tempfile.mkdtemp(prefix="radar-tasks-test-cache-")
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)  # pytest_unconfigure too: forks skip atexit
for _var, _folder in (
    ("HF_HOME", "hf"),
    ("HF_HUB_CACHE", "hf/hub"),
    ("HF_DATASETS_CACHE", "hf/datasets"),
    ("HF_MODULES_CACHE", "hf/modules"),
    ("XDG_CACHE_HOME", "xdg"),
    ("MPLCONFIGDIR", "matplotlib"),
    ("TORCH_HOME", "torch"),
):
    os.environ[_var] = os.path.join(SESSION_CACHE, _folder)


# The suite's subprocesses (lmms-eval runs, torchrun, the demo) keep bytecode where the environment turned it off
# (PYTHONDONTWRITEBYTECODE=1 on this project's machines): each would compile this package again, and lmms-eval
# executes an exported task folder's utils.py once per `!function` of every task (docs/UPSTREAM.md #10).
os.environ["PYTHONDONTWRITEBYTECODE"] = ""
os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(SESSION_CACHE, "pycache")  # in the session's folder, too


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_CACHE, ignore_errors=True)


# Scheduling under `-n 2 --dist loadscope` (the README's command). Modules that share an expensive session fixture
# form one unit, so that one worker builds it (not each); the longest units go first, so that no worker is left
# finishing a long unit alone at the end. A wrong entry here only costs time.
SHARED_UNITS = {"test_sweep": "tiny_sweep", "test_inloop": "tiny_sweep", "test_report_html": "tiny_sweep"}
LONGEST_FIRST = ["test_export_parity", "test_bad_input_lmms", "tiny_sweep", "test_e2e_lmms", "test_benchmark_scripts"]


def _unit(module_name: str) -> str:
    return SHARED_UNITS.get(module_name, module_name)


def pytest_collection_modifyitems(config, items):
    """The longest units first, then the other modules with `slow` tests, then the rest; each module's tests in
    their order."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}

    def rank(item):
        unit = _unit(item.module.__name__)
        first = LONGEST_FIRST.index(unit) if unit in LONGEST_FIRST else len(LONGEST_FIRST)
        return first, item.module.__name__ not in slow_modules

    items.sort(key=rank)  # stable: the order within a module is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadscope":
        return None  # another mode asked for: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the units in the order above, not by their number of tests

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _unit(Path(nodeid.split("::", 1)[0]).stem)

    return Units(config, log)


@pytest.fixture
def loguru_messages():
    """The warnings (and worse) loguru logs while the test runs (loguru does not reach pytest's caplog).

    Import lmms_eval.models before this fixture runs: its first import removes every loguru sink."""
    import contextlib

    from loguru import logger

    messages: list[str] = []
    sink = logger.add(lambda message: messages.append(message.record["message"]), level="WARNING")
    yield messages
    with contextlib.suppress(ValueError):
        logger.remove(sink)


# ------------------------------------------------------------------------------------------------------------------
# Tiny models (radar_tasks.demo.tiny_models; used by test_tiny_models, test_likelihood, test_radar_hf)
# Built once per session: a checkpoint takes ~0.1-0.5 s, a load ~0.1 s.
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """arch -> folder of a tiny random-weight checkpoint (built on first use, seed 0)."""
    from radar_tasks.demo.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = build_tiny_model(root / arch, arch, seed=0)
        return built[arch]

    return get


@pytest.fixture(scope="session")
def tiny_loaded(tiny_checkpoint):
    """arch -> (model, processor) loaded on CPU in float32 with the Auto* classes, as a user would."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    loaded = {}

    def get(arch: str):
        if arch not in loaded:
            folder = tiny_checkpoint(arch)
            model = AutoModelForImageTextToText.from_pretrained(folder, dtype="float32").eval()
            loaded[arch] = (model, AutoProcessor.from_pretrained(folder))
        return loaded[arch]

    return get


@pytest.fixture(scope="session")
def tiny_biased_to_the(tiny_loaded):
    """arch -> (a copy of the tiny model whose LM head adds 100 to the logit of "Ġthe", processor): "Ġthe" is then the
    argmax at every position, so " the the the" is a greedy continuation."""
    import copy

    import torch

    def get(arch: str):
        model, processor = tiny_loaded(arch)
        model = copy.deepcopy(model)
        head = model.get_output_embeddings()
        token = processor.tokenizer.convert_tokens_to_ids("Ġthe")
        assert processor.tokenizer.convert_ids_to_tokens(token) == "Ġthe"
        biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        with torch.no_grad():
            biased.weight.copy_(head.weight)
            biased.bias.zero_()
            biased.bias[token] = 100.0
        model.set_output_embeddings(biased)
        return model, processor

    return get


@pytest.fixture(scope="session")
def tiny_images():
    """Three deterministic RGB images of different sizes and aspect ratios (noise, so that no two are alike)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(96, 64), (40, 72), (50, 50)]  # (width, height)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in sizes]


# ------------------------------------------------------------------------------------------------------------------
# A checkpoint series and the miniature M3-Bench (test_sweep, test_inloop)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_series(tmp_path_factory):
    """Three tiny Qwen2-VL checkpoints of different weights in run/step_100, run/step_200, run/step_300."""
    from radar_tasks.demo.tiny_models import build_tiny_model

    run = tmp_path_factory.mktemp("series") / "run"
    for step in (100, 200, 300):
        build_tiny_model(run / f"step_{step}", "qwen2_vl", seed=step)
    return run


@pytest.fixture(scope="session")
def fixture_root(tmp_path_factory):
    """The miniature M3-Bench (seed 0), written once per session."""
    from radar_tasks.demo.fixture import make_fixture

    return make_fixture(tmp_path_factory.mktemp("m3bench") / "M3-Bench")


@pytest.fixture(scope="session")
def tiny_sweep(tiny_series, fixture_root, tmp_path_factory):
    """`radar_tasks.sweep` of the three tiny checkpoints on two tasks through lmms-eval, in this process, with
    per-item logs (the report's drill-down): (output folder, SweepResult, seconds)."""
    import time

    from radar_tasks import sweep

    out = tmp_path_factory.mktemp("sweep") / "S"
    t0 = time.monotonic()
    result = sweep.sweep(
        [str(tiny_series / "step_*")],
        "radar_wiki_animal,radar_spatial",
        out,
        model_args="device=cpu,dtype=float32",
        data_dir=fixture_root,
        log_samples=True,
        print_fn=lambda _line: None,
    )
    return out, result, time.monotonic() - t0


# ------------------------------------------------------------------------------------------------------------------
# The upstream export (radar_tasks.data.export, radar_tasks.tasks.export; used by test_export, test_export_parity)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exported(fixture_root, tmp_path_factory):
    """(miniature M3-Bench root, its exported dataset folder, the exported task folder reading that dataset)."""
    from radar_tasks.data.export import export_dataset
    from radar_tasks.tasks.export import export_tasks

    root = tmp_path_factory.mktemp("export")
    export_dataset(root / "dataset", fixture_root)
    export_tasks(root / "tasks", str(root / "dataset"))
    return fixture_root, root / "dataset", root / "tasks"
