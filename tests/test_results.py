"""radar_tasks.results, the one reader of lmms-eval's results JSON, on a results dict written out by hand."""

from __future__ import annotations

import json
import os

import pytest

from radar_tasks.results import Results, ResultsError, find_results, read_item_log

# as lmms-eval 0.7.3 writes it (keys trimmed): a leaf, a group (in `results` and in `groups`), a stderr it did not
# compute ("N/A"), a metric our tasks do not have yet (brier), another task's filter
DATA = {
    "results": {
        "radar_mmm": {
            "alias": "radar_mmm",
            "items,none": 9,
            "items_stderr,none": "N/A",
            "sds,none": 0.4,
            "sds_stderr,none": 0.05,
            "acc,none": 0.5,
            "acc_stderr,none": 0.1,
            "skipped,none": 1,
            "sds_perception,none": 0.3,
            "items_perception,none": 4,
            "sds_reasoning,none": 0.5,
            "items_reasoning,none": 5,
        },
        "radar_wiki_animal": {
            "alias": " - radar_wiki_animal",
            "sds,none": 0.25,
            "sds_stderr,none": "N/A",
            "sds_stderr_clt,none": "N/A",
            "brier,none": 0.7,
            "brier_stderr,none": 0.02,
            "items,none": 4,
            "skipped,none": 0,
        },
        "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": 0.01},
    },
    "groups": {"radar_mmm": {"sds,none": 0.4}, "radar_only_in_groups": {"sds,none": 0.9, "items_perception,none": 2}},
    "group_subtasks": {"radar_mmm": ["radar_wiki_animal"], "radar_wiki_animal": []},
    "n-samples": {"radar_wiki_animal": {"original": 4, "effective": 4}},
    "config": {"model_args": "pretrained=/ckpt/run7/step_100,device=cpu", "limit": None},
    "radar_tasks": {"version": "0.1.0", "data": {"fingerprint": "abc123"}, "model": {"prompt_style": "raw"}},
    "samples": {
        "radar_wiki_animal": [
            {"doc_id": 0, "sds": {"id": "a", "p": 0.5}, "acc": {"id": "a", "correct": True}},
            {"doc_id": 1, "sds": "not a record"},
        ]
    },
}


def test_entries_are_results_then_the_groups_it_lacks():
    entries = Results(DATA).entries
    assert list(entries) == ["radar_mmm", "radar_wiki_animal", "gsm8k", "radar_only_in_groups"]
    assert entries["radar_mmm"].value("sds") == 0.4 and entries["radar_mmm"].fields is DATA["results"]["radar_mmm"]


def test_scores_and_stderrs_by_name():
    mmm, wiki, gsm8k = (Results(DATA).entries[t] for t in ("radar_mmm", "radar_wiki_animal", "gsm8k"))
    assert (mmm.value("sds"), mmm.stderr("sds"), mmm.value("acc"), mmm.stderr("acc")) == (0.4, 0.05, 0.5, 0.1)
    assert wiki.stderr("sds") is None and wiki.value("acc") is None and not wiki.has("acc")
    assert (wiki.value("brier"), wiki.stderr("brier")) == (0.7, 0.02)  # a new metric: read like any other
    assert gsm8k.value("exact_match", "strict-match") == 0.5 and gsm8k.value("exact_match") is None
    assert wiki.scores() == [("sds", "none"), ("brier", "none"), ("skipped", "none")]
    assert gsm8k.scores() == [("exact_match", "strict-match")]


def test_counts_and_the_n_of_each_score():
    entries = Results(DATA).entries
    mmm, wiki, only = entries["radar_mmm"], entries["radar_wiki_animal"], entries["radar_only_in_groups"]
    assert mmm.count() == 9 and mmm.skipped == 1
    assert mmm.n("sds") == 9 - 1 and mmm.n("acc") == 9  # SDS averages the scored items, acc every item
    assert mmm.n("sds_perception") == 4 and mmm.n("sds_reasoning") == 5
    assert wiki.n("brier") == 4 and wiki.n("sds") == 4
    assert only.count() == 2  # no `items`: the ability counts
    assert entries["gsm8k"].count("strict-match") is None


def test_scores_of_every_task_as_evaluate_returns_them():
    scores = Results(DATA).scores()
    assert scores["radar_wiki_animal"] == {
        "sds": 0.25,
        "sds_stderr": None,
        "sds_stderr_clt": None,
        "brier": 0.7,
        "brier_stderr": 0.02,
        "items": 4,
        "skipped": 0,
    }
    assert scores["gsm8k"] == {"exact_match": 0.5, "exact_match_stderr": 0.01}
    assert isinstance(scores["radar_mmm"]["items"], int)


def test_numbers_are_plain_ints_and_floats():
    class Score(float):  # a float subclass, as metrics.items.Score: what simple_evaluate returns in memory
        pass

    class Count(int):
        pass

    entry = Results({"results": {"t": {"sds,none": Score(0.25), "items,none": Count(3), "x,none": "0.5"}}}).entries["t"]
    assert type(entry.value("sds")) is float and entry.value("sds") == 0.25
    assert type(entry.value("items")) is int and entry.value("items") == 3
    assert entry.value("x") is None


def test_run_facts_and_the_radar_tasks_entry():
    results = Results(DATA)
    assert results.is_group("radar_mmm") and not results.is_group("radar_wiki_animal")
    assert not results.is_group("gsm8k")
    assert results.n_samples("radar_wiki_animal") == {"original": 4, "effective": 4}
    assert results.limit is None and Results({"config": {"limit": -1}}).limit is None
    assert Results({"config": {"limit": 4}}).limit == 4
    assert results.model_name == "run7/step_100"
    assert results.data_fingerprint == "abc123" and results.model_settings == {"prompt_style": "raw"}
    assert Results({}).radar_tasks == {} and Results({}).data_fingerprint is None
    assert results.samples() == {"radar_wiki_animal": [{"id": "a", "p": 0.5}]}


def test_read_find_and_the_logs_beside(tmp_path):
    folder = tmp_path / "out" / "model"
    folder.mkdir(parents=True)
    newer, older = folder / "20260102_000000_results.json", folder / "20260101_000000_results.json"
    for path in (newer, older):
        path.write_text(json.dumps(DATA))
    os.utime(older, (2e9, 2e9))  # modified later: the time stamp in the name decides
    (folder / "20260102_000000_samples_radar_wiki_animal.jsonl").write_text(
        "\n".join(json.dumps(line) for line in DATA["samples"]["radar_wiki_animal"]) + "\n\n"
    )
    assert find_results(tmp_path / "out") == [older.resolve(), newer.resolve()]
    assert find_results(newer) == [newer.resolve()]
    assert find_results(tmp_path / "nothing") == [] and find_results(tmp_path / "bad") == []
    results = Results.read(newer)
    assert results.path == newer and results.entries["radar_mmm"].value("sds") == 0.4
    assert list(results.sample_files) == ["radar_wiki_animal"] and Results.read(older).sample_files == {}
    assert read_item_log(results.sample_files["radar_wiki_animal"], "radar_wiki_animal") == [
        {"id": "a", "p": 0.5, "task": "radar_wiki_animal"}
    ]
    (tmp_path / "bad_results.json").write_text("[1]")
    with pytest.raises(ResultsError, match=r"bad_results\.json: no 'results' object"):
        Results.read(tmp_path / "bad_results.json")
    with pytest.raises(ResultsError, match="cannot read results JSON"):
        Results.read(tmp_path / "missing_results.json")
