"""The miniature M3-Bench of radar_tasks.fixture follows the released layout of the protocol note.

The expected names and rules below are copied from docs/REFERENCE.md on purpose (not
imported from radar_tasks): the fixture is checked against the note, not against itself.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections import Counter, deque
from pathlib import Path

import pytest
from PIL import Image

from radar_tasks.demo import fixture

NOTE_MMBENCH = {
    "image_style",
    "image_scene",
    "image_emotion",
    "image_quality",
    "image_topic",
    "object_localization",
    "attribute_recognition",
    "celebrity_recognition",
    "ocr",
    "spatial_relationship",
    "attribute_comparison",
    "action_recognition",
    "physical_property_reasoning",
    "function_reasoning",
    "identity_reasoning",
    "social_relation",
    "physical_relation",
    "nature_relation",
    "future_prediction",
    "structuralized_imagetext_understanding",
}
NOTE_MMMU = {
    "Accounting",
    "Agriculture",
    "Architecture_and_Engineering",
    "Art",
    "Art_Theory",
    "Basic_Medical_Science",
    "Biology",
    "Chemistry",
    "Clinical_Medicine",
    "Computer_Science",
    "Design",
    "Diagnostics_and_Laboratory_Medicine",
    "Economics",
    "Electronics",
    "Energy_and_Power",
    "Finance",
    "Geography",
    "History",
    "Literature",
    "Manage",
    "Marketing",
    "Materials",
    "Math",
    "Mechanical_Engineering",
    "Music",
    "Pharmacy",
    "Physics",
    "Psychology",
    "Public_Health",
    "Sociology",
}
WIKI = ("animal", "plant", "attraction", "celebrity")
FOLDERS = {
    "general_visual_question_answering",
    "multiple_discipline_reasoning",
    "mathematical_reasoning",
    "physical_reasoning",
    "spatial_reasoning",
    *(f"Wiki_{k}_identification" for k in WIKI),
}
SINGLE_FILE = [
    "mathematical_reasoning",
    "physical_reasoning",
    "spatial_reasoning",
    *(f"Wiki_{k}_identification" for k in WIKI),
]
IMAGE_REF = re.compile(r"<image (\d+)>")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return fixture.make_fixture(tmp_path_factory.mktemp("fx") / "M3-Bench")


def load(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def jsons(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


def image_files(folder: Path) -> set[Path]:
    return {p for p in (folder / "images").rglob("*") if p.is_file()}


def base_of(qid: str) -> str:
    return qid.split("--", 1)[0]


def all_items(root: Path):
    for path in sorted(root.rglob("*.json")):
        for qid, item in load(path).items():
            yield path, qid, item


# ------------------------------------------------------------------------------------------------ layout


def test_top_level_folders_are_exactly_the_nine_subsets(root):
    assert {p.name for p in root.iterdir()} == FOLDERS
    for name in FOLDERS:
        assert (root / name / "images").is_dir(), name
        assert jsons(root / name), f"{name} has no json"


def test_mmbench_file_names_parse_back_to_every_category(root):
    folder = root / "general_visual_question_answering"
    seen, referenced = set(), set()
    for path in jsons(folder):
        m = re.fullmatch(r"MMBench_(?P<category>.+)_(?P<n>\d+)_pretrained_mllm_eval\.json", path.name)
        assert m, path.name
        category, items = m["category"], load(path)
        assert int(m["n"]) == len(items) == 2, path.name
        seen.add(category)
        for qid in items:
            img = folder / "images" / category / f"{qid}.jpg"
            assert img.is_file(), img
            referenced.add(img)
    assert seen == NOTE_MMBENCH
    assert any("_" in c for c in seen)
    assert image_files(folder) == referenced  # no stray image


def test_mmmu_pro_file_names_options_and_images(root):
    folder = root / "multiple_discipline_reasoning"
    seen, referenced = set(), set()
    kinds = Counter()
    for path in jsons(folder):
        m = re.fullmatch(r"MMMU_Pro_(?P<subject>.+)_(?P<n>\d+)_pretrained_mllm_eval\.json", path.name)
        assert m, path.name
        subject, items = m["subject"], load(path)
        assert int(m["n"]) == len(items) == 2, path.name
        seen.add(subject)
        for qid, item in items.items():
            options = ast.literal_eval(item["ori_options"])
            assert isinstance(item["ori_options"], str) and isinstance(options, list)
            assert sorted(options) == sorted([item["answer"], *item["distraction"]]), qid
            in_question = IMAGE_REF.findall(item["question"])
            in_options = [k for o in options for k in IMAGE_REF.findall(o)]
            kinds[f"question_refs_{min(len(in_question), 2)}"] += 1
            if in_options:
                kinds["image_options"] += 1
                kinds["image_options_with_question_ref"] += bool(in_question)
                assert IMAGE_REF.fullmatch(item["answer"]) and all(IMAGE_REF.fullmatch(d) for d in item["distraction"])
            assert len(set(in_question + in_options)) == len(in_question + in_options), qid
            for k in in_question + in_options:
                img = folder / "images" / subject / f"{qid}_image_{k}.png"
                assert img.is_file(), img
                referenced.add(img)
    assert seen == NOTE_MMMU
    assert image_files(folder) == referenced
    assert kinds["question_refs_2"] and kinds["question_refs_1"] and kinds["question_refs_0"], kinds
    assert kinds["image_options"] and kinds["image_options_with_question_ref"], kinds
    assert kinds["image_options"] > kinds["image_options_with_question_ref"], "want one without a question ref"


def test_mmmu_pro_ori_options_with_quotes(root):
    item = load(root / "multiple_discipline_reasoning" / "MMMU_Pro_Physics_2_pretrained_mllm_eval.json")
    assert any("'" in o for o in ast.literal_eval(item["test_Physics_1"]["ori_options"]))


def test_single_file_subsets(root):
    for name in SINGLE_FILE:
        files = jsons(root / name)
        assert len(files) == 1, name
        items = load(files[0])
        assert 3 <= len(items) <= 6, name
        m = re.fullmatch(r"(?P<prefix>.+)_(?P<n>\d+)_pretrained_mllm_eval\.json", files[0].name)
        assert m and int(m["n"]) == len(items), files[0].name
        if name == "mathematical_reasoning":
            assert m["prefix"] == "MathVista"
        if name.startswith("Wiki_"):
            assert m["prefix"] == name


def test_base_id_images_and_sharing(root):
    for name in ["mathematical_reasoning", "spatial_reasoning", *(f"Wiki_{k}_identification" for k in WIKI)]:
        folder = root / name
        items = load(jsons(folder)[0])
        bases = Counter(base_of(q) for q in items)
        referenced = {folder / "images" / f"{b}.jpg" for b in bases}
        assert all(p.is_file() for p in referenced), name
        assert image_files(folder) == referenced, name
        if name != "mathematical_reasoning":
            assert max(bases.values()) >= 2, f"{name}: no two records share one image"
            assert any("--" not in q for q in items), f"{name}: want an id without '--'"
    spatial = load(jsons(root / "spatial_reasoning")[0])
    assert any(q.count("--") >= 2 for q in spatial), "want an id with two '--'"


def test_seephys_images(root):
    folder = root / "physical_reasoning"
    items = load(jsons(folder)[0])
    referenced = set()
    for qid, item in items.items():
        n = item["img_num"]
        assert isinstance(n, int) and n >= 1, qid
        assert "--" not in qid
        for i in range(n):
            assert (folder / "images" / f"{qid}_{i}.png").is_file(), (qid, i)
            referenced.add(folder / "images" / f"{qid}_{i}.png")
        assert not (folder / "images" / f"{qid}_{n}.png").exists()
    assert image_files(folder) == referenced
    nums = sorted(item["img_num"] for item in items.values())
    assert any(1 < n <= 12 for n in nums), nums
    assert 12 in nums and 13 in nums, nums  # the last scored size and the first skipped one


# ------------------------------------------------------------------------------------------------ items


def test_every_item_has_the_common_schema(root):
    n_distractors = Counter()
    ids = Counter()
    for path, qid, item in all_items(root):
        where = f"{path.name}:{qid}"
        assert isinstance(item["question"], str) and item["question"], where
        assert isinstance(item["answer"], str) and item["answer"], where
        d = item["distraction"]
        assert isinstance(d, list) and d and all(isinstance(x, str) and x for x in d), where
        assert item["answer"] not in d and len(set(d)) == len(d), where
        n_distractors[len(d)] += 1
        ids[(path.parent.name, qid)] += 1
    assert set(n_distractors) == {1, 2, 3, 4}, n_distractors
    assert max(ids.values()) == 1


def test_item_counts(root):
    counts = {p.parent.name: 0 for p in root.rglob("*.json")}
    for path, _, _ in all_items(root):
        counts[path.parent.name] += 1
    assert counts["general_visual_question_answering"] == 2 * 20
    assert counts["multiple_discipline_reasoning"] == 2 * 30
    assert all(3 <= counts[name] <= 6 for name in SINGLE_FILE), counts


def test_image_formats_and_modes(root):
    modes = Counter()
    for p in root.rglob("images/**/*"):
        if not p.is_file():
            continue
        with Image.open(p) as im:
            im.load()
            assert im.format == {".jpg": "JPEG", ".png": "PNG"}[p.suffix], p
            modes[(p.suffix, im.mode)] += 1
    assert modes[(".jpg", "L")] and modes[(".png", "L")], modes
    assert modes[(".png", "P")] and modes[(".png", "RGBA")], modes
    assert modes[(".jpg", "RGB")] and modes[(".png", "RGB")], modes


def test_non_ascii_text_is_written_as_utf8(root):
    raw = next((root / "Wiki_attraction_identification").glob("*.json")).read_bytes()
    assert "Família".encode() in raw


# ------------------------------------------------------------------------------------------------ content


def _nearest_colour(img: Image.Image) -> str:
    raw = img.convert("RGB").tobytes()
    pixels = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    pixels = [px for px in pixels if sum(abs(a - b) for a, b in zip(px, fixture.BACKGROUND)) > 60]
    assert pixels, "blank image"
    mean = [sum(px[i] for px in pixels) / len(pixels) for i in range(3)]
    return min(fixture.COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(fixture.COLORS[c], mean)))


def _count_blobs(img: Image.Image) -> int:
    gray = img.convert("RGB").convert("L")
    w, h = gray.size
    ink = {(x, y) for y in range(h) for x in range(w) if gray.getpixel((x, y)) < 230}
    blobs = 0
    while ink:
        queue, size = deque([ink.pop()]), 0
        while queue:
            x, y = queue.popleft()
            size += 1
            for nb in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if nb in ink:
                    ink.remove(nb)
                    queue.append(nb)
        blobs += size >= 6  # ignore compression specks
    return blobs


def test_colour_and_count_answers_match_the_images(root):
    """The content is learnable: colour answers are the drawn colour, count answers the number of dots."""
    checked = Counter()
    folder = root / "general_visual_question_answering"
    for path in jsons(folder):
        category = re.fullmatch(r"MMBench_(.+)_\d+_pretrained_mllm_eval\.json", path.name)[1]
        for qid, item in load(path).items():
            with Image.open(folder / "images" / category / f"{qid}.jpg") as im:
                if item["question"] == fixture.Q_COLOR:
                    assert item["answer"] in fixture.COLORS
                    assert _nearest_colour(im) == item["answer"], (path.name, qid)
                    checked["colour"] += 1
                elif item["question"] == fixture.Q_COUNT:
                    assert _count_blobs(im) == int(item["answer"]), (path.name, qid)
                    checked["count"] += 1
    folder = root / "physical_reasoning"
    for qid, item in load(jsons(folder)[0]).items():
        total = 0
        for i in range(item["img_num"]):
            with Image.open(folder / "images" / f"{qid}_{i}.png") as im:
                total += _count_blobs(im)
        assert total == int(item["answer"]), qid
        checked["seephys"] += 1
    assert checked["colour"] >= 5 and checked["count"] >= 5 and checked["seephys"] == 6, checked


def test_wiki_entities_are_drawn_with_their_signature(root):
    for kind in WIKI:
        folder = root / f"Wiki_{kind}_identification"
        for qid, item in load(jsons(folder)[0]).items():
            if item["question"] != fixture.Q_WIKI_NAME.format(kind=kind):
                continue
            colour, _shape = fixture.WIKI_ENTITIES[kind][item["answer"]]
            with Image.open(folder / "images" / f"{base_of(qid)}.jpg") as im:
                assert _nearest_colour(im) == colour, (kind, qid)


# ------------------------------------------------------------------------------------------------ building


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    a = _snapshot(fixture.make_fixture(tmp_path / "a"))
    b = _snapshot(fixture.make_fixture(tmp_path / "b", seed=0))
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    c = _snapshot(fixture.make_fixture(tmp_path / "c", seed=1))
    assert any(c.get(k) != v for k, v in a.items()), "the seed changes nothing"


def test_fast(tmp_path):
    start = time.perf_counter()
    fixture.make_fixture(tmp_path / "M3-Bench")
    assert time.perf_counter() - start < 5


def test_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "M3-Bench"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError) as err:
        fixture.make_fixture(out)
    assert "\n" not in str(err.value) and "non-empty" in str(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M3-Bench"]  # no temporary sibling left
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ValueError):
        fixture.make_fixture(target)


def test_accepts_an_existing_empty_folder(tmp_path):
    out = tmp_path / "M3-Bench"
    out.mkdir()
    assert fixture.make_fixture(out) == out.absolute()
    assert {p.name for p in out.iterdir()} == FOLDERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["M3-Bench"]


def test_a_crash_leaves_no_half_written_fixture(tmp_path, monkeypatch):
    real, calls = fixture._write_file, []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 50:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(fixture, "_write_file", flaky)
    with pytest.raises(OSError, match="disk full"):
        fixture.make_fixture(tmp_path / "M3-Bench")
    assert len(calls) == 50
    assert list(tmp_path.iterdir()) == []
