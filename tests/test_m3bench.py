"""Reading the released layout, and every kind of bad input named in one line (radar_tasks/data/m3bench.py)."""

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from radar_tasks import prompts, taxonomy
from radar_tasks.data import m3bench
from radar_tasks.demo.fixture import make_fixture
from radar_tasks.errors import M3BenchError
from radar_tasks.tasks.hooks import doc_to_choice, doc_to_text, doc_to_visual

WIKI = "Wiki_animal_identification"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("fx") / "M3-Bench")


@pytest.fixture
def root(pristine, tmp_path, monkeypatch):
    """A private copy of the fixture (tests corrupt it), with a private datasets cache.

    `datasets` reads HF_DATASETS_CACHE once, at import: the cache it really uses is `datasets.config`'s."""
    import datasets.config

    copy = tmp_path / "M3-Bench"
    shutil.copytree(pristine, copy)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv(m3bench.ENV_VAR, str(copy))
    return copy


def _arrow_files(tmp_path) -> set[Path]:
    return set((tmp_path / "hf-cache").rglob("*.arrow"))


def _json_of(root, folder):
    return next((root / folder).glob("*.json"))


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return data


def test_every_fixture_category_loads_with_normalized_records(root):
    for subset, category in taxonomy.leaf_tasks():
        ds = m3bench.load_category(subset, category)
        assert len(ds) >= 2, (subset, category)
        rec = ds[0]
        assert rec["subset"] == subset and rec["category"] == category
        assert rec["ability"] == taxonomy.ability_of(subset, category)
        assert rec["choices"][0] in (rec["answer"], "A", "B", "C", "D", "E")
        assert all(Path(p).is_file() for p in rec["images"]) or rec["skipped"]


def test_categories_with_underscores_parse_from_file_names(root):
    ds = m3bench.load_category("mmbench", "structuralized_imagetext_understanding")
    assert set(ds["category"]) == {"structuralized_imagetext_understanding"}
    ds = m3bench.load_category("mmmu_pro", "Diagnostics_and_Laboratory_Medicine")
    assert all(p.split("/")[-2] == "Diagnostics_and_Laboratory_Medicine" for r in ds for p in r["images"])


def test_shared_images_for_dash_ids_and_seephys_multi_image(root):
    recs = [
        r
        for s in ("spatial", "wiki_animal", "wiki_plant", "wiki_attraction", "wiki_celebrity")
        for r in m3bench.load_category(s, s)
    ]
    shared = [r for r in recs if "--" in r["id"]]
    assert shared and all(Path(r["images"][0]).stem == r["id"].split("--")[0] for r in shared)
    seephys = m3bench.load_category("seephys", "seephys")
    multi = [r for r in seephys if len(r["images"]) > 1 and not r["skipped"]]
    assert multi and all(Path(p).name == f"{r['id']}_{i}.png" for r in multi for i, p in enumerate(r["images"]))
    skipped = [r for r in seephys if r["skipped"]]
    assert len(skipped) == 1 and len(skipped[0]["images"]) > taxonomy.MAX_IMAGES
    assert doc_to_visual(skipped[0]) == [] and len(doc_to_choice(skipped[0])) == 1


def test_mmmu_pro_inline_images_and_image_options(root):
    recs = [r for c in taxonomy.MMMU_PRO_SUBJECTS for r in m3bench.load_category("mmmu_pro", c)]
    inline = [r for r in recs if "<image" in r["question"] and not r["options_text"]]
    assert inline
    r = inline[0]
    prompt = doc_to_text(r, {"image_markers": True})
    assert prompt.count("<image>") == len(r["images"]) and "<image 1>" not in prompt
    lettered = [r for r in recs if r["options_text"]]
    assert lettered
    for r in lettered:
        assert r["options_text"].endswith(prompts.SELECT_PROMPT)
        correct = r["choices"][0]
        assert f"{correct}. {r['answer']}" in r["options_text"]  # the correct letter names the answer
        assert sorted(r["choices"]) == list("ABCDEFGH"[: len(r["choices"])])
        assert len(r["images"]) == len(prompts.IMAGE_REF.findall(r["question"] + r["options_text"]))


def test_options_block_follows_ori_options(root):
    """The scripts show the options (and score letters) when `ori_options` names an image, not the candidates."""
    path = root / "multiple_discipline_reasoning" / "MMMU_Pro_Agriculture_2_pretrained_mllm_eval.json"
    data = json.loads(path.read_text())
    text_item = next(k for k, v in data.items() if "<image" not in v["ori_options"])
    image_item = next(k for k, v in data.items() if "<image" in v["ori_options"])
    # text options whose ORIGINAL options held an image: shown, lettered
    data[text_item]["ori_options"] = repr(["<image 2>", "a red circle"])
    # image candidates whose original options were text: not shown; the candidates are scored as written
    data[image_item]["ori_options"] = repr(["one", "two", "three"])
    path.write_text(json.dumps(data))
    recs = {r["id"]: r for r in m3bench.load_category("mmmu_pro", "Agriculture")}
    shown, plain = recs[text_item], recs[image_item]
    options = [shown["answer"], *shown["distractors"]]
    assert shown["options_text"] == prompts.option_block(shown["answer"], shown["distractors"], shown["correct_first"])
    assert shown["choices"] == prompts.option_letters(len(options), shown["correct_first"])
    assert len(shown["images"]) == len(prompts.IMAGE_REF.findall(shown["question"]))  # options hold no image
    assert plain["options_text"] == "" and plain["choices"] == [plain["answer"], *plain["distractors"]]
    assert not plain["correct_first"] and "<image" in plain["answer"]
    assert len(plain["images"]) == len(prompts.IMAGE_REF.findall(plain["question"]))


def test_correct_first_is_the_seeded_draw_in_every_file_order(root):
    recs = [r for c in taxonomy.MMMU_PRO_SUBJECTS for r in m3bench.load_category("mmmu_pro", c)]
    lettered = [r for r in recs if r["options_text"]]
    assert {r["correct_first"] for r in lettered} == {True, False}  # both orders occur in the fixture
    for r in lettered:
        # the draw is pinned (changing it changes every MMMU-Pro letter score): seed 0, keyed by subset and id
        assert r["correct_first"] == (random.Random(f"0:mmmu_pro/{r['id']}").random() > 0.5)
        assert r["options_text"].startswith(f" A. {r['answer']} " if r["correct_first"] else " A. ")
        assert r["options_text"].endswith(f" {r['answer']}{prompts.SELECT_PROMPT}") != r["correct_first"]


@pytest.mark.parametrize(
    "value,message", [(None, "'ori_options' is missing"), (["<image 1>"], "'ori_options' is not a string")]
)
def test_mmmu_pro_needs_ori_options(root, value, message):
    path = root / "multiple_discipline_reasoning" / "MMMU_Pro_Art_2_pretrained_mllm_eval.json"
    qid = _first_id(path)
    _edit(path, lambda d: d[qid].pop("ori_options") if value is None else d[qid].__setitem__("ori_options", value))
    with pytest.raises(M3BenchError) as err:
        m3bench.load_category("mmmu_pro", "Art")
    assert message in str(err.value) and f"item {qid!r}" in str(err.value) and path.name in str(err.value)


def test_non_rgb_images_are_converted(root):
    modes = set()
    for subset, category in taxonomy.leaf_tasks():
        for r in m3bench.load_category(subset, category):
            for path in r["images"][:1] if not r["skipped"] else []:
                from PIL import Image

                with Image.open(path) as im:
                    modes.add(im.mode)
                assert all(im.mode == "RGB" for im in doc_to_visual(r))
    assert modes - {"RGB"}, "the fixture should hold non-RGB files"


def test_results_are_cached_and_edits_invalidate_the_cache(root, tmp_path):
    first = m3bench.load_category("wiki_animal", "wiki_animal")
    again = m3bench.load_category("wiki_animal", "wiki_animal")
    assert again.cache_files and again.cache_files[0]["filename"] == first.cache_files[0]["filename"]
    assert {Path(f["filename"]) for f in first.cache_files} <= _arrow_files(tmp_path)  # in the private cache
    path = _json_of(root, WIKI)
    data = _edit(path, lambda d: d[next(iter(d))].__setitem__("question", "Edited question?"))
    edited = m3bench.load_category("wiki_animal", "wiki_animal")
    assert "Edited question?" in edited["question"] and len(edited) == len(data)


def test_env_var_unset_or_wrong(monkeypatch, tmp_path):
    monkeypatch.delenv(m3bench.ENV_VAR, raising=False)
    with pytest.raises(M3BenchError, match="RADAR_M3BENCH_DIR is not set"):
        m3bench.load_category("wiki_animal", "wiki_animal")
    monkeypatch.setenv(m3bench.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(M3BenchError, match="is not a folder"):
        m3bench.load_category("wiki_animal", "wiki_animal")


def test_only_requested_subsets_need_their_folder(root):
    shutil.rmtree(root / "physical_reasoning")
    assert len(m3bench.load_category("wiki_animal", "wiki_animal")) > 0
    with pytest.raises(M3BenchError, match=r"subset folder physical_reasoning/ is missing .* radar_seephys"):
        m3bench.load_category("seephys", "seephys")


def _first_id(path):
    return next(iter(json.loads(path.read_text())))


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda it: it.__setitem__("answer", 3), "'answer' is not a string"),
        (lambda it: it.pop("distraction"), "'distraction' is missing"),
        (lambda it: it.__setitem__("distraction", []), "'distraction' must be a non-empty list"),
        (lambda it: it.__setitem__("distraction", [it["answer"], "x"]), "repeated among the distractors"),
    ],
)
def test_bad_items_are_named_with_file_and_id(root, mutate, message):
    path = _json_of(root, WIKI)
    qid = _first_id(path)
    _edit(path, lambda d: mutate(d[qid]))
    with pytest.raises(M3BenchError) as err:
        m3bench.load_category("wiki_animal", "wiki_animal")
    text = str(err.value)
    assert message in text and f"item {qid!r}" in text and path.name in text and "\n" not in text


def test_malformed_json(root):
    path = _json_of(root, WIKI)
    path.write_text(path.read_text()[:-5])
    with pytest.raises(M3BenchError, match=rf"{path.name}: malformed JSON: .* line \d+ column \d+"):
        m3bench.load_category("wiki_animal", "wiki_animal")


def test_duplicate_ids(root):
    path = _json_of(root, WIKI)
    text = path.read_text()
    qid = _first_id(path)
    item = json.dumps(json.loads(text)[qid])
    path.write_text(text.rstrip().rstrip("}") + f', "{qid}": {item}}}')
    with pytest.raises(M3BenchError, match=rf"item '{qid}': duplicate id"):
        m3bench.load_category("wiki_animal", "wiki_animal")


def test_missing_and_truncated_images(root):
    path = _json_of(root, WIKI)
    qid = _first_id(path)
    image = root / WIKI / "images" / f"{qid.split('--')[0]}.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    with pytest.raises(M3BenchError, match=rf"item '{qid}': image .*{image.name} is unreadable or truncated"):
        m3bench.load_category("wiki_animal", "wiki_animal")
    image.unlink()
    with pytest.raises(M3BenchError, match=rf"item '{qid}': image .*{image.name} is missing"):
        m3bench.load_category("wiki_animal", "wiki_animal")


def test_failed_read_leaves_no_cache_behind(root, tmp_path):
    m3bench.load_category("wiki_plant", "wiki_plant")
    cached = _arrow_files(tmp_path)
    assert cached  # a good read is cached here: this is the folder to watch
    path = _json_of(root, WIKI)
    qid = _first_id(path)
    _edit(path, lambda d: d[qid].__setitem__("answer", None))
    for _ in range(2):  # and the second read fails again: nothing was cached to serve it
        with pytest.raises(M3BenchError, match=rf"item '{qid}': 'answer' is not a string"):
            m3bench.load_category("wiki_animal", "wiki_animal")
    assert _arrow_files(tmp_path) == cached


def test_check_data_reports_every_problem(root, capsys):
    from radar_tasks.cli import main

    assert main(["check-data", str(root)]) == 0
    wiki = _json_of(root, WIKI)
    ids = list(json.loads(wiki.read_text()))
    _edit(wiki, lambda d: (d[ids[0]].__setitem__("answer", 1), d[ids[1]].pop("distraction")))
    (root / "general_visual_question_answering" / "MMBench_made_up_category_3_pretrained_mllm_eval.json").write_text(
        "{}"
    )
    (_json_of(root, "mathematical_reasoning")).write_text("{not json")
    capsys.readouterr()
    assert main(["check-data", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"item {ids[0]!r}: 'answer' is not a string" in err
    assert f"item {ids[1]!r}: 'distraction' is missing" in err
    assert "MMBench_made_up_category_3_pretrained_mllm_eval.json: file name matches no category" in err
    assert "malformed JSON" in err


def test_data_fingerprint_follows_content_and_subsets(tmp_path):
    root = make_fixture(tmp_path / "M3-Bench")
    first = m3bench.data_fingerprint(root)
    assert first == m3bench.data_fingerprint(root) and len(first) == 16
    wiki = m3bench.data_fingerprint(root, ["wiki_animal"])
    assert wiki != first
    spatial = root / "spatial_reasoning" / "spatial_reasoning_5_pretrained_mllm_eval.json"
    text = spatial.read_text()
    stat = spatial.stat()
    spatial.write_text(text.replace('"above"', '"abovE"', 1))  # same size: the content counts, not the stat
    os.utime(spatial, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert m3bench.data_fingerprint(root) != first
    assert m3bench.data_fingerprint(root, ["wiki_animal"]) == wiki  # other subsets untouched
    image = next((root / "Wiki_animal_identification" / "images").iterdir())
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert m3bench.data_fingerprint(root, ["wiki_animal"]) != wiki


# ----------------------------------------------------------------------------------------------- hostile data
def _first_item_edit(root, fn):
    path = _json_of(root, WIKI)
    qid = _first_id(path)
    _edit(path, lambda d: fn(d, qid))
    return path, qid


def _load_error(subset="wiki_animal", category=None) -> str:
    with pytest.raises(M3BenchError) as err:
        m3bench.load_category(subset, category or subset)
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("bad_id", ["../../../outside/secret", "/abs/missing", "a\\b", "..", "--0", "x\ny"])
def test_ids_that_would_leave_their_folder_are_refused(root, bad_id, capsys):
    from radar_tasks.cli import main

    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(next((root / WIKI / "images").glob("*.jpg")), outside / "secret.jpg")
    path, _ = _first_item_edit(root, lambda d, q: d.__setitem__(bad_id, d.pop(q)))
    text = _load_error()
    assert path.name in text and "the id" in text
    assert main(["check-data", str(root), "--subset", "radar_wiki_animal"]) == 1  # no traceback either
    assert "the id" in capsys.readouterr().err


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("question", "What is <image> here?", "'question' holds '<image>', the prompts' image marker"),
        ("question", "What <|image_pad|> is it?", "'question' holds '<|image_pad|>', a model control token"),
        ("distraction", ["cat", "<|im_end|>"], "'distraction[1]' holds '<|im_end|>'"),
        ("answer", "", "'answer' is empty"),
        ("answer", "   ", "'answer' is empty"),
        ("distraction", ["cat", ""], "'distraction[1]' is empty"),
        ("question", "", "'question' is empty"),
        ("distraction", [f"d{i}" for i in range(40)], "'distraction' holds 40 candidates, more than 25"),
    ],
)
def test_text_that_would_not_be_read_as_text_is_refused(root, field, value, message):
    path, qid = _first_item_edit(root, lambda d, q: d[q].__setitem__(field, value))
    text = _load_error()
    assert message in text and f"item {qid!r}" in text and path.name in text


def test_image_references_outside_mmmu_pro_stay_literal_text(root):
    _first_item_edit(root, lambda d, q: d[q].__setitem__("question", "Which animal is in <image 1>?"))
    rec = next(r for r in m3bench.load_category("wiki_animal", "wiki_animal") if "<image 1>" in r["question"])
    prompt = doc_to_text(rec, {"image_markers": True})
    assert len(rec["images"]) == 1 and prompt.count("<image>") == 1 and "<image 1>" in prompt


@pytest.mark.parametrize("value", [0, -1, 100_000_000, 2.0, "3", True])
def test_img_num_must_be_a_sane_integer(root, value):
    path = _json_of(root, "physical_reasoning")
    qid = _first_id(path)
    _edit(path, lambda d: d[qid].__setitem__("img_num", value))
    text = _load_error("seephys")
    assert "'img_num' must be an integer from 1 to 1000" in text and f"item {qid!r}" in text


def test_json_nested_too_deeply_or_empty(root):
    path = _json_of(root, WIKI)
    path.write_text('{"Q1": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert "JSON nested too deeply" in _load_error()
    path.write_text("{}")
    assert f"{path.name}: the JSON object holds no items" in _load_error()


@pytest.mark.parametrize(
    "folder,subset",
    [
        (WIKI, "wiki_animal"),
        ("mathematical_reasoning", "mathvista"),
        ("physical_reasoning", "seephys"),
        ("spatial_reasoning", "spatial"),
    ],
)
def test_stray_json_in_a_single_file_subset_is_reported_and_not_merged(root, folder, subset, capsys):
    from radar_tasks.cli import main

    n = len(m3bench.load_category(subset, subset))
    (root / folder / "notes.json").write_text(
        json.dumps({"Z1": {"question": "?", "answer": "a", "distraction": ["b"]}})
    )
    (root / folder / "README.txt").write_text("hello")
    assert len(m3bench.load_category(subset, subset)) == n
    assert main(["check-data", str(root), "--subset", subset]) == 1
    err = capsys.readouterr().err
    assert f"{folder}/notes.json: a json file beside" in err and "not read" in err
    assert f"note: {folder}/README.txt: not part of the layout" in err


def test_a_lone_json_of_any_name_is_the_data_of_a_single_file_subset(root):
    folder = root / "spatial_reasoning"
    [data] = folder.glob("*.json")
    n = len(m3bench.load_category("spatial", "spatial"))
    data.rename(folder / "spatial.json")
    assert len(m3bench.load_category("spatial", "spatial")) == n
    (folder / "other.json").write_text("{}")  # two files, neither named like the release: which one is unknown
    with pytest.raises(M3BenchError, match="no json file for category 'spatial'"):
        m3bench.load_category("spatial", "spatial")


def test_check_data_accepts_task_and_group_names(root, capsys):
    from radar_tasks.cli import main

    assert main(["check-data", str(root), "--subset", "radar_mmbench_ocr", "--subset", "wiki_plant"]) == 0
    out = capsys.readouterr().out
    assert "mmbench" in out and "1 categories" in out and "wiki_plant" in out and "wiki_animal" not in out


def test_cache_is_keyed_on_content_and_rechecks_images(root, monkeypatch):
    first = m3bench.load_category("wiki_animal", "wiki_animal")
    path = _json_of(root, WIKI)
    stat = path.stat()
    text = path.read_text()
    assert '"dog"' in text
    path.write_text(text.replace('"dog"', '"cow"', 1))  # same size, mtime put back: only the content tells
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "cow" in m3bench.load_category("wiki_animal", "wiki_animal")["answer"]
    # an image replaced by another valid one: validated again, no error
    image = Path(first[0]["images"][0])
    from PIL import Image

    Image.new("RGB", (40, 30), "red").save(image, "JPEG")
    assert len(m3bench.load_category("wiki_animal", "wiki_animal")) == len(first)
    # deleted after a good (cached) read: the next read names it, before any scoring
    image.unlink()
    assert f"image {WIKI}/images/{image.name} is missing" in _load_error()


def test_absolute_or_walking_image_paths_never_leave_the_images_folder(root):
    assert m3bench._inside(root / WIKI / "images" / "Q1.jpg", root / WIKI / "images")
    assert not m3bench._inside(root / WIKI / "images" / ".." / ".." / "x.jpg", root / WIKI / "images")
    assert not m3bench._inside(Path("/etc/passwd"), root / WIKI / "images")


def test_header_only_image_above_the_pixel_limit_is_named(root):
    import struct
    import zlib

    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    image = sorted((root / WIKI / "images").glob("*.jpg"))[0]
    image.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
    text = _load_error()
    assert f"image {WIKI}/images/{image.name} is 12000x12000 = 144,000,000 pixels, above the limit" in text


@pytest.mark.parametrize(
    "qid,problem",
    [
        ("../../outside/secret", "path separator"),
        ("a\\b", "path separator"),
        ("/abs/x", "path separator"),
        ("a\x1fb", "control character"),
        ("a\x7fb", "control character"),
        ("", "names no file"),
        ("   ", "names no file"),
        ("..", "names no file"),
        ("..--2", "names no file"),
        (".--x", "names no file"),
        ("x" * 201, "longer"),
    ],
)
def test_ids_that_cannot_name_a_file_inside_their_folder(qid, problem):
    assert problem in m3bench.id_problem(qid)


@pytest.mark.parametrize("qid", ["test_Art_12", "Abyssinian cat 3", "q--2", "a--..", "épreuve_1", "x" * 200, "a.b"])
def test_ids_the_layout_can_use(qid):
    assert m3bench.id_problem(qid) is None
