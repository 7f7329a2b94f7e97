"""The lmms-eval glue: RadarHF on hand-made lmms-eval Instances and a tiny task_dict."""

from __future__ import annotations

import math

import pytest
from lmms_eval.api.instance import GenerationResult, Instance, unwrap_generation_output

from radar_tasks.models.likelihood import score_continuations
from radar_tasks.models.radar_hf import RadarHF

TASK, SPLIT = "radar_tiny", "test"


@pytest.fixture(scope="module")
def wrapper(tiny_checkpoint):
    return RadarHF(pretrained=str(tiny_checkpoint("qwen2_vl")), device="cpu", batch_size="1")


@pytest.fixture(scope="module")
def docs(tiny_images):
    return [
        {"question": "Which animal is this?", "images": tiny_images[:1], "choices": ["a dog", "a cat", "a bird"]},
        {"question": "Compare the two pictures.", "images": tiny_images[1:3], "choices": ["same", "different"]},
    ]


def doc_to_visual(doc):
    return doc["images"]


def context_of(doc):
    return "".join("<image>" for _ in doc["images"]) + doc["question"] + " Answer:"


def make_requests(docs, order):
    """One Instance per (doc, choice), as lmms-eval's multiple_choice builds them, in the given order."""
    requests = []
    for doc_id, choice in order:
        doc = docs[doc_id]
        args = (context_of(doc), " " + doc["choices"][choice], doc_to_visual, doc_id, TASK, SPLIT)
        requests.append(
            Instance("loglikelihood", args, idx=choice, metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})
        )
    return requests


def test_loglikelihood_returns_tuples_in_request_order(wrapper, docs):
    wrapper.task_dict = {TASK: {SPLIT: docs}}
    order = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]  # the two questions interleaved
    results = wrapper.loglikelihood(make_requests(docs, order))
    assert len(results) == len(order)
    expected = {
        doc_id: score_continuations(
            wrapper.model, wrapper.processor, context_of(doc), doc["images"], [" " + c for c in doc["choices"]]
        )
        for doc_id, doc in enumerate(docs)
    }
    for (doc_id, choice), result in zip(order, results):
        assert isinstance(result, GenerationResult)
        nll, is_greedy = result.text
        assert isinstance(nll, float) and isinstance(is_greedy, bool) and math.isfinite(nll)
        assert nll == pytest.approx(expected[doc_id][choice].nll, abs=1e-6)
        assert is_greedy == expected[doc_id][choice].is_greedy
        # the tuple survives lmms-eval's unwrapping (a bare tuple would be stringified)
        assert unwrap_generation_output(result)[0] == (nll, is_greedy)
    # distinct candidates get distinct scores (no mix-up between questions)
    assert len({r.text[0] for r in results}) == len(results)


def test_model_args_and_properties(wrapper):
    assert RadarHF.is_simple
    assert wrapper.rank == 0 and wrapper.world_size == 1
    assert wrapper.batch_size == 1 and str(wrapper.device) == "cpu"
    assert next(wrapper.model.parameters()).dtype.is_floating_point


def test_dtype_and_strict_args(tiny_checkpoint):
    import torch

    model = RadarHF(pretrained=str(tiny_checkpoint("llava")), device="cpu", dtype="bfloat16", batch_size="auto")
    assert next(model.model.parameters()).dtype == torch.bfloat16 and model.batch_size == "auto"
    with pytest.raises(TypeError):
        RadarHF(pretrained=str(tiny_checkpoint("llava")), device="cpu", no_such_arg=1)


def test_generation_is_not_implemented(wrapper):
    with pytest.raises(NotImplementedError, match="likelihood-only"):
        wrapper.generate_until([])
    with pytest.raises(NotImplementedError):
        wrapper.generate_until_multi_round([])
