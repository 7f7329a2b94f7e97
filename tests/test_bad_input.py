"""Bad input, case by case: the one-line message (file, item id, problem) of reading a category and of
`check-data` is the same, and is typed here in full; the counts `check-data` prints are those of the json files;
the normalized record carries what the released item holds (radar_tasks/data/m3bench.py).

File names, ids and counts are read from the fixture's json files here, never from the records.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from radar_tasks import taxonomy
from radar_tasks.cli import main as radar_tasks_cli
from radar_tasks.data import m3bench
from radar_tasks.errors import CategoryFileMissing, M3BenchError
from radar_tasks.tasks import hooks

WIKI, SEEPHYS, MMBENCH = "Wiki_animal_identification", "physical_reasoning", "general_visual_question_answering"
SUBSET_OF = {WIKI: "wiki_animal", SEEPHYS: "seephys"}


@pytest.fixture
def root(fixture_root, tmp_path, monkeypatch):
    """A private copy of the fixture and a private datasets cache; the root is always passed explicitly."""
    import datasets.config

    shutil.copytree(fixture_root, tmp_path / "M3-Bench")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.delenv(m3bench.ENV_VAR, raising=False)
    return tmp_path / "M3-Bench"


def only_json(root: Path, folder: str) -> Path:
    [path] = (root / folder).glob("*.json")
    return path


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def save(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def one_problem(root: Path, subset: str) -> str:
    """The message of reading the category, which must also be check-data's only problem."""
    with pytest.raises(M3BenchError) as err:
        m3bench.load_category(subset, subset, root)
    assert m3bench.check_root(root, [subset]).problems == [str(err.value)]
    return str(err.value)


def set_field(key, value):
    return lambda item: item.__setitem__(key, value)


BAD_ITEMS = [
    (WIKI, None, "item is a list, expected an object"),
    (WIKI, lambda item: item.pop("question"), "'question' is missing"),
    (WIKI, lambda item: item.pop("answer"), "'answer' is missing"),
    (WIKI, set_field("question", 7), "'question' is not a string (got int)"),
    (WIKI, set_field("answer", 3), "'answer' is not a string (got int: 3)"),
    (WIKI, set_field("distraction", "cat"), "'distraction' must be a non-empty list of strings"),
    (WIKI, set_field("distraction", ["cat", 2]), "'distraction' holds a non-string"),
    (WIKI, set_field("distraction", ["cat", "cat"]), "'distraction' repeats a candidate"),
    (SEEPHYS, set_field("img_num", -1), "'img_num' must be an integer from 1 to 1000 (got -1)"),
    (SEEPHYS, set_field("img_num", "2"), "'img_num' must be an integer from 1 to 1000 (got '2')"),
    (SEEPHYS, set_field("img_num", True), "'img_num' must be an integer from 1 to 1000 (got True)"),
    (SEEPHYS, set_field("img_num", 0), "'img_num' must be an integer from 1 to 1000 (got 0)"),  # no image to score
]


@pytest.mark.parametrize("folder,mutate,problem", BAD_ITEMS, ids=[p for _, _, p in BAD_ITEMS])
def test_bad_item(root, folder, mutate, problem):
    path = only_json(root, folder)
    data = load(path)
    qid = list(data)[1]
    if mutate is None:
        data[qid] = ["not", "an", "object"]
    else:
        mutate(data[qid])
    save(path, data)
    assert one_problem(root, SUBSET_OF[folder]) == f"{folder}/{path.name}: item {qid!r}: {problem}"


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"\xff\xfe{}", "not UTF-8 text (invalid start byte)"),
        (b'["a", "list"]', "expected a JSON object q_id -> item, got list"),
        (b'{"Q1": {}, "Q1": {}}', "item 'Q1': duplicate id in the json object"),
    ],
)
def test_bad_file(root, content, problem):
    path = only_json(root, WIKI)
    path.write_bytes(content)
    assert one_problem(root, "wiki_animal") == f"{WIKI}/{path.name}: {problem}"


def test_an_id_in_two_files_of_one_category(root):
    [first] = (root / MMBENCH).glob("MMBench_ocr_*.json")
    second = first.with_name("MMBench_ocr_9_pretrained_mllm_eval.json")
    qid = next(iter(load(first)))
    save(second, {qid: load(first)[qid]})
    expected = f"{MMBENCH}/{second.name}: item {qid!r}: duplicate id, also in {MMBENCH}/{first.name}"
    with pytest.raises(M3BenchError) as err:
        m3bench.load_category("mmbench", "ocr", root)
    assert str(err.value) == expected
    assert m3bench.check_root(root, ["mmbench"]).problems == [expected]


def test_a_missing_category_file(root, monkeypatch):
    [ocr] = (root / MMBENCH).glob("MMBench_ocr_*.json")
    ocr.unlink()
    with pytest.raises(CategoryFileMissing) as err:
        m3bench.load_category("mmbench", "ocr", root)
    assert str(err.value) == f"no json file for category 'ocr' in {MMBENCH}/ under {root}"
    assert m3bench.check_root(root, ["mmbench"]).problems == [
        f"{MMBENCH}/: no json file for category 'ocr' (task radar_mmbench_ocr)"
    ]
    # the task's stand-in row: never scored, so the category has no score and groups average the others
    monkeypatch.setenv(m3bench.ENV_VAR, str(root))
    [row] = hooks.process_docs([{"subset": "mmbench", "category": "ocr"}])
    assert row["absent"] and row["skipped"] and row["ability"] == "perception" and row["category"] == "ocr"
    assert hooks.process_results(row, [(0.0, False)]) == {}
    assert m3bench.absent_category("mmbench", "ocr").features == m3bench.record_features()


def test_every_problem_of_a_category_is_reported(root):
    """Two category files missing, and in a category of two files a malformed one and one with a bad item."""
    folder = root / MMBENCH
    for category in ("ocr", "action_recognition"):
        [path] = folder.glob(f"MMBench_{category}_*.json")
        path.unlink()
    [first] = folder.glob("MMBench_future_prediction_*.json")
    items = load(first)
    qid = next(iter(items))
    second = first.with_name("MMBench_future_prediction_9_pretrained_mllm_eval.json")
    save(second, {f"{qid}-copy": {**items[qid], "answer": None}})
    first.write_text("{not json")
    report = m3bench.check_root(root, ["mmbench"])
    assert report.problems == [
        f"{MMBENCH}/: no json file for category 'ocr' (task radar_mmbench_ocr)",
        f"{MMBENCH}/: no json file for category 'action_recognition' (task radar_mmbench_action_recognition)",
        f"{MMBENCH}/{first.name}: malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        f"{MMBENCH}/{second.name}: item '{qid}-copy': 'answer' is not a string (got NoneType: None)",
    ]
    assert report.counts[("mmbench", "future_prediction")] == 0
    assert report.counts[("mmbench", "structuralized_imagetext_understanding")] == 2  # checked after them


def test_every_problem_of_a_root_is_reported(root):
    shutil.rmtree(root / MMBENCH)  # the first subset: the others are still checked
    wiki, seephys = only_json(root, WIKI), only_json(root, SEEPHYS)
    w, s = load(wiki), load(seephys)
    w_ids, s_ids = list(w), list(s)
    w[w_ids[0]]["answer"], w[w_ids[2]]["distraction"] = 1, []
    s[s_ids[0]]["img_num"] = -2
    save(wiki, w)
    save(seephys, s)
    report = m3bench.check_root(root)
    assert report.problems == [
        f"subset folder {MMBENCH}/ is missing under {root} (needed by radar_mmbench)",
        f"{SEEPHYS}/{seephys.name}: item {s_ids[0]!r}: 'img_num' must be an integer from 1 to 1000 (got -2)",
        f"{WIKI}/{wiki.name}: item {w_ids[0]!r}: 'answer' is not a string (got int: 1)",
        f"{WIKI}/{wiki.name}: item {w_ids[2]!r}: 'distraction' must be a non-empty list of strings",
    ]
    assert report.counts[("wiki_animal", "wiki_animal")] == len(w) - 2 and not report.ok


def test_check_data_counts_are_the_json_files(root, capsys):
    counts = {}
    for spec in taxonomy.SUBSETS:
        for path in (root / spec.folder).glob("*.json"):
            category = taxonomy.category_of_file(spec.name, path.stem)
            counts[(spec.name, category)] = counts.get((spec.name, category), 0) + len(load(path))
    path = only_json(root, SEEPHYS)
    seephys = load(path)
    seephys[next(iter(seephys))]["img_num"] = 14  # skipped too, and not the last item
    save(path, seephys)
    too_many = sum(item["img_num"] > 12 for item in seephys.values())
    assert too_many == 2
    report = m3bench.check_root(root)
    assert report.ok and report.counts == counts
    assert report.skipped == {key: too_many if key == ("seephys", "seephys") else 0 for key in counts}
    assert radar_tasks_cli(["check-data", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{len(seephys)} items in 1 categories, 2 skipped (> 12 images)" in out
    mmbench = sum(n for (s, _), n in counts.items() if s == "mmbench")
    assert f"{mmbench} items in 20 categories" in out
    assert out.rstrip().endswith(f"0 problem(s) in {root}")


def test_the_record_carries_the_released_item(root):
    path = only_json(root, SEEPHYS)
    data = load(path)
    qid = next(q for q, item in data.items() if item.get("img_num") == 2)
    data[qid]["ori_options"] = "Größe: A oder B"  # non-ASCII stays readable in `source`
    data[qid]["zeta"], data[qid]["alpha"] = 1, [2]
    base = qid.split("--")[0]
    del data[next(iter(data))]["img_num"]  # no img_num: one image
    save(path, data)
    records = {r["id"]: r for r in m3bench.load_category("seephys", "seephys", root)}
    rec, item = records[qid], data[qid]
    assert rec["source_file"] == f"{SEEPHYS}/{path.name}" and rec["absent"] is False and rec["skipped"] is False
    assert (rec["question"], rec["answer"], rec["distractors"]) == (
        item["question"],
        item["answer"],
        item["distraction"],
    )
    assert rec["choices"] == [item["answer"], *item["distraction"]] and rec["options_text"] == ""
    assert rec["images"] == [str(root / SEEPHYS / "images" / f"{base}_{i}.png") for i in range(2)]
    assert rec["source"] == '{"alpha": [2], "img_num": 2, "ori_options": "Größe: A oder B", "zeta": 1}'
    first = next(iter(data))
    assert records[first]["images"] == [str(root / SEEPHYS / "images" / f"{first.split('--')[0]}_0.png")]
    assert m3bench.load_category("seephys", "seephys", root).features == m3bench.record_features()


def test_unset_root(monkeypatch):
    monkeypatch.delenv(m3bench.ENV_VAR, raising=False)
    with pytest.raises(M3BenchError) as err:
        m3bench.load_category("wiki_animal", "wiki_animal")
    assert str(err.value) == (
        "RADAR_M3BENCH_DIR is not set: point it at the M3-Bench folder (the one holding "
        "general_visual_question_answering/, Wiki_animal_identification/, ...)"
    )


def test_fingerprint_covers_subsets_after_an_absent_one(root):
    shutil.rmtree(root / MMBENCH)
    before = m3bench.data_fingerprint(root)
    wiki = only_json(root, WIKI)
    data = load(wiki)
    data[next(iter(data))]["question"] = "Which animal is shown?"
    save(wiki, data)
    assert m3bench.data_fingerprint(root) != before
