"""The upstream export without lmms-eval runs: the dataset folder (radar_tasks.data.export) and the task folder
(radar_tasks.tasks.export): portable, self-contained, generated from our sources, behaving as our hooks do.
The runs through the lmms-eval CLI are test_export_parity.py."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from radar_tasks import prompts, taxonomy
from radar_tasks.data import export as dexport
from radar_tasks.data import images, m3bench
from radar_tasks.errors import M3BenchError
from radar_tasks.metrics import items, lmms
from radar_tasks.task_yamls import generate_tasks
from radar_tasks.tasks import export, hooks

LEAVES = taxonomy.leaf_tasks()


def load(dataset_dir: Path, subset: str, category: str):
    return datasets.load_dataset(str(dataset_dir), dexport.config_name(subset, category), split="test")


def records(root: Path, subset: str, category: str) -> list[dict]:
    """The package's records of a category, read without the datasets cache (fast)."""
    files = json.dumps([str(f) for f in m3bench.category_files(root, subset, category)])
    return list(m3bench.iter_records(str(root), subset, category, files))


@pytest.fixture(scope="module")
def all_exported_docs(exported, utils):
    """Every exported row (all configs in one dataset), after the exported process_docs, by (subset, category)."""
    shards = sorted(str(p) for p in exported[1].glob("*/test-*.parquet"))
    rows = utils.process_docs(datasets.Dataset.from_parquet(shards))
    by_leaf: dict = {}
    for row in rows:
        by_leaf.setdefault((row["subset"], row["category"]), []).append(row)
    return by_leaf


@pytest.fixture(scope="module")
def utils(exported):
    """The exported utils.py, loaded as lmms-eval loads a task folder's utils.py (by file path, unregistered)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("utils", exported[2] / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------- dataset
def test_every_leaf_task_is_a_config_with_the_package_records(exported):
    root, dataset_dir, _ = exported
    configs = dexport.exported_configs(dataset_dir)
    assert configs == {dexport.config_name(s, c) for s, c in LEAVES}
    for subset, category in [
        ("mmbench", "ocr"),
        ("mmmu_pro", "Art_Theory"),
        ("seephys", "seephys"),
        ("wiki_celebrity", "wiki_celebrity"),
    ]:
        ours = m3bench.load_category(subset, category, root)
        theirs = load(dataset_dir, subset, category)
        assert [f for f in theirs.features if f != "image_files"] == list(ours.features)
        assert isinstance(theirs.features["images"].feature, datasets.Image)
        assert len(theirs) == len(ours) > 0
        for a, b in zip(ours, theirs):
            assert {k: v for k, v in a.items() if k != "images"} == {
                k: v for k, v in b.items() if k not in ("images", "image_files")
            }
            if a["skipped"]:  # more than 12 images: never shown to a model, not embedded
                assert b["images"] == b["image_files"] == []
                continue
            assert len(b["images"]) == len(a["images"]) > 0
            assert b["image_files"] == [Path(p).relative_to(root).as_posix() for p in a["images"]]


def test_images_are_the_released_bytes_and_decode_as_the_package_decodes_files(exported, utils):
    """Embedded (the folder is portable), under their path in the release, and doc_to_visual gives the pixels
    the package's own doc_to_visual reads from the files (RGB, palette, RGBA and grayscale files are in the
    fixture)."""
    root, dataset_dir, _ = exported
    n = 0
    for subset, category in [
        ("mmmu_pro", "Art_Theory"),
        ("seephys", "seephys"),
        ("mathvista", "mathvista"),
        ("mmbench", "image_scene"),
    ]:
        ours = m3bench.load_category(subset, category, root)
        theirs = utils.process_docs(load(dataset_dir, subset, category))
        for a, b in zip(ours, theirs):
            if a["skipped"]:
                continue
            assert len(b["image_data"]) == len(a["images"])
            for path, name, image in zip(a["images"], b["images"], b["image_data"]):
                assert image["bytes"] == Path(path).read_bytes()
                assert image["path"] == name == Path(path).relative_to(root).as_posix()
            for x, y in zip(hooks.doc_to_visual(a), utils.doc_to_visual(b)):
                assert x.mode == y.mode == "RGB" and np.array_equal(np.asarray(x), np.asarray(y))
                n += 1
    assert n >= 20


def test_exif_orientation_is_not_applied_as_the_package_does_not(tmp_path, exported):
    """datasets' own Image decoding rotates by the EXIF orientation; the package reads the pixels as stored, and so
    does the exported folder (its process_docs keeps the bytes, doc_to_visual decodes them as the package)."""
    from PIL import Image

    root = tmp_path / "M3-Bench"
    shutil.copytree(exported[0], root)
    [image] = sorted((root / "Wiki_animal_identification" / "images").glob("*.jpg"))[:1]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 20), (10, 200, 10)).save(image, exif=exif)
    dexport.export_dataset(tmp_path / "out", root, subsets=["wiki_animal"])
    ds = load(tmp_path / "out", "wiki_animal", "wiki_animal")
    [row] = [r for r in records(root, "wiki_animal", "wiki_animal") if r["images"][0] == str(image)][:1]
    [exported_row] = [r for r in ds if r["id"] == row["id"]]
    assert exported_row["images"][0].size == (20, 40)  # what a plain datasets user sees
    [ours] = hooks.doc_to_visual(row)
    utils_hooks = export.utils_namespace()
    [theirs] = utils_hooks["doc_to_visual"](utils_hooks["process_docs"](ds.filter(lambda r: r["id"] == row["id"]))[0])
    assert ours.size == theirs.size == (40, 20) and np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_the_dataset_loads_from_anywhere_without_the_release(exported, tmp_path):
    _, dataset_dir, _ = exported
    moved = tmp_path / "moved"
    shutil.copytree(dataset_dir, moved)
    ds = load(moved, "wiki_animal", "wiki_animal")
    assert all(image.width > 0 for row in ds for image in row["images"])  # decoded from the parquet alone
    raw = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    stored = [image for row in raw for image in row["images"]]
    assert len(stored) == 4 and all(image["bytes"] and not Path(image["path"]).is_absolute() for image in stored)


def test_dataset_card_header_counts_and_license_left_to_the_owner(exported):
    _, dataset_dir, _ = exported
    text = (dataset_dir / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "unknown"
    assert len(header["configs"]) == len(LEAVES) and "dataset_info" not in header  # features: in the parquet files
    seephys = load(dataset_dir, "seephys", "seephys")
    assert len(seephys) == 6 and set(seephys.features) == {*m3bench.record_features(), "image_files"}
    assert seephys.features["images"] == datasets.Sequence(datasets.Image())
    assert "| `seephys` | seephys | seephys | reasoning | 6 | 1 |" in text
    assert "| **all** | | | | 132 | 1 |" in text
    assert "upload_folder" in text and "push_to_hub" in text


def test_shards_split_a_config_and_load_as_one(tmp_path, exported):
    root = exported[0]
    out = tmp_path / "sharded"
    summaries = dexport.export_dataset(out, root, subsets=["seephys"], max_shard_bytes=2_000)
    [s] = summaries
    assert s.shards > 1 and len(list((out / "seephys").glob("test-*-of-*.parquet"))) == s.shards
    assert [r["id"] for r in load(out, "seephys", "seephys")] == [
        r["id"] for r in load(exported[1], "seephys", "seephys")
    ]


def test_a_missing_category_file_is_an_absent_config(tmp_path, exported):
    partial = tmp_path / "M3-Bench"
    shutil.copytree(exported[0], partial)
    [ocr] = (partial / "general_visual_question_answering").glob("MMBench_ocr_*.json")
    ocr.unlink()
    summaries = {s.config: s for s in dexport.export_dataset(tmp_path / "out", partial, subsets=["mmbench"])}
    assert summaries["mmbench_ocr"].absent and summaries["mmbench_ocr"].items == 0
    [row] = load(tmp_path / "out", "mmbench", "ocr")
    assert row["absent"]
    assert "| `mmbench_ocr` | mmbench | ocr | perception | absent | 0 |" in (tmp_path / "out" / "README.md").read_text()


def test_bad_data_writes_nothing_and_names_the_file_and_item(tmp_path, exported):
    broken = tmp_path / "M3-Bench"
    shutil.copytree(exported[0], broken)
    wiki = broken / "Wiki_plant_identification"
    [path] = wiki.glob("*.json")
    data = json.loads(path.read_text())
    qid = next(iter(data))
    data[qid]["answer"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(M3BenchError, match=rf"{path.name}: item '{qid}': 'answer' is not a string"):
        dexport.export_dataset(tmp_path / "out", broken, subsets=["wiki_animal", "wiki_plant"])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_refuses_to_overwrite_what_is_not_an_export(tmp_path, exported):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(M3BenchError, match="not an M3-Bench dataset export"):
        dexport.export_dataset(tmp_path / "mine", exported[0], subsets=["spatial"])
    with pytest.raises(M3BenchError, match="unknown subset 'radar_spatial'"):
        dexport.export_dataset(tmp_path / "x", exported[0], subsets=["radar_spatial"])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    dexport.export_dataset(tmp_path / "again", exported[0], subsets=["spatial"])
    dexport.export_dataset(tmp_path / "again", exported[0], subsets=["wiki_plant"])  # an earlier export: replaced
    assert dexport.exported_configs(tmp_path / "again") == {"wiki_plant"}


# ------------------------------------------------------------------------------------------------- task folder
def test_no_file_mentions_or_imports_this_package(exported):
    _, _, tasks = exported
    files = sorted(p for p in tasks.iterdir() if p.is_file())
    assert {p.name for p in files} >= {"utils.py", "_default_template_yaml", "README.md", "radar_mmm.yaml"}
    for path in files:
        assert not re.search(r"radar[_-]tasks", path.read_text(), re.IGNORECASE), path.name
    tree = ast.parse((tasks / "utils.py").read_text())
    roots = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert roots - set(__import__("sys").stdlib_module_names) == {"numpy", "PIL", "datasets", "loguru"}
    for path in files:
        if path.suffix == ".yaml" or path.name.startswith("_"):
            functions = re.findall(r"!function '?([\w.]+)", path.read_text())
            assert all(f.startswith("utils.") for f in functions), (path.name, functions)


def test_same_tasks_and_groups_as_ours(exported):
    _, dataset_dir, tasks = exported
    ours = {
        n: yaml.load(t, Loader=export._Loader) for n, t in generate_tasks.render_all().items() if n.endswith(".yaml")
    }
    theirs = {p.name: yaml.load(p.read_text(), Loader=export._Loader) for p in tasks.glob("*.yaml")}
    assert set(theirs) == set(ours)
    for name, data in ours.items():
        if "group" in data:
            assert theirs[name]["task"] == data["task"] and theirs[name]["group"] == data["group"]
        else:
            assert theirs[name]["task"] == data["task"]
            assert theirs[name]["dataset_name"] == dexport.config_name(
                data["metadata"]["subset"], data["metadata"]["category"]
            )
    template = yaml.load((tasks / "_default_template_yaml").read_text(), Loader=export._Loader)
    assert template["dataset_path"] == str(dataset_dir) and template["process_docs"] == "utils.process_docs"


class _AsExported(ast.NodeTransformer):
    """What the export does inside a function or class: a package import becomes `pass` (its names are the
    file's), mentions of the package in docstrings name its files."""

    def visit_ImportFrom(self, node):
        return ast.Pass() if (node.module or "").startswith("radar_tasks") else node

    def visit_Constant(self, node):
        return ast.Constant(export.MENTION.sub(export._mention, node.value)) if isinstance(node.value, str) else node


def test_utils_holds_the_source_of_every_inlined_function(exported):
    """One truth: each function and class of the inlined modules is in utils.py exactly as in its source (mentions
    of the package in docstrings, and package imports inside functions, aside)."""
    text = (exported[2] / "utils.py").read_text()
    composed = {n.name: ast.dump(n) for n in ast.parse(text).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    sources = export._sources()
    assert [s.name for s in sources][-1] == export.HOOKS_MODULE
    assert {
        "radar_tasks.taxonomy",
        "radar_tasks.prompts",
        "radar_tasks.metrics.sds",
        "radar_tasks.metrics.items",
        "radar_tasks.data.images",
    } <= {s.name for s in sources}
    n = 0
    for src in sources:
        for node in ast.parse(src.path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                node = _AsExported().visit(node)
                assert composed[node.name] == ast.dump(node), f"{src.name}.{node.name}"
                n += 1
    assert n > 50


def test_check_finds_a_stale_copy(exported, tmp_path):
    _, dataset_dir, tasks = exported
    assert export.check_tasks(tasks, str(dataset_dir)) == []
    copy = tmp_path / "copy"
    shutil.copytree(tasks, copy)
    (copy / "radar_spatial.yaml").write_text((copy / "radar_spatial.yaml").read_text().replace("1.0", "2.0"))
    (copy / "radar_gone.yaml").write_text("task: radar_gone\n")
    (copy / "utils.py").unlink()
    assert sorted(export.check_tasks(copy, str(dataset_dir))) == ["radar_gone.yaml", "radar_spatial.yaml", "utils.py"]
    assert export.check_tasks(copy, "someone/M3-Bench")  # another dataset_path is another export


def test_a_hub_id_is_kept_and_a_local_folder_made_absolute(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(exported[1].parent)
    assert export.resolve_dataset_path("dataset") == str(exported[1])
    assert export.resolve_dataset_path("owner/M3-Bench") == "owner/M3-Bench"
    files = export.render_tasks("owner/M3-Bench")
    assert "dataset_path: owner/M3-Bench\n" in files["_default_template_yaml"]
    assert export.missing_configs("owner/M3-Bench") == []
    dexport.export_dataset(tmp_path / "part", exported[0], subsets=["spatial"])
    assert len(export.missing_configs(str(tmp_path / "part"))) == len(LEAVES) - 1


# ---------------------------------------------------------------------- the exported hooks behave as ours do
def test_doc_hooks_match_the_package_on_every_record(exported, utils, all_exported_docs):
    """The exported docs (after process_docs) through utils.py's hooks give our hooks' prompt and choices."""
    root = exported[0]
    n = 0
    for subset, category in LEAVES:
        ours, theirs = records(root, subset, category), all_exported_docs[(subset, category)]
        assert [r["id"] for r in ours] == [r["id"] for r in theirs]
        for a, b in zip(ours, theirs):
            for kwargs in ({"image_markers": True}, {"image_markers": False}, None):
                assert utils.doc_to_text(b, kwargs) == hooks.doc_to_text(a, kwargs)
            assert utils.doc_to_choice(b) == hooks.doc_to_choice(a)
            n += 1
    assert n == 132


def test_process_results_and_aggregations_match_the_package(exported, utils, all_exported_docs):
    rng = np.random.default_rng(0)
    ours, theirs = [], []
    for subset, category in [("mmbench", "ocr"), ("mmbench", "future_prediction"), ("seephys", "seephys")]:
        for a, b in zip(records(exported[0], subset, category), all_exported_docs[(subset, category)]):
            results = [str((float(x), False)) for x in rng.normal(size=len(hooks.doc_to_choice(a)))]
            ours.append(hooks.process_results(a, results))
            theirs.append(utils.process_results(b, results))
    for o, t in zip(ours, theirs):
        assert {k: v for k, v in t.items() if not k.endswith(utils.SE_SUFFIX)} == o
        assert {k for k in t if k.endswith(utils.SE_SUFFIX)} == {k + "_se" for k, v in o.items() if isinstance(v, dict)}
    for metric, agg in [("sds", "sds_aggregate"), ("acc", "acc_aggregate")]:
        logged = [o[metric] for o in ours]
        assert getattr(utils, agg)(logged) == getattr(lmms, agg)(logged)
        se = getattr(utils, f"{metric}_se_aggregate")([t[metric + "_se"] for t in theirs])
        assert se == getattr(lmms, agg).radar_stderr(logged, 100000) and se > 0
        assert se.parts == getattr(lmms, agg)(logged).parts  # tagged: groups know the subsets
    assert utils.process_results({"absent": True}, []) == {}


def test_group_aggregations_average_subsets_and_combine_stderrs(utils):
    values = [
        items.LeafScore(0.2, [("a", "x")]),
        items.LeafScore(0.4, [("a", "y")]),
        items.LeafScore(0.9, [("b", "b")]),
    ]
    assert utils.group_mean(values, [1, 10, 5]) == pytest.approx((0.3 + 0.9) / 2)
    ses = [items.LeafScore(0.1, [("a", "x")]), items.LeafScore(0.3, [("a", "y")]), items.LeafScore(0.2, [("b", "b")])]
    assert utils.group_se(ses, [1, 1, 1]) == pytest.approx(np.sqrt((np.sqrt(0.01 + 0.09) / 2) ** 2 + 0.04) / 2)
    assert np.isnan(utils.group_se([0.1, 0.2], [1, 1]))  # untagged: not an M3-Bench group
    assert utils.group_sum([2, 3], [2, 3]) == 5 and utils.count_aggregate([1, 1, 0]) == 2


# ------------------------------------------------------------------------------------- what the export refuses
def _probe(tmp_path, monkeypatch, source: str) -> export._Source:
    (tmp_path / "export_probe_module.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return export._read_source("export_probe_module")


def test_imports_a_task_folder_cannot_rely_on_are_refused(tmp_path, monkeypatch):
    with pytest.raises(export.ExportError, match=r"export_probe_module.py:2: imports torch"):
        _probe(tmp_path, monkeypatch, "import os\nimport torch\n")
    inner = _probe(tmp_path, monkeypatch, "def f():\n    from radar_tasks.data.lite import SUFFIX\n    return SUFFIX\n")
    assert inner.lazy_deps == ["radar_tasks.data.lite"] and not inner.deps  # needed by the call, not the definition
    assert "    pass  #" in inner.body and "import" not in inner.body.split("#")[0]
    src = _probe(
        tmp_path,
        monkeypatch,
        '"""Doc."""\nimport re\nfrom radar_tasks import taxonomy as T\n'
        "from radar_tasks.metrics.sds import softmax\nX = T.MAX_IMAGES\n",
    )
    assert src.deps == ["radar_tasks.taxonomy", "radar_tasks.metrics.sds"] and src.aliases == {
        "T": "radar_tasks.taxonomy"
    }
    assert src.imports == ["import re"] and src.defined == {"X"} and src.body.startswith("# Doc.")


def test_a_name_defined_by_two_inlined_modules_is_refused():
    a = export._Source("pkg.a", Path("a.py"), defined={"group_mean", "x"})
    b = export._Source("pkg.b", Path("b.py"), defined={"group_mean"})
    with pytest.raises(export.ExportError, match=r"'group_mean' is defined by both pkg\.a and pkg\.b"):
        export._check_one_namespace([a, b])
    c = export._Source("pkg.c", Path("c.py"), aliases={"x": "pkg.a"})
    with pytest.raises(export.ExportError, match="'x'"):
        export._check_one_namespace([a, c])
    export._check_one_namespace([a, export._Source("pkg.d", Path("d.py"), defined={"y"})])


def test_a_hook_without_an_exported_counterpart_is_refused(exported):
    ctx = export._Rewrite("d", {"doc_to_text": hooks.doc_to_text}, {})
    assert ctx.function(export._Function("radar_tasks.tasks.hooks.doc_to_text"), "t.yaml") == "utils.doc_to_text"
    with pytest.raises(
        export.ExportError,
        match=re.escape("t.yaml: `!function radar_tasks.tasks.hooks.new_hook` has no counterpart `new_hook`"),
    ):
        ctx.function(export._Function("radar_tasks.tasks.hooks.new_hook"), "t.yaml")


def test_prompts_marker_text_reaches_utils(utils):
    # the same constants, not copies that could drift
    assert utils.IMAGE_MARKER == prompts.IMAGE_MARKER and utils.SELECT_PROMPT == prompts.SELECT_PROMPT
    assert utils.MAX_BOOTSTRAP_ITERS == items.MAX_BOOTSTRAP_ITERS
    assert [s.name for s in utils.SUBSETS] == [s.name for s in taxonomy.SUBSETS]
    image = images.to_rgb(__import__("PIL.Image").Image.new("RGBA", (2, 2)))
    assert np.array_equal(
        np.asarray(utils.to_rgb(__import__("PIL.Image").Image.new("RGBA", (2, 2)))), np.asarray(image)
    )


def test_cli_exports_and_checks(tmp_path, exported, capsys):
    from radar_tasks.cli import main

    assert main(["export-tasks", str(tmp_path / "t"), "--dataset-path", str(exported[1])]) == 0
    assert main(["export-tasks", str(tmp_path / "t"), "--dataset-path", str(exported[1]), "--check"]) == 0
    (tmp_path / "t" / "radar_mmm.yaml").write_text("")
    assert main(["export-tasks", str(tmp_path / "t"), "--dataset-path", str(exported[1]), "--check"]) == 1
    assert "out of date: " in capsys.readouterr().out
    assert main(["export-dataset", str(tmp_path / "d"), "--root", str(tmp_path / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert main(["export-dataset", str(tmp_path / "d"), "--root", str(exported[0]), "--subset", "spatial"]) == 0
    assert "1 configs, 5 items" in capsys.readouterr().out
    assert main(["export-tasks", str(tmp_path / "t2"), "--dataset-path", str(tmp_path / "d")]) == 0
    assert "lacks the configs of" in capsys.readouterr().err


def test_lite_leaves_select_the_docs_our_lite_tasks_select(exported, monkeypatch):
    """A leaf whose task-index row selects docs (the lite sample) gets a process_docs of its own in utils.py,
    bound to that row, and scores exactly the docs our own process_docs selects from the same category."""
    root, dataset_dir, tasks = exported
    index = json.loads(generate_tasks.render_all()[generate_tasks.INDEX_FILE])
    utils = export.utils_namespace((tasks / "utils.py").read_text())
    monkeypatch.setenv("RADAR_M3BENCH_DIR", str(root))
    selecting = [t for t, rows in index.items() if set(rows[0]) != {"subset", "category"}]
    assert selecting, "the generator has no leaf that selects docs any more: drop this test"
    checked = 0
    for task in selecting:
        text = (tasks / f"{task}.yaml").read_text()
        assert f"process_docs: !function 'utils.process_docs_{task}'" in text
        row = index[task][0]
        if row["subset"] not in ("mmmu_pro", "wiki_plant"):
            continue
        ours = hooks.process_docs([row])
        theirs = utils[f"process_docs_{task}"](load(dataset_dir, row["subset"], row["category"]))
        assert theirs["id"] == ours["id"] and len(ours) > 0
        checked += 1
    assert checked >= 30


def test_a_row_that_selects_docs_needs_the_selecting_hook():
    ctx = export._Rewrite("d", {}, {"t": [{"subset": "spatial", "category": "spatial", "ids": ["1"]}]})
    with pytest.raises(
        export.ExportError,
        match=r"t.yaml: its task index row selects docs \(category, ids, "
        r"subset\); the exported utils.py needs `selecting\(row\)`",
    ):
        export._rewrite_leaf("t", {"task": "t", "dataset_kwargs": {"field": "t"}}, ctx)
