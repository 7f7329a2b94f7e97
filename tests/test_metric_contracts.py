"""The metric functions' contracts at their edges (metrics/sds.py, items.py, lmms.py, lm_eval.py): empty and
one-value inputs, NaN parts, defaults, record fields, error messages. Each test here fails for a mutant of the code
that the rest of the suite let through (tools/mutation_check.py).
"""

from __future__ import annotations

import functools
import logging
import math
import re

import numpy as np
import pytest

from radar_tasks.metrics import items, lm_eval, lmms, sds

# ------------------------------------------------------------------------------------------------------------------
# sds.py
# ------------------------------------------------------------------------------------------------------------------


def test_defaults_and_messages():
    assert sds.to_scores([0.5, "(1.5, True)"]) == [-0.5, -1.5]  # the default convention is lmms-eval's loss
    with pytest.raises(ValueError, match="empty likelihood result"):
        sds.parse_result(())
    with pytest.raises(sds.NonFiniteScoreError, match=r"non-finite candidate score in \[nan, 0.0\]"):
        sds.softmax([float("nan"), 0.0])
    with pytest.raises(sds.NonFiniteScoreError, match=r"non-finite candidate score in \[inf, 0.0\]"):
        sds.item_correct([math.inf, 0.0])


def test_mean_of_nothing_is_nan():
    assert math.isnan(sds.mean([])) and sds.mean(iter([1.0, 2.0])) == 1.5


def test_bootstrap_means_resample_with_replacement():
    rng = np.random.default_rng(3)
    empty = sds.bootstrap_means([], 4, rng)
    assert empty.shape == (4,) and empty.dtype == np.float64 and np.isnan(empty).all()
    assert (sds.bootstrap_means([2.5], 5, rng) == 2.5).all()
    # 1 and 9 zeros: every replicate is a multiple of 1/10 in [0, 1], and about one draw in ten is the 1
    x = [1.0] + [0.0] * 9
    reps = sds.bootstrap_means(x, 2000, np.random.default_rng(0))
    assert reps.shape == (2000,) and ((reps >= 0) & (reps <= 1)).all()
    assert np.allclose(reps * 10, np.round(reps * 10)) and reps.max() > 0
    assert reps.mean() == pytest.approx(0.1, abs=0.01)
    # many values: drawn in several chunks, the same numbers as one draw of all indices
    big = np.random.default_rng(1).random(5000)
    assert np.allclose(
        sds.bootstrap_means(big, 450, np.random.default_rng(2)),
        big[np.random.default_rng(2).integers(0, big.size, size=(450, big.size))].mean(axis=1),
    )


def test_bootstrap_stderr_is_the_std_of_the_bootstrap_means():
    x = [0.1, 0.7, 0.4, 0.9]
    reps = sds.bootstrap_means(x, 3, np.random.default_rng(5))
    assert sds.bootstrap_stderr(x, iters=3, seed=5) == pytest.approx(float(np.std(reps, ddof=1)), abs=1e-15)
    assert sds.bootstrap_stderr([0.0, 1.0], iters=2) >= 0  # two values and two resamples are enough
    assert math.isnan(sds.bootstrap_stderr([0.0, 1.0], iters=1)) and math.isnan(sds.bootstrap_stderr([], iters=10))
    assert math.isfinite(sds.bootstrap_stderr([0.0, 1.0])) and sds.bootstrap_stderr([0.0, 1.0]) > 0


def test_balanced_leaves_out_nan_parts_wherever_they_are():
    parts = {("a", "1"): math.nan, ("a", "2"): 0.2, ("a", "3"): 0.4, ("b", "b"): math.nan, ("c", "c"): 0.9}
    value = sds.balanced(parts)
    assert type(value) is float and value == pytest.approx((0.3 + 0.9) / 2, abs=1e-12)
    assert math.isnan(sds.balanced({("a", "1"): math.nan}))
    reps = sds.balanced({("a", "1"): np.array([0.0, 1.0]), ("a", "2"): np.array([1.0, 1.0]), ("b", "b"): np.ones(2)})
    assert reps == pytest.approx([0.75, 1.0])
    ses = {("a", "1"): None, ("a", "2"): math.nan, ("a", "3"): 0.3, ("a", "4"): 0.4, ("b", "b"): 0.1}
    assert sds.balanced_stderr(ses) == pytest.approx(math.sqrt((0.5 / 2) ** 2 + 0.01) / 2, abs=1e-12)
    assert math.isnan(sds.balanced_stderr({("a", "1"): None}))


# ------------------------------------------------------------------------------------------------------------------
# items.py and lmms.py
# ------------------------------------------------------------------------------------------------------------------
RECORD_KEYS = {
    "id",
    "subset",
    "category",
    "ability",
    "p",
    "scores",
    "correct",
    "skipped",
    "n_candidates",
    "gold",
    "convention",
    "candidates",
    "prompt",
    "brier",
    "nll_sum",
    "bytes",
    "bpb",
}


def doc(**extra):
    return {
        "id": "q1",
        "subset": "mmbench",
        "category": "ocr",
        "ability": "perception",
        "choices": ["a", "b"],
        "skipped": False,
        **extra,
    }


def test_item_records_have_the_documented_fields():
    scored = items.score_item(doc(), [(0.0, False), (1.0, False)])
    skipped = items.score_item(doc(skipped=True), [(0.0, False)])
    assert set(scored) == set(skipped) == RECORD_KEYS
    assert scored["ability"] == "perception" and scored["gold"] == 0 and scored["convention"] == "loss"
    assert skipped["scores"] is None and skipped["p"] is None
    # other suites' docs: the id falls back to lmms-eval's doc_id
    assert items.score_item({"doc_id": 7, "choices": ["a", "b"]}, [(0.0, False), (1.0, False)])["id"] == 7


@pytest.mark.parametrize(
    "convention,raw,scores", [("score", [2.0, 1.0], [2.0, 1.0]), ("loglik", [-3.0, -1.0], [-3.0, -1.0])]
)
def test_score_item_uses_the_convention_it_is_given(convention, raw, scores):
    record = items.score_item(doc(), [(v, False) for v in raw], convention)
    assert record["scores"] == scores and record["convention"] == convention
    assert record["p"] == pytest.approx(math.exp(scores[0]) / sum(math.exp(s) for s in scores), abs=1e-12)


def test_process_results_metrics_of_one_doc():
    out = lmms.process_results(doc(ability="reasoning"), [(0.0, False), (1.0, False)])
    assert set(out) == {
        *("sds", "acc", "bpb", "brier", "skipped", "items"),
        *("sds_reasoning", "acc_reasoning", "bpb_reasoning", "brier_reasoning", "items_reasoning"),
    }
    assert out["items"] == out["items_reasoning"] == 1 and out["skipped"] == 0
    assert out["acc"] == out["acc_reasoning"] == items.compact(out["sds"], "acc")
    assert out["sds_reasoning"] == items.compact(out["sds"], "sds")
    assert out["brier"] == out["brier_reasoning"] == items.compact(out["sds"], "brier")
    assert out["bpb"] == {"id": "q1", "subset": "mmbench", "category": "ocr", "bpb": None}  # plain results: no NLL sum
    assert lmms.count_aggregate([out["items"]] * 3) == 3 and lmms.group_sum([3, 4], [3, 4]) == 7


def test_generic_process_results_warns_about_other_suites_docs(loguru_messages):
    out = lmms.process_results_gold({"doc_id": 3, "gold": 1, "choices": ["a", "b"]}, [(0.0, False), (math.nan, False)])
    assert out["sds"]["skipped"] == items.SKIP_NON_FINITE and out["sds"]["convention"] == "loss"
    [warning] = loguru_messages
    assert warning.startswith("doc: item 3: model returned a non-finite score")


def test_untagged_group_values_fall_back_to_lmms_evals_mean():
    assert items.group_mean([0.2, 0.6], [1, 3]) == pytest.approx(0.4)  # unweighted by default
    assert items.group_mean([0.2, 0.6], [1, 3], weight_by_size=False) == pytest.approx(0.4)
    assert items.group_mean([0.2, 0.6], [1, 3], weight_by_size=True) == pytest.approx(0.5)
    assert lmms.group_mean([0.2, 0.6], [1, 3]) == pytest.approx(0.4)
    assert lmms.group_mean([0.2, 0.6], [1, 3], weight_by_size=True) == pytest.approx(0.5)


def test_leaf_stderr_is_the_seed_0_bootstrap_of_the_sorted_values():
    recs = [
        {"id": f"q{k}", "subset": "mmbench", "category": "ocr", "p": p, "correct": p > 0.5, "skipped": None}
        for k, p in zip((3, 1, 4, 0, 2), (0.9, 0.2, 0.6, 0.4, 0.7))
    ]
    in_id_order = [0.4, 0.2, 0.7, 0.9, 0.6]
    assert lmms.sds_aggregate.radar_stderr(recs, 200) == sds.bootstrap_stderr(in_id_order, iters=200, seed=0)
    # lmms-eval asks for 100000 resamples by default: capped
    assert lmms.leaf_stderr(functools.partial(items.mean_values, field="p"), recs, 100_000) == sds.bootstrap_stderr(
        in_id_order, iters=items.MAX_BOOTSTRAP_ITERS, seed=0
    )


# ------------------------------------------------------------------------------------------------------------------
# lm_eval.py
# ------------------------------------------------------------------------------------------------------------------


def test_resolve_gold_forms():
    assert lm_eval.resolve_gold({"gold": 1}, 2) == 1  # default fields: gold, choices
    assert lm_eval.resolve_gold({"gold": "b", "choices": ["a", "b"]}, 2) == 1
    assert lm_eval.resolve_gold({"gold": 2.0}, 3) == 2  # an integral float (json numbers)
    assert lm_eval.resolve_gold({"gold": "C"}, 3) == 2
    for bad in (True, 1.5, "BC", "c", "two"):
        with pytest.raises(ValueError, match="cannot read a gold choice index"):
            lm_eval.resolve_gold({"gold": bad}, 3)
    with pytest.raises(
        ValueError, match=re.escape("use make_process_results(gold_field=...) or process_results_first")
    ):
        lm_eval.resolve_gold({"label": 0}, 2)


def test_process_results_factories():
    results = [(-1.0, False), (-3.0, False)]
    p0 = 1 / (1 + math.exp(-2.0))
    assert lm_eval.make_process_results()({"gold": 1}, results)["sds"] == pytest.approx(1 - p0)
    first = lm_eval.process_results_first({"choices": ["a", "b"]}, results)
    assert first == {"sds": pytest.approx(p0), "acc": 1.0}
    by_text = lm_eval.make_process_results(gold_field="label", choices_field="options")
    assert by_text({"label": "b", "options": ["a", "b"]}, results)["sds"] == pytest.approx(1 - p0)
    with pytest.raises(
        ValueError,
        match=r"2 results for 3 choices in doc\['choices'\]: does the task add other "
        r"requests",
    ):
        lm_eval.process_results({"gold": 0, "choices": ["a", "b", "c"]}, results)


def test_non_finite_loglik_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger=lm_eval.__name__):
        assert lm_eval.score([(-math.inf, False), (-1.0, False)], 0) == {"acc": 0.0}
    assert "non-finite log-likelihood among [-inf, -1.0]" in caplog.text
