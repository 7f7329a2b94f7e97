"""`bpb` and `brier` (item values, leaf and group means, the reports that show them) and the group stderr that counts
one-item categories. Expected values are computed here from hand values, with unequal category sizes, skipped
items, a dropped candidate and another wrapper's plain results."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from radar_tasks import summary, sweep
from radar_tasks.analysis import tables
from radar_tasks.analysis.compare import compare_runs, format_table
from radar_tasks.analysis.runs import Run
from radar_tasks.metrics import items, lmms
from radar_tasks.models import protocol

LN2 = math.log(2)


def _softmax(scores):
    e = [math.exp(s - max(scores)) for s in scores]
    return [x / sum(e) for x in e]


def _doc(n=3, subset="mmbench", category="ocr", ability="perception", id="q1", skipped=False):
    return {
        "id": id,
        "subset": subset,
        "category": category,
        "ability": ability,
        "choices": [f"c{i}" for i in range(n)],
        "skipped": skipped,
    }


def _results(losses, nll_sums, n_bytes, dropped=()):
    """radar_hf's results of one item: per candidate its loss, NLL sum and bytes; a dropped one gets 1e30."""
    return [
        items.CandidateResult((1e30, False), f"c{i}", dropped=True)
        if i in dropped
        else items.CandidateResult((loss, False), f"c{i}", nll_sum=s, n_bytes=b)
        for i, (loss, s, b) in enumerate(zip(losses, nll_sums, n_bytes))
    ]


# ---------------------------------------------------------------------------------------------------------- items


def test_item_bpb_and_brier_by_hand():
    record = items.score_item(_doc(), _results([0.5, 1.0, 2.0], [1.5, 4.0, 9.0], [7, 5, 6]))
    p = _softmax([-0.5, -1.0, -2.0])
    assert record["brier"] == pytest.approx((p[0] - 1) ** 2 + p[1] ** 2 + p[2] ** 2, abs=1e-12)
    assert (record["nll_sum"], record["bytes"]) == (1.5, 7)  # the correct continuation's
    assert record["bpb"] == pytest.approx(1.5 / (LN2 * 7), abs=1e-12)


def test_a_dropped_candidate_takes_no_part_in_brier():
    # three candidates requested, the third left out by a protocol quirk (radar_hf answers it with 1e30)
    record = items.score_item(_doc(), _results([0.5, 1.0, None], [2.0, 3.0, None], [3, 3, None], dropped=(2,)))
    p = _softmax([-0.5, -1.0])  # over the two that take part
    assert record["brier"] == pytest.approx((p[0] - 1) ** 2 + p[1] ** 2, abs=1e-12)
    assert record["n_candidates"] == 2 and record["bpb"] == pytest.approx(2.0 / (LN2 * 3), abs=1e-12)


def test_bpb_comes_from_the_nll_under_the_logit_score():
    # score=logit: the returned numbers are mean logits (a softmax over them is p), the NLL sum is the NLL's
    results = [
        items.CandidateResult((2.0, False), "c0", nll_sum=6.0, n_bytes=4),
        items.CandidateResult((3.0, False), "c1", nll_sum=1.0, n_bytes=4),
    ]
    record = items.score_item(_doc(n=2), results, convention="score")
    p = _softmax([2.0, 3.0])
    assert record["p"] == pytest.approx(p[0], abs=1e-12)
    assert record["brier"] == pytest.approx((p[0] - 1) ** 2 + p[1] ** 2, abs=1e-12)
    assert record["bpb"] == pytest.approx(6.0 / (LN2 * 4), abs=1e-12)


def test_skipped_and_non_finite_items_have_neither():
    skipped = items.score_item(_doc(skipped=True), [items.CandidateResult((math.nan, False), "c0")])
    nan = items.score_item(_doc(n=2), _results([math.nan, 1.0], [1.0, 1.0], [2, 2]))
    for record in (skipped, nan):
        assert record["brier"] is record["bpb"] is record["nll_sum"] is record["bytes"] is None


def test_candidate_results_pickle_with_their_nll_sum_and_bytes():
    result = items.CandidateResult((0.25, True), "dog", "<image> Which?", None, False, nll_sum=0.75, n_bytes=4)
    back = pickle.loads(pickle.dumps(result))
    assert back == (0.25, True) and (back.candidate, back.nll_sum, back.bytes) == ("dog", 0.75, 4)


def test_radar_hf_sums_the_nll_and_counts_the_bytes_scored():
    scores = [SimpleNamespace(nll=0.5, n_tokens=4), SimpleNamespace(nll=2.0, n_tokens=1)]
    # the second candidate dropped; texts are the scored continuations, the joiner included (multi-byte text)
    assert protocol.nll_sums((True, False, True), scores, [" naïve", "B"]) == [(2.0, 7), (None, None), (2.0, 1)]
    with pytest.raises(ValueError):
        protocol.nll_sums((True, True), scores[:1], ["x"])


def test_plain_results_of_another_wrapper_get_brier_but_no_bpb_and_say_why_once(loguru_messages):
    lmms._said.discard("bpb")
    docs = [_doc(id="q1"), _doc(id="q2", category="image_style")]
    # lmms-eval stringifies a wrapper's (loss, is_greedy): both forms are read
    out = [
        lmms.process_results(docs[0], [(0.1, False), (0.2, False), (0.3, False)]),
        lmms.process_results(docs[1], ["(0.3, False)", "(0.2, False)", "(0.1, True)"]),
    ]
    p = _softmax([-0.3, -0.2, -0.1])
    assert out[1]["brier"]["brier"] == pytest.approx((p[0] - 1) ** 2 + p[1] ** 2 + p[2] ** 2, abs=1e-12)
    assert out[0]["bpb"]["bpb"] is None and out[1]["sds"]["nll_sum"] is None
    assert [m for m in loguru_messages if "bpb" in m] == [items.NO_BPB]  # once
    leaves = [lmms.bpb_aggregate([o["bpb"]]) for o in out]
    assert all(math.isnan(v) and v.n == 0 for v in leaves)
    assert math.isnan(lmms.group_mean(leaves, [1, 1]))
    results = {
        "q1": {"bpb,none": leaves[0], "bpb_stderr,none": "N/A"},
        "q2": {"bpb,none": leaves[1], "bpb_stderr,none": "N/A"},
        "g": {"bpb,none": math.nan, "bpb_stderr,none": "N/A"},
    }
    lmms.group_stderrs(results, {"g": ["q1", "q2"]})
    assert results["g"]["bpb_stderr,none"] == "N/A"


# ------------------------------------------------------------------------------------------- leaves and groups
# Two MMBench categories (3 items, one skipped; 2 items) and wiki_animal (1 item): unequal sizes, a skipped item.
ITEMS = {
    ("mmbench", "ocr"): [(0.2, 1.0, 4, [0.2, 0.9]), (0.9, 3.0, 5, [1.5, 0.3]), None],
    ("mmbench", "image_style"): [(0.4, 2.0, 3, [0.4, 0.5]), (0.1, 6.0, 6, [0.2, 0.1])],
    ("wiki_animal", "wiki_animal"): [(0.3, 2.5, 2, [0.3, 0.4, 0.8])],
}


def _records():
    """Per category, the item records of ITEMS: (loss of the correct candidate, its NLL sum, bytes, other losses)."""
    out = {}
    for (subset, category), rows in ITEMS.items():
        records = []
        for i, row in enumerate(rows):
            if row is None:
                doc = _doc(n=2, subset=subset, category=category, id=f"{category}{i}", skipped=True)
                records.append(items.score_item(doc, [items.CandidateResult((math.nan, False), "c0")]))
                continue
            loss, s, b, others = row
            doc = _doc(n=1 + len(others), subset=subset, category=category, id=f"{category}{i}")
            losses = [loss, *others]
            records.append(items.score_item(doc, _results(losses, [s] * len(losses), [b] * len(losses))))
        out[(subset, category)] = records
    return out


def _by_hand():
    """Per category: (mean bpb, mean brier) over its scored items, computed from ITEMS."""
    out = {}
    for key, rows in ITEMS.items():
        bpbs, briers = [], []
        for row in rows:
            if row is None:
                continue
            loss, s, b, others = row
            p = _softmax([-loss] + [-o for o in others])
            bpbs.append(s / (LN2 * b))
            briers.append((p[0] - 1) ** 2 + sum(q * q for q in p[1:]))
        out[key] = (sum(bpbs) / len(bpbs), sum(briers) / len(briers))
    return out


def test_leaf_and_group_means_by_hand_with_unequal_categories_and_a_skipped_item():
    records, hand = _records(), _by_hand()
    leaves = {}
    for key, recs in records.items():
        for metric, i in (("bpb", 0), ("brier", 1)):
            value = lmms.LEAF_AGGREGATIONS[f"{metric}_aggregate"]([items.compact(r, metric) for r in recs])
            assert value == pytest.approx(hand[key][i], abs=1e-12) and value.n == len(ITEMS[key]) - (key[1] == "ocr")
            leaves.setdefault(metric, []).append(value)
    for metric, i in (("bpb", 0), ("brier", 1)):
        mmbench = (hand[("mmbench", "ocr")][i] + hand[("mmbench", "image_style")][i]) / 2
        expected = (mmbench + hand[("wiki_animal", "wiki_animal")][i]) / 2  # subsets, unweighted
        assert lmms.group_mean(leaves[metric], [3, 2, 1]) == pytest.approx(expected, abs=1e-12)


def test_group_stderr_counts_a_one_value_category_as_fixed():
    ses = [
        items.LeafScore(0.1, [("mmbench", "ocr")], 5),
        items.LeafScore(math.nan, [("mmbench", "image_style")], 1),  # one value: no stderr of its own
        items.LeafScore(math.nan, [("mmbench", "future_prediction")], 0),  # no value: no score, left out
        items.LeafScore(0.3, [("wiki_animal", "wiki_animal")], 2),
    ]
    mmbench = math.sqrt(0.1**2 + 0.0**2) / 2  # two categories count: ocr and the fixed one
    assert items.group_stderr(ses) == pytest.approx(math.sqrt(mmbench**2 + 0.3**2) / 2, abs=1e-12)
    # no category of two values (--limit 1), or one of two values without a stderr (stderrs off): none
    assert math.isnan(items.group_stderr([ses[1], ses[2]]))
    assert math.isnan(items.group_stderr([ses[0], items.LeafScore(math.nan, [("spatial", "spatial")], 4)]))


def test_group_stderrs_of_a_results_dict_against_a_stratified_bootstrap(loguru_messages):
    """lmms-eval's results as it leaves them (a one-item leaf's stderr "N/A", so the group's too), then
    `group_stderrs`: the group stderr equals, within Monte Carlo error, a stratified bootstrap written here
    (items resampled within each category, the unweighted means recomputed), and exactly the combination of the
    leaves' stderrs with the one-item leaf at 0."""
    lmms._said.discard("single")
    rng = np.random.default_rng(7)
    values = {
        ("mmbench", "ocr"): rng.uniform(0, 1, 40),
        ("mmbench", "image_style"): rng.uniform(0, 1, 9),
        ("mmbench", "future_prediction"): np.array([0.7]),
        ("wiki_animal", "wiki_animal"): rng.uniform(0, 1, 25),
    }
    results, leaves = {}, []
    for (subset, category), x in values.items():
        recs = [
            {"id": f"{category}{i}", "subset": subset, "category": category, "p": float(v)} for i, v in enumerate(x)
        ]
        value = lmms.sds_aggregate(recs)
        se = lmms.sds_aggregate.radar_stderr(recs, 1000) if len(recs) > 1 else "N/A"  # as lmms-eval does
        results[category] = {"sds,none": value, "sds_stderr,none": se, "items,none": len(recs)}
        leaves.append(category)
    results["radar_x"] = {"sds,none": 0.5, "sds_stderr,none": "N/A", "items,none": 75, "samples": 75}
    results["other"] = {"acc,none": 0.5, "acc_stderr,none": 0.01}  # another suite's group: left as it is
    lmms.group_stderrs(results, {"radar_x": leaves, "other": []})
    got = results["radar_x"]["sds_stderr,none"]
    assert isinstance(got, float) and results["other"]["acc_stderr,none"] == 0.01
    # exactly: sqrt(sum se^2)/n per level, the one-item category at 0
    se = {c: (0.0 if results[c]["sds_stderr,none"] == "N/A" else results[c]["sds_stderr,none"]) for _, c in values}
    mmbench = math.sqrt(se["ocr"] ** 2 + se["image_style"] ** 2 + 0.0) / 3
    assert got == pytest.approx(math.sqrt(mmbench**2 + se["wiki_animal"] ** 2) / 2, rel=1e-12)
    # the stratified bootstrap itself, 20000 replicates
    boot = np.random.default_rng(0)
    reps = {k: x[boot.integers(0, x.size, (20000, x.size))].mean(axis=1) for k, x in values.items()}
    mm = (reps[("mmbench", "ocr")] + reps[("mmbench", "image_style")] + reps[("mmbench", "future_prediction")]) / 3
    assert got == pytest.approx(((mm + reps[("wiki_animal", "wiki_animal")]) / 2).std(ddof=1), rel=0.08)
    [single] = [m for m in loguru_messages if "single scored item" in m]
    assert "1 leaf task(s)" in single and "future_prediction" in single


def test_a_limit_1_group_has_no_stderr():
    results = {}
    for c in ("ocr", "image_style"):
        recs = [{"id": "a", "subset": "mmbench", "category": c, "p": 0.4}]
        results[c] = {"sds,none": lmms.sds_aggregate(recs), "sds_stderr,none": "N/A"}
    results["radar_mmbench"] = {"sds,none": 0.4, "sds_stderr,none": "N/A"}
    lmms.group_stderrs(results, {"radar_mmbench": ["ocr", "image_style"]})
    assert results["radar_mmbench"]["sds_stderr,none"] == "N/A"


# ---------------------------------------------------------------------------------------------------- reporting


def _write_run(folder: Path, shift: float) -> Path:
    """A results JSON and per-item logs of ITEMS (bpb of every item shifted by `shift`)."""
    folder.mkdir(parents=True)
    results = {}
    for (subset, category), recs in _records().items():
        task = f"radar_{subset}_{category}" if subset != category else f"radar_{subset}"
        recs = [dict(r, bpb=None if r["bpb"] is None else r["bpb"] + shift) for r in recs]
        with open(folder / f"20260101_000000_samples_{task}.jsonl", "w") as f:
            for i, r in enumerate(recs):
                f.write(json.dumps({"doc_id": i, "sds": r}) + "\n")
        scored = [r for r in recs if r["p"] is not None]
        results[task] = {
            "sds,none": float(np.mean([r["p"] for r in scored])),
            "acc,none": float(np.mean([float(r["correct"]) for r in recs])),
            "bpb,none": float(np.mean([r["bpb"] for r in scored])),
            "brier,none": float(np.mean([r["brier"] for r in scored])),
            "items,none": len(recs),
            "skipped,none": len(recs) - len(scored),
        }
    path = folder / "20260101_000000_results.json"
    path.write_text(json.dumps({"results": results}))
    return path


def _run(path: Path, label: str) -> Run:
    from radar_tasks.results import sample_files_of

    return Run(
        results_path=path,
        data=json.loads(path.read_text()),
        labels={"label": label},
        sample_files=sample_files_of(path),
    )


def test_summary_rows_of_bpb_and_brier(tmp_path):
    run = _run(_write_run(tmp_path / "a", 0.0), "a")
    rows, notes = tables.summarize(run, iters=200)
    assert notes == []
    hand = _by_hand()
    cell = {(r["level"], r["name"], r["metric"]): r for r in rows}
    for metric, i in (("bpb", 0), ("brier", 1)):
        mmbench = (hand[("mmbench", "ocr")][i] + hand[("mmbench", "image_style")][i]) / 2
        overall = cell[("overall", "overall", metric)]
        assert overall["value"] == pytest.approx((mmbench + hand[("wiki_animal", "wiki_animal")][i]) / 2, abs=1e-12)
        assert overall["n"] == 5 and math.isnan(overall["chance"])  # scored items; no chance level
        assert overall["ci_low"] <= overall["value"] <= overall["ci_high"]
    assert cell[("overall", "overall", "acc")]["n"] == 6


def test_compare_says_which_run_is_better_for_lower_is_better_metrics(tmp_path):
    a, b = _run(_write_run(tmp_path / "a", 0.0), "a"), _run(_write_run(tmp_path / "b", 0.5), "b")
    out = compare_runs(a, b, iters=300)
    rows = {(r["level"], r["name"], r["metric"]): r for r in out["rows"]}
    bpb = rows[("overall", "overall", "bpb")]
    assert bpb["diff"] == pytest.approx(-0.5, abs=1e-12) and bpb["n_items"] == 5
    assert bpb["better"] == "A"  # A's BPB is lower on every item: A is better
    assert rows[("overall", "overall", "brier")]["better"] == "" and rows[("overall", "overall", "sds")]["diff"] == 0
    reverse = {(r["level"], r["name"], r["metric"]): r for r in compare_runs(b, a, iters=300)["rows"]}
    assert reverse[("overall", "overall", "bpb")]["better"] == "B"
    assert "better" in format_table(out)


def test_the_demo_table_and_the_sweep_line_show_bpb_and_brier(tmp_path):
    path = _write_run(tmp_path / "a", 0.0)
    data = json.loads(path.read_text())
    data["results"]["radar_mmm"] = {
        "sds,none": 0.31,
        "acc,none": 0.5,
        "bpb,none": 4.25,
        "brier,none": 0.7,
        "items,none": 6,
        "skipped,none": 1,
    }
    path.write_text(json.dumps(data))
    assert sweep.headline(path, ["radar_mmm"]) == "radar_mmm SDS 0.3100, acc 0.5000, BPB 4.250, Brier 0.7000"
    table = summary.format_table(data)
    assert "BPB" in table.splitlines()[0] and "Brier" in table.splitlines()[0]
    assert "4.2500" in next(line for line in table.splitlines() if line.startswith("radar_mmm (all)"))
