"""radar_hf's model args (radar_tasks/models/args.py): one table, checked before any model loads, one line each."""

from __future__ import annotations

import inspect

import pytest

from radar_tasks.errors import ArgumentError
from radar_tasks.models import args as model_args


@pytest.fixture
def ckpt(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def test_the_table_is_radar_hf_keyword_arguments():
    from radar_tasks.models.radar_hf import RadarHF

    # `loaded` is RadarHF.from_model's way in (a model in memory), not a model arg
    params = [p for p in inspect.signature(RadarHF.__init__).parameters if p not in ("self", "loaded")]
    assert sorted(params) == sorted(model_args.MODEL_ARGS)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("true", True),
        ("False", False),
        ("1", True),
        (0, False),
        (1, True),
        ("yes", True),
        (" no ", False),
        (True, True),
    ],
)
def test_booleans_strictly(value, expected):
    assert model_args.as_bool(value) is expected


@pytest.mark.parametrize("value", ["flase", "on", "", 2, None, "y"])
def test_bad_booleans_are_refused_with_the_valid_values(ckpt, value):
    with pytest.raises(ArgumentError) as err:
        model_args.check_model_args({"pretrained": ckpt, "share_prefix": value})
    assert "share_prefix" in str(err.value) and "true, false, 1, 0, yes, no" in str(err.value)


@pytest.mark.parametrize(
    "raw,cli,expected",
    [
        ({"batch_size": 4}, {"batch_size": 1}, 4),  # a model arg wins over lmms-eval's default --batch_size 1
        ({}, {"batch_size": "4"}, 4),
        ({"batch_size": "auto"}, {"batch_size": 1}, "auto"),
        ({"batch_size": 2}, {"batch_size": "2"}, 2),
        ({}, {"batch_size": None}, None),
    ],
)
def test_batch_size_as_model_arg_or_flag(ckpt, raw, cli, expected):
    out = model_args.check_model_args({"pretrained": ckpt, **raw}, cli)
    assert out.get("batch_size") == expected


@pytest.mark.parametrize(
    "raw,cli,message",
    [
        ({"batch_size": 0}, {}, "model arg batch_size=0: batch_size must be an integer >= 1"),
        ({"batch_size": "abc"}, {}, "model arg batch_size='abc'"),
        ({}, {"batch_size": "abc"}, "--batch_size 'abc': batch_size must be an integer >= 1 or 'auto'"),
        ({"batch_size": 2}, {"batch_size": 4}, "batch_size given twice, --batch_size 4 and model arg batch_size=2"),
        ({"dtype": "fp64"}, {}, "model arg dtype='fp64': expected one of auto, float32, bfloat16, float16"),
        ({"prompt_style": "fancy"}, {}, "expected one of auto, raw, qwen2vl_base"),
        ({"score": "prob"}, {}, "expected one of logprob, logit"),
        ({"protocol": "papers"}, {}, "expected one of paper"),
        ({"device": "gpu"}, {}, "expected cpu, cuda, cuda:N or mps"),
        ({"max_batch_size": "0"}, {}, "max_batch_size='0': expected an integer >= 1"),
        ({"attn_implementation": "fast"}, {}, "expected one of eager, "),
        ({"processor_kwargs": "{bad json"}, {}, "processor_kwargs: malformed JSON"),
        ({"shared_prefix": True}, {}, "unknown model arg 'shared_prefix'; valid: pretrained, device"),
    ],
)
def test_bad_values_are_one_line(ckpt, raw, cli, message):
    with pytest.raises(ArgumentError) as err:
        model_args.check_model_args({"pretrained": ckpt, **raw}, cli)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cuda_on_a_machine_without_it(ckpt):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ArgumentError, match="torch sees 0 CUDA device"):
        model_args.check_model_args({"pretrained": ckpt, "device": "cuda"})


def test_pretrained_must_exist(tmp_path, ckpt, monkeypatch):
    with pytest.raises(ArgumentError, match="model arg pretrained is required"):
        model_args.check_model_args({"device": "cpu"})
    with pytest.raises(ArgumentError, match=f"no such folder: {tmp_path}/nowhere"):
        model_args.check_model_args({"pretrained": str(tmp_path / "nowhere")})
    with pytest.raises(ArgumentError, match=r"holds no config\.json: not a checkpoint"):
        model_args.check_model_args({"pretrained": str(tmp_path)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ArgumentError, match="not in the local hub cache"):
        model_args.check_model_args({"pretrained": "some-org/some-model"})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert model_args.check_model_args({"pretrained": "some-org/some-model"})["pretrained"] == "some-org/some-model"
    assert model_args.check_model_args({"pretrained": ckpt})["pretrained"] == ckpt


def test_radar_hf_from_an_arg_string_refuses_before_loading(ckpt):
    from radar_tasks.models.radar_hf import RadarHF

    with pytest.raises(ArgumentError, match="share_prefix"):  # ckpt holds no weights: nothing was loaded
        RadarHF.create_from_arg_string(f"pretrained={ckpt},share_prefix=flase", {"batch_size": 1})
    with pytest.raises(ArgumentError, match="expected key=value pairs"):
        RadarHF.create_from_arg_string(f"pretrained={ckpt},oops", {})


def test_keyword_arguments_go_through_the_same_parsers(ckpt):
    args = model_args.ModelArgs.of(
        {"pretrained": ckpt, "share_prefix": "no", "batch_size": "3", "num_workers": "0", "score": None}
    )
    assert (args.share_prefix, args.batch_size, args.num_workers) == (False, 3, 0)
    assert (args.score, args.prompt_style, args.image_conversion, args.processor_kwargs) == (
        "logprob",
        "raw",
        "white",
        {},
    )
    assert args.given == {"pretrained", "share_prefix", "batch_size", "num_workers"}  # None: not given
    with pytest.raises(ArgumentError) as err:
        model_args.ModelArgs.of({"pretrained": ckpt, "dtype": "fp64"})
    assert "model arg dtype='fp64': expected one of auto, float32, bfloat16, float16" in str(err.value)
    with pytest.raises(TypeError, match="unknown model arg 'shared_prefix'"):
        model_args.ModelArgs.of({"pretrained": ckpt, "shared_prefix": True})
    with pytest.raises(TypeError, match="pretrained"):
        model_args.ModelArgs.of({"device": "cpu"})
    # values known good are taken as they are: a model in memory's name is a label, not a folder
    assert model_args.ModelArgs.of({}, pretrained="not/a folder").pretrained == "not/a folder"


def test_the_protocol_switches_are_the_declared_ones():
    from radar_tasks.models import protocol

    assert protocol.SWITCH_DEFAULTS == {
        "qwen_vl_utils_resize": False,
        "image_conversion": "white",
        "llava_mmmu_one_distractor": False,
        "internvl_reverse_images": False,
        "mmmu_two_letters": False,
    }


def test_resolve_settings_only_applies_the_preset():
    from radar_tasks.models import protocol

    given = model_args.ModelArgs.of(
        {"protocol": "paper", "dtype": "float32", "processor_kwargs": "size.longest_edge:50176"}, pretrained="ckpt"
    )
    paper = protocol.resolve_settings(given, model_type=lambda: "qwen2_vl")
    assert (paper.dtype, paper.score, paper.prompt_style, paper.image_conversion) == (
        "float32",  # given: wins over the preset's bfloat16
        "logit",
        "auto",  # resolved once the model is loaded
        "qwen_vl_utils",
    )
    assert paper.processor_kwargs == {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 50176}}
    plain = model_args.ModelArgs.of({"score": "logit"}, pretrained="ckpt")
    assert protocol.resolve_settings(plain, model_type=lambda: pytest.fail("no preset: no config read")) == plain


def test_the_docs_table_is_generated_from_the_declaration():
    from pathlib import Path

    from radar_tasks.models import args_doc

    page = (Path(__file__).resolve().parent.parent / "docs" / "model-args.md").read_text(encoding="utf-8")
    assert args_doc.between_markers(page) == args_doc.table(), "run: python -m radar_tasks.models.args_doc"
    assert args_doc.main(["--check"]) == 0  # the page's own command
    rows = [line for line in args_doc.table().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(model_args.MODEL_ARGS)
    image_conversion = next(row for row in rows if row.startswith("| `image_conversion`"))
    assert (
        "| `white`; `protocol=paper`: `qwen_vl_utils` (qwen2vl_base), `pil_convert` (internvl, llava_ov_plain) |"
        in (image_conversion)
    )
    assert "| `logprob`; `protocol=paper`: `logit` |" in next(row for row in rows if row.startswith("| `score`"))
