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


def _m3_doc(question: str, images: list, choices: list) -> dict:
    return {
        "id": "q1",
        "subset": "wiki_animal",
        "category": "wiki_animal",
        "source_file": "Wiki/x.json",
        "question": question,
        "images": images,
        "choices": choices,
        "skipped": False,
        "options_text": "",
    }


def test_results_carry_candidates_and_prompt(wrapper, docs):
    from radar_tasks.metrics.items import score_item

    wrapper.task_dict = {TASK: {SPLIT: docs}}
    results = wrapper.loglikelihood(make_requests(docs, [(0, 0), (0, 1), (0, 2)]))
    texts = [unwrap_generation_output(r)[0] for r in results]
    assert [t.candidate for t in texts] == docs[0]["choices"]
    assert all(t.prompt == context_of(docs[0]) and t.skipped is None for t in texts)
    record = score_item({"choices": docs[0]["choices"]}, texts)
    assert record["candidates"] == docs[0]["choices"] and record["prompt"] == context_of(docs[0])


def test_results_carry_the_summed_nll_and_the_bytes_scored(wrapper):
    """Per candidate: the summed NLL in nats (the reference core's mean x its tokens) and the UTF-8 bytes of the
    continuation as scored: lmms-eval's " " + choice in the raw style; under a family style with score=logit, that
    style's continuation (llava_ov_plain: the choice, no joiner), the NLL still the NLL."""
    doc = _m3_doc("Which animal is this?", [], ["naïve dog", "cat"])  # no image: fast
    context = context_of(doc)
    wrapper.task_dict = {TASK: {SPLIT: [doc]}}
    texts = [r.text for r in wrapper.loglikelihood(make_requests([doc], [(0, 0), (0, 1)]))]
    expected = score_continuations(wrapper.model, wrapper.processor, context, doc["images"], [" naïve dog", " cat"])
    assert [t.bytes for t in texts] == [11, 4]  # " naïve dog": ï is two bytes
    for t, e in zip(texts, expected):
        assert t.nll_sum == pytest.approx(e.nll * e.n_tokens, rel=1e-5) and t.nll_sum > t[0] > 0

    styled = RadarHF.from_model(wrapper.model, wrapper.processor, prompt_style="llava_ov_plain", score="logit")
    styled.task_dict = {TASK: {SPLIT: [doc]}}
    texts = [r.text for r in styled.loglikelihood(make_requests([doc], [(0, 0), (0, 1)]))]
    prompt = texts[0].prompt  # the style's prompt; its continuations are the candidates, no joiner
    expected = score_continuations(wrapper.model, wrapper.processor, prompt, doc["images"], ["naïve dog", "cat"])
    assert [t.bytes for t in texts] == [10, 3]
    for t, e in zip(texts, expected):
        assert t[0] == pytest.approx(-e.mean_logit, abs=1e-4)  # the score: mean logit
        assert t.nll_sum == pytest.approx(e.nll * e.n_tokens, rel=1e-4)  # bpb: from the NLL


def test_text_holding_a_model_token_is_not_scored_but_counted(wrapper, tiny_images, caplog):
    doc = _m3_doc("Which animal <|vision_start|> is this?", tiny_images[:1], ["dog", "cat"])
    wrapper.task_dict = {TASK: {SPLIT: [doc]}}
    before = wrapper.not_scored
    results = wrapper.loglikelihood(make_requests([doc], [(0, 0), (0, 1)]))
    texts = [r.text for r in results]
    assert all("'<|vision_start|>', a special token of this model" in t.skipped for t in texts)
    assert all(math.isnan(t[0]) for t in texts) and wrapper.not_scored == before + 1
    assert wrapper.run_metadata()["not_scored"] == wrapper.not_scored


def test_prompt_longer_than_the_model_context_is_skipped(wrapper, docs, monkeypatch):
    wrapper.task_dict = {TASK: {SPLIT: docs}}
    monkeypatch.setattr(wrapper.scorer, "max_length", 12)
    for share in (True, False):
        monkeypatch.setattr(wrapper.scorer, "share_prefix", share)
        results = wrapper.loglikelihood(make_requests(docs, [(0, 0), (0, 1)]))
        assert all("more than the model's 12 positions" in r.text.skipped for r in results)


def test_run_metadata_says_how_it_scored(wrapper):
    meta = wrapper.run_metadata()
    assert {k: meta[k] for k in ("prompt_style", "score", "protocol", "dtype", "device")} == {
        "prompt_style": "raw",
        "score": "logprob",
        "protocol": None,
        "dtype": "float32",
        "device": "cpu",
    }
    assert set(meta["prefix_sharing"]) == {"shared", "per_candidate", "run_fallback", "question_fallbacks"}


def test_settings_are_the_declared_model_args(wrapper):
    from radar_tasks.models.args import ModelArgs

    assert isinstance(wrapper.settings, ModelArgs)
    assert (wrapper.settings.batch_size, wrapper.settings.share_prefix, wrapper.settings.prompt_style) == (
        1,
        True,
        "raw",
    )
    assert wrapper.settings.given == {"pretrained", "device", "batch_size"}


def test_from_model_wraps_the_model_in_memory(wrapper):
    wrapped = RadarHF.from_model(wrapper.model, wrapper.processor, score="logit", num_workers=0)
    assert wrapped.model is wrapper.model and wrapped.processor is wrapper.processor
    assert (wrapped.settings.score, wrapped.settings.dtype, wrapped.num_workers) == ("logit", "float32", 0)
    assert wrapped.settings.pretrained == wrapper.model.config._name_or_path
    with pytest.raises(ValueError, match="pretrained come from the model in memory"):
        RadarHF.from_model(wrapper.model, wrapper.processor, pretrained="x")
    with pytest.raises(TypeError, match="not both"):
        RadarHF(loaded=wrapped.loaded, score="logit")


def test_outcomes_of_the_ranks_add_up():
    from radar_tasks.models.run_metadata import summed

    parts = [
        {"shared": 2, "per_candidate": 1, "not_scored": 0, "run_fallback": None, "question_fallbacks": {"a": 1}},
        {"shared": 3, "per_candidate": 0, "not_scored": 1, "run_fallback": "x", "question_fallbacks": {"a": 2, "b": 1}},
    ]
    assert summed(parts) == {
        "shared": 5,
        "per_candidate": 1,
        "not_scored": 1,
        "run_fallback": "x",
        "question_fallbacks": {"a": 3, "b": 1},
    }


def test_control_tokens_of_the_processor(wrapper):
    from radar_tasks.models import control_tokens

    tokens = control_tokens.of_processor(wrapper.processor)
    assert "<|vision_start|>" in tokens and all(len(t) > 1 for t in tokens)
    # other tasks' contexts hold their own markers on purpose: only the candidates of a plain doc are screened
    assert control_tokens.text_problem({"question": "<|vision_start|>"}, [" a"], tokens) is None
    assert "'<|vision_start|>'" in control_tokens.text_problem(None, [" a <|vision_start|>"], tokens)


@pytest.mark.parametrize("mode", ["none", "blank"])
def test_images_none_and_blank_score_the_question_without_what_the_images_show(wrapper, tiny_images, mode):
    """`images=none`: the context without its markers and no pixels; `blank`: mid-grey images of the same sizes in
    the same prompt. Expected numbers: the likelihood core on inputs built here by hand."""
    from PIL import Image

    ablated = RadarHF.from_model(wrapper.model, wrapper.processor, images=mode, num_workers=0)
    doc = _m3_doc("Which animal is this?", tiny_images[:2], ["a dog", "a cat"])
    context = "<image><image> Which animal is this?"
    requests = [
        Instance(
            "loglikelihood",
            (context, " " + c, doc_to_visual, 0, TASK, SPLIT),
            idx=i,
            metadata={"task": TASK, "doc_id": 0, "repeats": 1},
        )
        for i, c in enumerate(doc["choices"])
    ]
    ablated.task_dict = wrapper.task_dict = {TASK: {SPLIT: [doc]}}
    got = [r.text for r in ablated.loglikelihood(requests)]
    kept = [r.text for r in wrapper.loglikelihood(requests)]
    if mode == "none":
        prompt, images = " Which animal is this?", []
    else:
        prompt, images = context, [Image.new("RGB", im.size, (128, 128, 128)) for im in tiny_images[:2]]
    expected = score_continuations(wrapper.model, wrapper.processor, prompt, images, [" a dog", " a cat"])
    assert [t[0] for t in got] == pytest.approx([e.nll for e in expected], abs=1e-5)
    assert got[0].prompt == prompt
    assert [t[0] for t in got] != pytest.approx([t[0] for t in kept], abs=1e-4)  # the images did count
    assert ablated.run_metadata()["images"] == mode and wrapper.run_metadata()["images"] == "keep"
