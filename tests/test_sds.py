"""SDS math against hand-computed values (metrics/sds.py, metrics/items.py)."""

import math

import pytest

from radar_tasks.metrics import items, sds


def test_softmax_and_item_sds_by_hand():
    # scores (1, 0): p0 = e / (e + 1)
    assert sds.item_sds([1.0, 0.0]) == pytest.approx(math.e / (math.e + 1), abs=1e-12)
    # three equal scores: 1/3 each
    assert sds.item_sds([2.0, 2.0, 2.0]) == pytest.approx(1 / 3)
    # shift invariance: adding a constant changes nothing; huge values do not overflow
    assert sds.item_sds([1001.0, 1000.0]) == pytest.approx(sds.item_sds([1.0, 0.0]))


@pytest.mark.parametrize(
    "convention,raw,expected_scores",
    [
        ("loss", [0.5, 1.5], [-0.5, -1.5]),  # lmms-eval: mean NLL, lower is better
        ("loglik", [-3.0, -1.0], [-3.0, -1.0]),  # lm-eval: summed log-likelihood
        ("score", [2.0, 4.0], [2.0, 4.0]),  # the paper's mean raw logit
    ],
)
def test_conventions(convention, raw, expected_scores):
    assert sds.to_scores(raw, convention) == expected_scores


def test_loss_convention_probability_by_hand():
    # losses 0.2 and 1.2 -> scores -0.2, -1.2 -> p0 = 1 / (1 + e^-1)
    p = sds.item_sds(sds.to_scores([0.2, 1.2], "loss"))
    assert p == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-12)


def test_parse_result_accepts_tuples_and_their_string_form():
    assert sds.parse_result((0.73, False)) == 0.73
    assert sds.parse_result("(0.73, False)") == 0.73
    assert sds.parse_result("[1.5, true]") == 1.5
    assert sds.parse_result(2) == 2.0
    assert math.isnan(sds.parse_result("(nan, False)"))
    assert sds.parse_result("(inf, False)") == math.inf

    class Wrapped:  # lmms-eval GenerationResult that reached process_results as an object
        text = (0.25, True)

    assert sds.parse_result(Wrapped()) == 0.25


def test_ties_count_as_correct():
    assert sds.item_correct([1.0, 1.0, 0.0])
    assert not sds.item_correct([0.9, 1.0])


def test_non_finite_is_an_error_not_a_number():
    with pytest.raises(sds.NonFiniteScoreError):
        sds.item_sds([float("nan"), 0.0])
    with pytest.raises(sds.NonFiniteScoreError):
        sds.item_correct([float("inf"), 0.0])


def test_unknown_convention():
    with pytest.raises(ValueError, match="unknown score convention"):
        sds.to_scores([1.0], "prob")


def test_bootstrap_stderr_close_to_analytic_and_seeded():
    values = [0.0, 1.0] * 200
    se = sds.bootstrap_stderr(values, iters=2000, seed=0)
    analytic = 0.5 / math.sqrt(400)
    assert se == pytest.approx(analytic, rel=0.1)
    assert se == sds.bootstrap_stderr(values, iters=2000, seed=0)
    assert math.isnan(sds.bootstrap_stderr([1.0]))


def test_balanced_mean_and_stderr():
    assert sds.balanced({("a", "1"): 1.0, ("a", "2"): 0.0, ("b", "b"): 1.0}) == pytest.approx(0.75)
    assert sds.balanced_stderr({("a", "a"): 0.3, ("b", "b"): 0.4}) == pytest.approx(0.25)


def _doc(qid="q1", subset="mmbench", category="ocr", ability="perception", n=3, skipped=False):
    return {
        "id": qid,
        "subset": subset,
        "category": category,
        "ability": ability,
        "choices": [f"c{i}" for i in range(n)],
        "skipped": skipped,
    }


def test_score_item_record():
    rec = items.score_item(_doc(), ["(0.1, True)", "(0.1, False)", "(2.0, False)"])
    assert rec["scores"] == [-0.1, -0.1, -2.0]
    assert rec["p"] == pytest.approx(1 / (2 + math.exp(-1.9)))
    assert rec["correct"] is True and rec["skipped"] is None
    assert rec["id"] == "q1" and rec["category"] == "ocr"


def test_score_item_skipped_and_non_finite():
    assert items.score_item(_doc(skipped=True), [(0.0, False)])["skipped"] == items.SKIP_TOO_MANY_IMAGES
    rec = items.score_item(_doc(n=2), [(float("nan"), False), (1.0, False)])
    assert rec["skipped"] == items.SKIP_NON_FINITE and rec["p"] is None and rec["correct"] is False
    with pytest.raises(ValueError, match="2 results for 3 candidates"):
        items.score_item(_doc(n=3), [(0.0, False), (1.0, False)])


def test_group_mean_averages_subsets_not_leaves():
    # mmbench: two categories (0.2, 0.4) -> 0.3; wiki_animal: 0.9 -> total 0.6 (a leaf mean would give 0.5)
    leaves = [
        items.LeafScore(0.2, [("mmbench", "a")]),
        items.LeafScore(0.4, [("mmbench", "b")]),
        items.LeafScore(0.9, [("wiki_animal", "wiki_animal")]),
    ]
    assert items.group_mean(leaves, [10, 10, 10]) == pytest.approx(0.6)
    ses = [
        items.LeafScore(0.1, [("mmbench", "a")]),
        items.LeafScore(0.1, [("mmbench", "b")]),
        items.LeafScore(0.2, [("wiki_animal", "wiki_animal")]),
    ]
    # mmbench se = sqrt(0.01+0.01)/2; total = sqrt(mmbench_se^2 + 0.04)/2
    mmb = math.sqrt(0.02) / 2
    assert items.group_stderr(ses) == pytest.approx(math.sqrt(mmb**2 + 0.04) / 2)
    # untagged values (someone else's tasks) fall back to lmms-eval's mean
    assert items.group_mean([0.2, 0.6], [1, 3], weight_by_size=True) == pytest.approx(0.5)
    assert items.group_stderr([0.1, 0.2]) is None


def test_leaf_aggregation_excludes_unscored_from_sds_but_counts_them_wrong_in_acc():
    from radar_tasks.metrics import lmms

    docs = [_doc("a", n=2), _doc("b", n=2), _doc("c", n=2, skipped=True)]
    results = [[(0.0, True), (1.0, False)], [(1.0, False), (0.0, True)], [(0.0, False)]]
    per_doc = [lmms.process_results(d, r) for d, r in zip(docs, results)]
    sds_score = lmms.sds_aggregate([x["sds"] for x in per_doc])
    acc = lmms.acc_aggregate([x["acc"] for x in per_doc])
    p_a = 1 / (1 + math.exp(-1.0))
    assert sds_score == pytest.approx((p_a + (1 - p_a)) / 2)  # the skipped item is out of SDS
    assert acc == pytest.approx(1 / 3)  # ... and wrong in acc
    assert sds_score.parts == (("mmbench", "ocr"),)
    assert lmms.count_aggregate([x["skipped"] for x in per_doc]) == 1
    assert all("sds_perception" in x and "sds_reasoning" not in x for x in per_doc)


def test_non_finite_model_output_is_reported_and_kept_out_of_sds(loguru_messages):
    from radar_tasks.metrics import lmms

    docs = [_doc("ok", n=2), dict(_doc("bad", n=2), source_file="Wiki_animal_identification/w.json")]
    per_doc = [
        lmms.process_results(docs[0], ["(0.5, False)", "(1.5, False)"]),
        lmms.process_results(docs[1], ["(nan, False)", "(1.0, False)"]),
    ]
    assert per_doc[1]["sds"]["skipped"] == items.SKIP_NON_FINITE and per_doc[1]["skipped"] == 1
    [warning] = loguru_messages  # one line, naming the file and the item (tests/test_non_finite.py: end to end)
    assert warning.startswith("Wiki_animal_identification/w.json: item 'bad': model returned a non-finite score")
    sds_score = lmms.sds_aggregate([x["sds"] for x in per_doc])
    assert sds_score == pytest.approx(1 / (1 + math.exp(-1.0)))  # only the finite item
    assert lmms.acc_aggregate([x["acc"] for x in per_doc]) == pytest.approx(0.5)


def test_generic_process_results_reads_gold_index():
    from radar_tasks.metrics import lmms

    out = lmms.process_results_gold({"gold": 1, "choices": ["a", "b"]}, [(2.0, False), (0.0, True)])
    assert out["sds"]["p"] == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert out["acc"]["correct"] is True


def test_item_record_carries_candidates_and_prompt_from_the_wrapper():
    import pickle

    doc = _doc(n=2)
    results = [
        items.CandidateResult((0.2, True), "dog", "<image> Which animal?"),
        items.CandidateResult((1.0, False), "cat", "<image> Which animal?"),
    ]
    rec = items.score_item(doc, results)
    assert rec["candidates"] == ["dog", "cat"] and rec["prompt"] == "<image> Which animal?"
    assert len(rec["candidates"]) == len(rec["scores"])
    copy = pickle.loads(pickle.dumps(results[0]))
    assert copy == (0.2, True) and copy.candidate == "dog" and copy.prompt == results[0].prompt
    _nll, _greedy = results[0]  # still lmms-eval's (loss, is_greedy) pair
    # other wrappers: plain or stringified tuples; the record shows the doc's choices and no prompt
    rec = items.score_item(doc, ["(0.2, True)", "(1.0, False)"])
    assert rec["candidates"] == ["c0", "c1"] and rec["prompt"] is None


def test_item_record_reads_results_still_wrapped_in_lmms_eval_generation_results():
    class Wrapped:  # the shape of lmms-eval's GenerationResult (a `text` attribute) that the evaluator did not unwrap
        def __init__(self, text):
            self.text = text

    results = [
        Wrapped(items.CandidateResult((0.2, True), "dog", "<image> Which?")),
        Wrapped(items.CandidateResult((1.0, False), "cat")),
    ]
    rec = items.score_item(_doc(n=2), results)
    assert rec["candidates"] == ["dog", "cat"] and rec["prompt"] == "<image> Which?"
    assert rec["p"] == pytest.approx(1 / (1 + math.exp(-0.8)))


def test_a_skipped_item_shows_the_docs_choices_not_the_one_request_it_made():
    rec = items.score_item(_doc(n=3, skipped=True), [items.CandidateResult((math.nan, False), "c0")])
    assert rec["skipped"] == items.SKIP_TOO_MANY_IMAGES and rec["candidates"] == ["c0", "c1", "c2"]


def test_a_dropped_candidate_does_not_count_towards_the_chance_level():
    results = [
        items.CandidateResult((0.2, True), "A"),
        items.CandidateResult((1.0, False), "B"),
        items.CandidateResult((1e30, False), "C", dropped=True),
    ]
    rec = items.score_item(_doc(n=3), results)
    assert rec["n_candidates"] == 2 and len(rec["scores"]) == 3
    assert rec["p"] == pytest.approx(1 / (1 + math.exp(-0.8)))
    assert items.score_item(_doc(n=3), [(0.2, True), (1.0, False), (3.0, False)])["n_candidates"] == 3
    with pytest.raises(ValueError, match="2 results for 3 candidates"):
        items.score_item(_doc(n=3), results[:2])


def test_item_the_wrapper_did_not_score_is_skipped_with_its_reason():
    reason = "prompt and candidate hold 9000 tokens, more than the model's 4096 positions"
    results = [items.CandidateResult((math.nan, False), f"c{i}", "long prompt", reason) for i in range(2)]
    rec = items.score_item(_doc(n=2), results)
    assert rec["skipped"] == reason and rec["p"] is None and rec["correct"] is False


def test_metric_views_hold_what_their_aggregation_needs():
    from radar_tasks.metrics import lmms

    out = lmms.process_results(_doc(n=2), [(0.0, True), (1.0, False)])
    assert set(out["acc"]) == set(out["acc_perception"]) == {"id", "subset", "category", "correct"}
    assert set(out["sds_perception"]) == {"id", "subset", "category", "p"}
    assert {"candidates", "prompt", "scores", "p"} <= set(out["sds"])
