"""Bad data and careless arguments through the real lmms-eval CLI, as a user meets them.

Each case is one `python -m lmms_eval ... --tasks radar_wiki_animal` subprocess on a corrupted copy of the fixture
(or with a bad argument): a non-zero exit status, one line naming the file (or the variable, or the argument),
no traceback, no retry, no model loaded, no results file and nothing cached. Then the intact copy scores every
item, and its per-item logs and results JSON explain themselves; deleting an image after that good run is reported
in one line before scoring (the cache re-checks its images). Cases run two at a time: each costs an lmms-eval
start-up, and fails before any model loads. Every other kind of bad input takes the same path (the one validator,
the one model-arg table) and is tested in-process: tests/test_m3bench.py, test_images.py, test_model_args.py.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import lmms_cli
import pytest

pytestmark = pytest.mark.slow
WIKI = "Wiki_animal_identification"
TASK = "radar_wiki_animal"
MODEL_LOADED = "on cpu (torch.float32), world size"  # radar_hf's INFO line once its model has loaded


def _wiki_json(root: Path) -> Path:
    [path] = (root / WIKI).glob("*_pretrained_mllm_eval.json")
    return path


def _edit_first_item(root: Path, fn) -> None:
    path = _wiki_json(root)
    data = json.loads(path.read_text())
    first = next(iter(data))
    fn(data, first)
    path.write_text(json.dumps(data))


def _truncate_json(root):
    path = _wiki_json(root)
    path.write_bytes(path.read_bytes()[:100])


def _cut_jpeg(root):
    image = sorted((root / WIKI / "images").glob("*.jpg"))[0]
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])


def _id_walks_out(root):
    secret = root.parent / "outside" / "secret.jpg"
    secret.parent.mkdir(exist_ok=True)
    shutil.copy(sorted((root / WIKI / "images").glob("*.jpg"))[0], secret)
    _edit_first_item(root, lambda d, k: d.__setitem__("../../../outside/secret", d.pop(k)))


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # in the one error line
    corrupt: object = None  # fn(root) on a private copy of the fixture
    model_args: str = ""  # appended to pretrained=...,device=cpu,dtype=float32
    extra: tuple = ()
    unset_root: bool = False
    names_file: bool = True  # the line names the json file of the category


CASES = [
    Case("truncated json", "malformed JSON: ", _truncate_json),
    Case("RADAR_M3BENCH_DIR unset", "RADAR_M3BENCH_DIR is not set", unset_root=True, names_file=False),
    Case("JPEG cut in half", "is unreadable or truncated", _cut_jpeg),
    Case("id walks out of the root", "item '../../../outside/secret': the id holds a path separator", _id_walks_out),
    Case(
        "boolean typo",
        "share_prefix='flase': expected one of true, false, 1, 0, yes, no",
        model_args="share_prefix=flase",
        names_file=False,
    ),
    Case(
        "--batch_size abc",
        "--batch_size 'abc': batch_size must be an integer >= 1 or 'auto'",
        extra=("--batch_size", "abc"),
        names_file=False,
    ),
]


def run_cli(model_args: str, out: Path, data: Path | None, cache: Path, extra=()) -> tuple[int, str]:
    return lmms_cli.run(
        model_args, TASK, out, data=data, env={"HF_DATASETS_CACHE": str(cache)}, extra=extra, timeout=600
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_checkpoint, fixture_root):
    """(the session's miniature M3-Bench, read only: every case copies it; the tiny model; a work folder)."""
    return fixture_root, str(tiny_checkpoint("qwen2_vl")), tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def outcomes(bench):
    pristine, model, root = bench

    def run(case: Case):
        work = root / case.name.replace(" ", "_")
        data = work / "M3-Bench"
        shutil.copytree(pristine, data)
        if case.corrupt:
            case.corrupt(data)
        args = f"pretrained={model},device=cpu,dtype=float32" + (f",{case.model_args}" if case.model_args else "")
        code, log = run_cli(args, work / "out", None if case.unset_root else data, work / "cache", case.extra)
        return case.name, (code, log, work, data)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_a_failed_exit(outcomes, case):
    code, log, work, data = outcomes[case.name]
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert code != 0, log[-3000:]
    assert len(errors) == 1 and case.expect in errors[0], log[-3000:]
    if case.names_file:
        assert _wiki_json(data).name in errors[0] or WIKI in errors[0], errors[0]
    assert "Traceback" not in log and "RetryError" not in log, log[-3000:]
    assert MODEL_LOADED not in log, "the model loaded before the input was checked"
    assert not list((work / "out").rglob("*_results.json"))
    assert not list((work / "cache").rglob("*.arrow")), "something was cached from a failed run"


@pytest.fixture(scope="module")
def intact_run(bench):
    """The intact copy with a stray notes.json beside the data file (not read), batch_size given as a model arg."""
    pristine, model, root = bench
    data = root / "intact" / "M3-Bench"
    shutil.copytree(pristine, data)
    (data / WIKI / "notes.json").write_text(json.dumps({"Q1": {"question": "?", "answer": "a", "distraction": ["b"]}}))
    out, cache = root / "intact" / "out", root / "intact" / "cache"
    code, log = run_cli(f"pretrained={model},device=cpu,dtype=float32,batch_size=2", out, data, cache)
    results = sorted(out.rglob("*_results.json"))
    assert code == 0 and results, log[-4000:]
    samples = [json.loads(line) for p in out.rglob(f"*_samples_{TASK}.jsonl") for line in p.read_text().splitlines()]
    return json.loads(results[-1].read_text()), samples, log, data, model, root


def test_intact_data_scores_every_item(intact_run):
    results, samples, log, data, _, _ = intact_run
    items = json.loads(_wiki_json(data).read_text())
    assert results["results"][TASK]["items,none"] == len(items) == len(samples) == 4
    assert "notes.json: a json file beside" in log  # reported, not merged
    for row in samples:
        record = row["sds"]
        assert record["candidates"][0] == items[record["id"]]["answer"]
        assert len(record["candidates"]) == len(record["scores"]) == record["n_candidates"]
        assert record["prompt"].count("<image>") == 1 and items[record["id"]]["question"] in record["prompt"]
        assert set(row["acc"]) == {"id", "subset", "category", "correct"}  # not a copy of the record


def test_results_json_says_what_it_scored_with(intact_run):
    from radar_tasks.data.m3bench import data_fingerprint

    results, _, _, data, model, _ = intact_run
    meta = results["radar_tasks"]
    assert meta["data"] == {
        "root": str(data),
        "fingerprint": data_fingerprint(data, ["wiki_animal"]),
        "subsets": ["wiki_animal"],
    }
    assert meta["version"] and meta["model"]["pretrained"] == model
    assert {k: meta["model"][k] for k in ("prompt_style", "score", "protocol", "dtype", "batch_size")} == {
        "prompt_style": "raw",
        "score": "logprob",
        "protocol": None,
        "dtype": "float32",
        "batch_size": 2,
    }
    sharing = meta["model"]["prefix_sharing"]
    assert sharing["shared"] + sharing["per_candidate"] == 4 and sharing["run_fallback"] is None


def test_image_deleted_after_a_good_run_is_reported_before_scoring(intact_run):
    _, _, _, data, model, root = intact_run
    image = sorted((data / WIKI / "images").glob("*.jpg"))[0]
    image.unlink()
    out = root / "intact" / "out-after-delete"
    code, log = run_cli(f"pretrained={model},device=cpu,dtype=float32", out, data, root / "intact" / "cache")
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert code != 0 and len(errors) == 1 and f"image {WIKI}/images/{image.name} is missing" in errors[0], log[-3000:]
    assert "Traceback" not in log and MODEL_LOADED not in log and not list(out.rglob("*_results.json"))
