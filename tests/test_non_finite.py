"""A model's NaN or inf score: one log line naming the file and the item, the item skipped (out of SDS, wrong in acc).

The file names and ids expected in the log are read from the fixture's json files here, not from the records.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from radar_tasks.data import m3bench
from radar_tasks.metrics import lmms
from radar_tasks.tasks import hooks

WIKI = "Wiki_animal_identification"


def softmax(scores):
    x = np.asarray(scores, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.fixture(scope="module")
def bench(fixture_root):
    return fixture_root  # read only


@pytest.fixture(scope="module")
def wiki_items(bench):
    """(path of the json file relative to the root, {q_id: item}) of the fixture's Wikipedia animals."""
    [path] = (bench / WIKI).glob("*.json")
    return f"{WIKI}/{path.name}", json.loads(path.read_text(encoding="utf-8"))


def non_finite_warnings(messages):
    return [m for m in messages if "model returned a non-finite score" in m]


@pytest.mark.parametrize("bad_value", ["nan", "inf"])
def test_process_results_names_file_and_item(bench, wiki_items, loguru_messages, bad_value):
    rel, items = wiki_items
    bad_id = list(items)[1]
    docs = list(m3bench.load_category("wiki_animal", "wiki_animal", bench))
    assert {d["id"] for d in docs} == set(items)
    per_doc, finite_p = [], []
    for d in docs:
        losses = [0.5] + [1.0] * (len(items[d["id"]]["distraction"]))
        if d["id"] == bad_id:
            losses[-1] = float(bad_value)
        else:
            finite_p.append(softmax([-x for x in losses])[0])
        per_doc.append(hooks.process_results(d, [f"({x}, False)" for x in losses]))  # lmms-eval's string form
    [warning] = non_finite_warnings(loguru_messages)
    assert warning.startswith(f"{rel}: item {bad_id!r}: model returned a non-finite score")
    assert "\n" not in warning
    assert lmms.sds_aggregate([d["sds"] for d in per_doc]) == pytest.approx(np.mean(finite_p), abs=1e-12)
    assert lmms.acc_aggregate([d["acc"] for d in per_doc]) == pytest.approx((len(items) - 1) / len(items), abs=1e-12)
    assert lmms.count_aggregate([d["skipped"] for d in per_doc]) == 1
    bad = next(d["sds"] for d in per_doc if d["sds"]["id"] == bad_id)
    assert bad["p"] is None and bad["correct"] is False and bad["skipped"] == "non-finite model score"


def test_finite_scores_log_nothing(bench, loguru_messages):
    for d in m3bench.load_category("wiki_animal", "wiki_animal", bench):
        hooks.process_results(d, [(0.5, False)] + [(1.0, False)] * (len(d["choices"]) - 1))
    assert non_finite_warnings(loguru_messages) == []


@pytest.fixture(scope="module")
def lmms_eval_imported():
    """lmms-eval, imported before `loguru_messages` adds its sink (importing lmms_eval.models removes all sinks)."""
    import lmms_eval.evaluator
    import lmms_eval.models
    import lmms_eval.tasks

    return lmms_eval


@pytest.mark.slow
def test_non_finite_model_score_end_to_end(
    lmms_eval_imported, bench, wiki_items, tiny_checkpoint, tmp_path, monkeypatch, loguru_messages
):
    """lmms-eval runs radar_hf (score=logit) on a tiny Qwen2-VL whose LM head gives NaN for one token that only one
    item's candidates hold: that item is logged and skipped, the other items are scored as usual."""
    import torch
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from radar_tasks.tasks.plugin import TASK_DIR

    rel, items = wiki_items
    folder = tiny_checkpoint("qwen2_vl")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(folder)
    tokens = {
        qid: {
            t
            for c in [it["answer"], *it["distraction"]]
            for t in processor.tokenizer(" " + c, add_special_tokens=False)["input_ids"]
        }
        for qid, it in items.items()
    }
    bad_id, token = next(
        (qid, t)
        for qid, ts in tokens.items()
        for t in sorted(ts)
        if not any(t in other for q, other in tokens.items() if q != qid)
    )
    with torch.no_grad():
        model.get_output_embeddings().weight[token] = float("nan")
    model.save_pretrained(tmp_path / "nan-head")
    processor.save_pretrained(tmp_path / "nan-head")

    monkeypatch.setenv(m3bench.ENV_VAR, str(bench))
    out = simple_evaluate(
        model="radar_hf",
        model_args=f"pretrained={tmp_path / 'nan-head'},device=cpu,dtype=float32,score=logit",
        tasks=["radar_wiki_animal"],
        log_samples=True,
        task_manager=TaskManager(include_path=TASK_DIR, include_defaults=False),
        verbosity="WARNING",
    )
    [warning] = non_finite_warnings(loguru_messages)
    assert warning.startswith(f"{rel}: item {bad_id!r}: model returned a non-finite score")
    # the wrapper's count is of the scores it returned (every NLL is NaN here: the head's NaN row reaches the
    # softmax normaliser of every position; the raw logits only of the bad item's candidates holding the token)
    bad = [
        c
        for c in [items[bad_id]["answer"], *items[bad_id]["distraction"]]
        if token in processor.tokenizer(" " + c, add_special_tokens=False)["input_ids"]
    ]
    n_all = sum(1 + len(it["distraction"]) for it in items.values())
    assert [m for m in loguru_messages if "continuations got a non-finite" in m] == [
        f"radar_hf: {len(bad)} of {n_all} continuations got a non-finite logit score"
    ]

    result = out["results"]["radar_wiki_animal"]
    rows = {row["sds"]["id"]: row["sds"] for row in out["samples"]["radar_wiki_animal"]}
    assert set(rows) == set(items)
    assert rows[bad_id]["skipped"] == "non-finite model score" and rows[bad_id]["p"] is None
    good = [r for q, r in rows.items() if q != bad_id]
    assert all(r["skipped"] is None and all(math.isfinite(s) for s in r["scores"]) for r in good)
    assert result["skipped,none"] == 1 and result["items,none"] == len(items)
    p = [softmax(r["scores"])[0] for r in good]
    assert result["sds,none"] == pytest.approx(np.mean(p), abs=1e-9)
    assert result["acc,none"] == pytest.approx(sum(r["correct"] for r in good) / len(items), abs=1e-12)
