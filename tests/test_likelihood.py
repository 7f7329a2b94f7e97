"""The likelihood core against a hand computation from one plain forward, on every tiny architecture.

The reference computation here is written independently of radar_tasks.models.likelihood: its own placeholder
table, full logits (no logits_to_keep), log_softmax at the predicting positions, the protocol's prefix rule.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from radar_tasks.demo.tiny_models import TINY_ARCHS
from radar_tasks.models.likelihood import (
    IMAGE_MARKER,
    build_prompt,
    image_placeholder,
    resolve_dtype,
    score_continuations,
    token_scores,
)

PLACEHOLDER = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "internvl": "<IMG_CONTEXT>",
}

# (context with markers, number of images, continuations)
CASES = {
    "single": ("<image>\nQuestion: which animal is this? Answer:", 1, [" a dog", " the quick brown fox", " 4"]),
    "multi": ("<image><image> Which plant is shown in the picture?", 2, [" a rose", " an oak tree"]),
    "interleaved": ("Compare <image> with <image> and then <image>. Answer:", 3, [" the cat", " B"]),
    "images_first": ("What is the value of x?", 2, [" 4", " eleven"]),  # no marker: all images go first
}


def hand_scores(model, processor, prompt, continuation, images):
    """(mean NLL, is_greedy, n_tokens, mean raw logit, prefix ok) from one plain forward of prompt + continuation."""
    images = images or None
    prompt_ids = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"][0]
    full = processor(text=[prompt + continuation], images=images, return_tensors="pt")
    ids = full["input_ids"][0]
    with torch.inference_mode():
        logits = model(**full).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    positions = range(len(prompt_ids), len(ids))  # the protocol: tokens beyond len(tokenize(prompt))
    nll = -sum(float(logprobs[t - 1, ids[t]]) for t in positions) / len(positions)
    raw = sum(float(logits[t - 1, ids[t]]) for t in positions) / len(positions)
    greedy = all(int(logits[t - 1].argmax()) == int(ids[t]) for t in positions)
    prefix_ok = torch.equal(ids[: len(prompt_ids)], prompt_ids)
    return nll, greedy, len(positions), raw, prefix_ok


def expected_prompt(arch, context, n_images):
    image = PLACEHOLDER.get(arch, "<image>")
    if IMAGE_MARKER not in context:
        return image * n_images + context
    return context.replace(IMAGE_MARKER, image)


def assert_matches(score, hand):
    nll, greedy, n, raw, prefix_ok = hand
    assert score.n_tokens == n
    assert score.nll == pytest.approx(nll, abs=1e-5)
    assert score.mean_logit == pytest.approx(raw, abs=1e-5)
    assert score.is_greedy == greedy
    assert score.prefix_ok == prefix_ok


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_matches_hand_computation(arch, case, tiny_loaded, tiny_images):
    model, processor = tiny_loaded(arch)
    context, n_images, continuations = CASES[case]
    images = tiny_images[:n_images]
    scores = score_continuations(model, processor, context, images, continuations)
    assert len(scores) == len(continuations)
    prompt = expected_prompt(arch, context, n_images)
    text_only_len = len(processor.tokenizer(context.replace(IMAGE_MARKER, ""))["input_ids"])
    for continuation, score in zip(continuations, scores):
        hand = hand_scores(model, processor, prompt, continuation, images)
        assert_matches(score, hand)
        # the mask counts continuation tokens only: image tokens (expanded after the prompt text was measured)
        # must not leak in; every continuation here is a few tokens long
        assert 1 <= score.n_tokens <= len(processor.tokenizer(continuation, add_special_tokens=False)["input_ids"])
        assert processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1] > text_only_len


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_is_greedy_forced_true(arch, tiny_biased_to_the, tiny_images):
    """A bias on one token's logit makes it the argmax everywhere: repeating it is the greedy continuation."""
    model, processor = tiny_biased_to_the(arch)

    context = "<image>\nQuestion: which animal is this? Answer:"
    greedy, not_greedy = score_continuations(model, processor, context, tiny_images[:1], [" the the the", " the cat"])
    assert greedy.n_tokens == 3 and greedy.is_greedy
    assert not not_greedy.is_greedy
    prompt = expected_prompt(arch, context, 1)
    assert_matches(greedy, hand_scores(model, processor, prompt, " the the the", tiny_images[:1]))


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava"])
def test_merge_across_boundary_takes_tokens_beyond_prompt_length(arch, tiny_loaded):
    # "The quick bro" -> [..., 'Ġb', 'r', 'o']; "The quick brown fox" -> [..., 'Ġb', 'rown', 'Ġf', 'ox']:
    # the prompt ids are no prefix, and the reference scores the ids beyond len(prompt ids), here just 'ox'.
    model, processor = tiny_loaded(arch)
    (score,) = score_continuations(model, processor, "The quick bro", [], ["wn fox"])
    hand = hand_scores(model, processor, "The quick bro", "wn fox", [])
    assert not hand[4] and hand[2] == 1  # the case really merges (guards the tokenizer assumption)
    assert_matches(score, hand)


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava", "idefics3"])
def test_text_only_and_empty_context(arch, tiny_loaded):
    model, processor = tiny_loaded(arch)
    (score,) = score_continuations(model, processor, "Which animal?", [], [" a dog"])
    assert_matches(score, hand_scores(model, processor, "Which animal?", " a dog", []))
    # empty context: BOS (or EOS) stands in as the context, so every continuation token is scored
    (empty,) = score_continuations(model, processor, "", [], [" a dog"])
    n_cont = len(processor.tokenizer(" a dog", add_special_tokens=False)["input_ids"])
    assert empty.n_tokens == n_cont and math.isfinite(empty.nll)


def test_continuation_without_new_tokens(tiny_loaded):
    model, processor = tiny_loaded("qwen2_vl")
    (score,) = score_continuations(model, processor, "Which animal?", [], [""])
    assert score.n_tokens == 0 and math.isnan(score.nll)


def test_non_finite_loss_is_returned_not_raised(tiny_loaded, tiny_images):
    model, processor = tiny_loaded("llava")
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.get_output_embeddings().weight.fill_(float("nan"))
    (score,) = score_continuations(model, processor, "<image> Which?", tiny_images[:1], [" a dog"])
    assert math.isnan(score.nll) and score.n_tokens > 0


def test_bfloat16_close_to_float32(tiny_checkpoint, tiny_loaded, tiny_images):
    from transformers import AutoModelForImageTextToText

    model32, processor = tiny_loaded("qwen2_vl")
    model16 = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint("qwen2_vl"), dtype=torch.bfloat16)
    args = ("<image> Which animal? Answer:", tiny_images[:1], [" a dog", " the cat"])
    s32 = score_continuations(model32, processor, *args)
    s16 = score_continuations(model16, processor, *args, dtype=torch.bfloat16)
    for a, b in zip(s32, s16):
        assert a.n_tokens == b.n_tokens
        # measured 4.8e-5 and 9.2e-5 (nll ~ 6; 2-core CPU, torch 2.14): 1e-3 still catches a softmax in bf16
        assert math.isfinite(b.nll) and b.nll == pytest.approx(a.nll, abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_cuda_matches_cpu(arch, tiny_loaded, tiny_images):
    model, processor = tiny_loaded(arch)
    args = ("Compare <image> with <image>. Answer:", tiny_images[:2], [" a dog", " the cat"])
    cpu = score_continuations(model, processor, *args)
    gpu = score_continuations(copy.deepcopy(model).to("cuda"), processor, *args)
    for a, b in zip(cpu, gpu):
        assert a.n_tokens == b.n_tokens and b.nll == pytest.approx(a.nll, abs=1e-4)


def test_token_scores_masks_and_nan():
    logits = torch.tensor([[[0.0, 2.0, 1.0], [3.0, 0.0, -math.inf], [1.0, 1.0, 5.0]]])
    labels = torch.tensor([[-100, 0, 2]])  # the first position is context
    ((nll, greedy, n, raw),) = token_scores(logits, labels)
    expected = -(torch.log_softmax(logits[0, 1], -1)[0] + torch.log_softmax(logits[0, 2], -1)[2]) / 2
    assert n == 2 and greedy and raw == pytest.approx(4.0) and nll == pytest.approx(float(expected))
    # a masked -inf target logit must not poison the row; an unmasked one gives inf
    ((nll, _, _, _),) = token_scores(logits, torch.tensor([[-100, -100, 2]]))
    assert math.isfinite(nll)
    ((nll, greedy, _, _),) = token_scores(logits, torch.tensor([[-100, 2, 2]]))
    assert nll == math.inf and not greedy


def test_build_prompt_rules():
    assert build_prompt("a <image> b <image>", 2, "<I>") == "a <I> b <I>"
    assert build_prompt("question", 2, "<I>") == "<I><I>question"
    assert build_prompt("question", 0, "<I>") == "question"
    with pytest.raises(ValueError, match="2 <image> markers but 1 images"):
        build_prompt("<image><image>", 1, "<I>")


def test_placeholder_table(tiny_loaded):
    _, processor = tiny_loaded("internvl")
    assert image_placeholder("internvl", processor) == "<IMG_CONTEXT>"  # falls back to processor.image_token
    assert image_placeholder("qwen2_5_vl", processor) == PLACEHOLDER["qwen2_5_vl"]


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("torch.float16", "cpu") == torch.float16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")
