"""lmms-eval 0.7.3 behaviour this package works around: one minimal reproduction each (docs/UPSTREAM.md,
same numbering). Every test asserts the *current* upstream behaviour, so it fails when upstream changes it:
then drop the workaround the failure message names, and this test.

In process where possible: one small evaluation of a toy task folder with a stub model (`toy_run`) shows several
at once; only the CLI's exit status and its plugin handling need a subprocess (one, shared).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import lmms_cli
import pytest

pytestmark = pytest.mark.upstream


def fixed(n: int, what: str, workaround: str) -> str:
    return f"lmms-eval changed: {what} (docs/UPSTREAM.md #{n}). If it is fixed upstream, remove {workaround}."


TOY_UTILS = '''
import json, os

def process_results(doc, results):
    """What a task sees: whether the model's (loss, is_greedy) tuples arrived as strings."""
    v = doc["v"]
    return {"result_is_str": float(all(isinstance(r, str) for r in results)), "custom": v, "custom_extra": v,
            "builtin": v}

def custom_mean(values):
    return sum(values) / len(values)

def recording_mean(metrics, sizes, weight_by_size=False, *more, **named):
    """A group aggregation that records what lmms-eval passes it."""
    with open(os.environ["TOY_RECORD"], "a") as f:
        f.write(json.dumps({"n_args": 3 + len(more), "named": sorted(named)}) + "\\n")
    return sum(metrics) / len(metrics)
'''


def toy_leaf(i: int) -> str:
    return textwrap.dedent(f"""\
        task: toy_leaf{i}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: toy{i}.jsonl
        test_split: test
        output_type: multiple_choice
        doc_to_text: "{{{{ q }}}}"
        doc_to_choice: choices
        doc_to_target: gold
        process_results: !function utils.process_results
        metric_list:
          - {{metric: result_is_str, aggregation: mean, higher_is_better: true}}
          - {{metric: custom, aggregation: !function utils.custom_mean, higher_is_better: true}}
          - {{metric: custom_extra, aggregation: !function utils.custom_mean, higher_is_better: true}}
          - {{metric: builtin, aggregation: mean, higher_is_better: true}}
        """)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    """Three leaves (values 0, 0, 1; 4, 2, 2 docs), a group of the first two, a parent of that group and the third."""
    d = tmp_path_factory.mktemp("toy_tasks")
    (d / "utils.py").write_text(TOY_UTILS)
    for i, (n, v) in enumerate([(4, 0.0), (2, 0.0), (2, 1.0)]):
        (d / f"toy{i}.jsonl").write_text(
            "".join(json.dumps({"q": f"q{k}", "choices": ["a", "b"], "gold": 0, "v": v}) + "\n" for k in range(n))
        )
        (d / f"toy_leaf{i}.yaml").write_text(toy_leaf(i))
    (d / "toy_child.yaml").write_text(
        "group: toy_child\ntask: [toy_leaf0, toy_leaf1]\naggregate_metric_list:\n"
        "  - {metric: custom, aggregation: mean, weight_by_size: false}\n"
    )
    (d / "toy_parent.yaml").write_text(
        "group: toy_parent\ntask: [toy_child, toy_leaf2]\naggregate_metric_list:\n"
        "  - {metric: custom, aggregation: !function utils.recording_mean, weight_by_size: false}\n"
    )
    (d / "toy_broken.yaml").write_text(toy_leaf(9).replace("toy_leaf9", "toy_broken"))  # its data file is missing
    return d


@pytest.fixture(scope="module")
def toy_run(toy_dir, monkeypatch_module):
    """simple_evaluate of `toy_parent` with a stub model whose loglikelihood returns (loss, is_greedy) tuples."""
    from lmms_eval import evaluator
    from lmms_eval.api.model import lmms
    from lmms_eval.tasks import TaskManager

    class TupleModel(lmms):
        is_simple = True

        def loglikelihood(self, requests):
            return [(0.5 + i % 2, False) for i, _ in enumerate(requests)]

        def generate_until(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    record = toy_dir / "record.jsonl"
    monkeypatch_module.setenv("TOY_RECORD", str(record))
    manager = TaskManager(include_path=str(toy_dir), include_defaults=False)
    out = evaluator.simple_evaluate(
        model=TupleModel(), tasks=["toy_parent"], task_manager=manager, bootstrap_iters=100, log_samples=False
    )
    return out["results"], [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


# 1 ---------------------------------------------------------------------------------------------------------------
def test_1_loglikelihood_results_reach_process_results_as_strings(toy_run):
    from lmms_eval.api.instance import unwrap_generation_output

    results, _ = toy_run
    assert results["toy_leaf2"]["result_is_str,none"] == 1.0, fixed(
        1,
        "a model's (loss, is_greedy) tuple reaches process_results as a tuple",
        "the GenerationResult(text=...) wrapping in radar_hf (keep parsing the string form for older versions)",
    )
    assert unwrap_generation_output((0.73, False)) == ("(0.73, False)", None)


# 2 ---------------------------------------------------------------------------------------------------------------
def test_2_builtin_multiple_choice_scoring_crashes_on_the_string_form(toy_dir):
    import lmms_eval.api.metrics  # noqa: F401  (registers the metrics a task config names)
    from lmms_eval.api.task import ConfigurableTask

    data = {"data_files": {"test": str(toy_dir / "toy2.jsonl")}}
    task = ConfigurableTask(
        config={
            "task": "toy_builtin",
            "dataset_path": "json",
            "dataset_kwargs": data,
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "{{ q }}",
            "doc_to_choice": "choices",
            "doc_to_target": "gold",
            "metric_list": [{"metric": "acc"}],
        }
    )
    doc = task.test_docs()[0]
    builtin = ConfigurableTask.process_results.__wrapped__  # without lmms-eval's 5 retries 2 s apart
    assert builtin(task, doc, [(0.5, False), (1.5, False)])["acc"] == 1.0  # tuples work ...
    with pytest.raises(ValueError, match="too many values to unpack"):  # ... what the evaluator hands over does not
        builtin(task, doc, ["(0.5, False)", "(1.5, False)"])


# 3 ---------------------------------------------------------------------------------------------------------------
def test_3_llava_hf_loglikelihood_tokenizes_the_context_without_its_images(tiny_checkpoint, monkeypatch):
    import importlib.metadata
    import types

    from PIL import Image

    core = [r for r in importlib.metadata.requires("lmms-eval") or [] if "extra ==" not in r]
    assert not [r for r in core if r.startswith("decord")], fixed(3, "lmms-eval requires decord", "this stub")
    decord = types.ModuleType("decord")  # llava_hf imports decord at module level for videos
    decord.VideoReader = decord.cpu = None
    monkeypatch.setitem(sys.modules, "decord", decord)
    from lmms_eval.api.instance import Instance
    from lmms_eval.models.simple.llava_hf import LlavaHf

    model = LlavaHf(pretrained=str(tiny_checkpoint("llava")), device="cpu", dtype="float32", device_map="cpu")
    model.task_dict = {"t": {"test": [{}]}}
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    request = Instance(
        "loglikelihood",
        ("What colour is it?", " red", lambda doc: [image], 0, "t", "test"),
        idx=0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
    with pytest.raises(ValueError, match=r"Found 1 <image> tokens in the text but no images"):
        model.loglikelihood([request])


# 4 and 6: the CLI ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(toy_dir, tmp_path_factory):
    """One `lmms-eval` run: a task of an LMMS_EVAL_PLUGINS package, and a task whose data file is missing."""
    work = tmp_path_factory.mktemp("cli")
    plugin = work / "toy_plugin"
    (plugin / "tasks").mkdir(parents=True)
    (plugin / "models").mkdir()
    for package in (plugin, plugin / "tasks"):
        (package / "__init__.py").write_text("")
    (plugin / "models" / "__init__.py").write_text("AVAILABLE_MODELS = {}\n")  # lmms-eval reads it too
    (plugin / "tasks" / "toy2.jsonl").write_text((toy_dir / "toy2.jsonl").read_text())
    (plugin / "tasks" / "utils.py").write_text(TOY_UTILS)
    (plugin / "tasks" / "toy_plugin_task.yaml").write_text(
        toy_leaf(2).replace("task: toy_leaf2", "task: toy_plugin_task")
    )
    out = work / "out"
    env = {
        "LMMS_EVAL_PLUGINS": "toy_plugin",
        "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "RADAR_TASKS_NO_DISCOVERY": "1",
    }
    code, log = lmms_cli.run(
        "",
        "toy_plugin_task,toy_broken",
        out,
        model="dummy",
        env=env,
        extra=["--include_path", str(toy_dir)],
        timeout=600,
    )
    return code, log, out


@pytest.mark.slow
def test_4_the_cli_exits_0_when_the_evaluation_fails(cli_run):
    code, log, out = cli_run
    assert "Error during evaluation" in log
    assert not list(out.rglob("*_results.json"))
    assert code == 0, fixed(
        4, "the CLI exits non-zero when the evaluation fails", "the results-file checks of the demo, runner and tests"
    )


@pytest.mark.slow
def test_6_lmms_eval_plugins_tasks_are_not_found(cli_run):
    from lmms_eval.tasks import TaskManager

    _, log, out = cli_run
    plugin_tasks = out.parent / "toy_plugin" / "tasks"
    assert "toy_plugin_task" in TaskManager(include_path=str(plugin_tasks), include_defaults=False).all_tasks
    assert "Tasks were not found: toy_plugin_task" in log, fixed(
        6, "a task of an LMMS_EVAL_PLUGINS package is found", "the TaskManager wrap in radar_tasks.tasks.plugin"
    )


# 5 ---------------------------------------------------------------------------------------------------------------
def test_5a_custom_aggregations_get_no_stderr(toy_run):
    from lmms_eval.api import metrics

    results, _ = toy_run
    assert results["toy_leaf0"]["builtin_stderr,none"] == 0.0  # lmms-eval's `mean`: a stderr
    assert results["toy_leaf0"]["custom_stderr,none"] == "N/A", fixed(
        5, "custom aggregations get a stderr", "plugin.install_stderr_hooks and the exported `*_se` metrics"
    )
    assert metrics.stderr_for_metric(lambda values: sum(values), bootstrap_iters=1000) is None


def test_5b_group_stderrs_are_pooled_as_if_size_weighted():
    import math

    from lmms_eval.api import metrics

    stderrs, sizes = [0.1, 0.3], [10, 1000]
    unweighted_mean_se = math.sqrt(0.1**2 + 0.3**2) / 2  # what an unweighted mean of two leaves has
    pooled = metrics.pooled_sample_stderr(stderrs, sizes)
    size_weighted = math.sqrt(sum((n - 1) * se**2 * n for se, n in zip(stderrs, sizes)) / (sum(sizes) - 2) / sum(sizes))
    assert pooled == pytest.approx(size_weighted) and abs(pooled - unweighted_mean_se) > 0.05, fixed(
        5, "group stderrs follow the group's aggregation", "plugin.install_stderr_hooks and the exported group_se"
    )


def test_5c_a_group_aggregation_sees_neither_task_names_nor_stderrs(toy_run):
    _, calls = toy_run
    assert calls and all(c == {"n_args": 3, "named": []} for c in calls), fixed(
        5,
        "group aggregations get more than (metrics, sizes, weight_by_size)",
        "the (subset, category) tags of metrics/items.LeafScore",
    )


def test_5d_a_parent_group_averages_all_its_leaves_not_its_subgroups(toy_run):
    results, _ = toy_run
    assert results["toy_child"]["custom,none"] == 0.0 and results["toy_leaf2"]["custom,none"] == 1.0
    assert results["toy_parent"]["custom,none"] == pytest.approx(1 / 3), fixed(
        5, "a parent group aggregates its subgroups' scores", "the (subset, category) tags of metrics/items.LeafScore"
    )


def test_5e_group_metrics_match_leaf_metrics_by_substring(toy_run):
    results, _ = toy_run
    # the groups list only `custom`, yet `custom_extra` is aggregated too, by the `custom` entry
    assert "custom_extra,none" in results["toy_child"], fixed(
        5, "group metrics match exactly", "the ordering of the `*_se` entries in the exported group YAMLs"
    )


# 7 ---------------------------------------------------------------------------------------------------------------
def test_7_every_evaluation_patches_filelock_api_filelockmeta(monkeypatch):
    from lmms_eval import evaluator

    monkeypatch.setattr(evaluator._enable_reentrant_filelocks, "_patched", False, raising=False)
    monkeypatch.setitem(sys.modules, "filelock._api", None)  # what filelock >= 4.3 looks like (no _api module)
    with pytest.raises(ImportError, match=r"filelock\._api"):
        evaluator._enable_reentrant_filelocks()


# 8 ---------------------------------------------------------------------------------------------------------------
def test_10_function_utils_is_executed_again_for_every_reference(tmp_path, monkeypatch):
    from lmms_eval.utils import load_yaml_config

    counter = tmp_path / "count"
    (tmp_path / "utils.py").write_text(
        f"open({str(counter)!r}, 'a').write('x')\ndef f(doc):\n    return doc\ndef g(doc):\n    return doc\n"
    )
    (tmp_path / "t.yaml").write_text(
        "task: t\nprocess_docs: !function utils.f\ndoc_to_text: !function utils.g\ndoc_to_target: !function utils.f\n"
    )
    load_yaml_config(str(tmp_path / "t.yaml"))
    assert counter.read_text() == "xxx", fixed(
        10,
        "a task's utils.py is imported once",
        "nothing (the exported utils.py only defines functions, so re-execution is harmless)",
    )


def test_11_a_dataclass_with_string_annotations_in_utils_fails_to_load(tmp_path):
    from lmms_eval.utils import load_yaml_config

    (tmp_path / "utils.py").write_text(
        "from __future__ import annotations\nfrom dataclasses import dataclass\n\n"
        "@dataclass\nclass Item:\n    name: str\n\ndef f(doc):\n    return doc\n"
    )
    (tmp_path / "t.yaml").write_text("task: t\nprocess_docs: !function utils.f\n")
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute '__dict__'"):
        load_yaml_config(str(tmp_path / "t.yaml"))


def test_12_image_columns_are_dropped_from_the_docs_prompts_are_built_from(tmp_path):
    import datasets
    import lmms_eval.api.metrics  # noqa: F401  (registers the metrics a task config names)
    from lmms_eval.api.task import ConfigurableTask
    from PIL import Image

    ds = datasets.Dataset.from_dict(
        {"q": ["x"], "images": [[Image.new("RGB", (4, 4))]]},
        features=datasets.Features({"q": datasets.Value("string"), "images": datasets.Sequence(datasets.Image())}),
    )
    ds.to_parquet(str(tmp_path / "test.parquet"))
    config = {
        "task": "toy_images",
        "dataset_path": "parquet",
        "test_split": "test",
        "output_type": "multiple_choice",
        "dataset_kwargs": {"data_files": {"test": str(tmp_path / "test.parquet")}},
        "doc_to_text": "{{ q }}",
        "doc_to_choice": ["a", "b"],
        "doc_to_target": 0,
        "metric_list": [{"metric": "acc"}],
    }
    assert "images" not in ConfigurableTask(config=config).eval_docs_no_media[0], fixed(
        12, "docs keep their image columns", "the image names the exported process_docs puts under `images`"
    )
    assert "images" in ConfigurableTask(config={**config, "process_results_use_image": True}).eval_docs_no_media[0]
    # ... but a doc that keeps its image bytes has them inlined into every logged sample (--log_samples)
    from lmms_eval.evaluator import _collect_input_media

    logged = _collect_input_media({"images": [{"bytes": b"\x89PNG....", "path": "a.png"}]}, [])
    assert "data:image/png;base64,iVBORy4uLi4=" in logged


def test_8_lmms_eval_accepts_truncated_images_process_wide():
    import lmms_eval.api.task  # noqa: F401
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, fixed(
        8,
        "importing lmms-eval leaves PIL's truncated-image check on",
        "the flag handling of radar_tasks/data/images.decode",
    )


def test_9_batch_size_is_passed_beside_the_model_args():
    from lmms_eval.api.model import lmms

    class Model(lmms):
        def __init__(self, batch_size=1, **kwargs):
            super().__init__()
            self.given = batch_size

        loglikelihood = generate_until = generate_until_multi_round = None

    # what lmms_eval.evaluator.simple_evaluate passes: the CLI's --batch_size (default 1) beside the model args
    assert Model.create_from_arg_string("", {"batch_size": 1}).given == 1
    with pytest.raises(TypeError, match="got multiple values for keyword argument 'batch_size'"):
        Model.create_from_arg_string("batch_size=4", {"batch_size": 1, "device": None})
