"""radar_hf's model args (radar_tasks/models/args.py): one table, checked before any model loads, one line each."""

from __future__ import annotations

import inspect

import pytest

from radar_tasks.errors import ArgumentError
from radar_tasks.models import args as A


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
    assert sorted(params) == sorted(A.MODEL_ARGS)


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
    assert A.as_bool(value) is expected


@pytest.mark.parametrize("value", ["flase", "on", "", 2, None, "y"])
def test_bad_booleans_are_refused_with_the_valid_values(ckpt, value):
    with pytest.raises(ArgumentError) as err:
        A.check_model_args({"pretrained": ckpt, "share_prefix": value})
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
    out = A.check_model_args({"pretrained": ckpt, **raw}, cli)
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
        A.check_model_args({"pretrained": ckpt, **raw}, cli)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cuda_on_a_machine_without_it(ckpt):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ArgumentError, match="torch sees 0 CUDA device"):
        A.check_model_args({"pretrained": ckpt, "device": "cuda"})


def test_pretrained_must_exist(tmp_path, ckpt, monkeypatch):
    with pytest.raises(ArgumentError, match="model arg pretrained is required"):
        A.check_model_args({"device": "cpu"})
    with pytest.raises(ArgumentError, match=f"no such folder: {tmp_path}/nowhere"):
        A.check_model_args({"pretrained": str(tmp_path / "nowhere")})
    with pytest.raises(ArgumentError, match=r"holds no config\.json: not a checkpoint"):
        A.check_model_args({"pretrained": str(tmp_path)})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ArgumentError, match="not in the local hub cache"):
        A.check_model_args({"pretrained": "some-org/some-model"})
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert A.check_model_args({"pretrained": "some-org/some-model"})["pretrained"] == "some-org/some-model"
    assert A.check_model_args({"pretrained": ckpt})["pretrained"] == ckpt


def test_radar_hf_from_an_arg_string_refuses_before_loading(ckpt):
    from radar_tasks.models.radar_hf import RadarHF

    with pytest.raises(ArgumentError, match="share_prefix"):  # ckpt holds no weights: nothing was loaded
        RadarHF.create_from_arg_string(f"pretrained={ckpt},share_prefix=flase", {"batch_size": 1})
    with pytest.raises(ArgumentError, match="expected key=value pairs"):
        RadarHF.create_from_arg_string(f"pretrained={ckpt},oops", {})
