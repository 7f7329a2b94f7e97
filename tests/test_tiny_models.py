"""Tiny checkpoints load like real ones and run a multimodal forward."""

from __future__ import annotations

import hashlib
import time

import pytest
import torch

from radar_tasks.demo.tiny_models import TINY_ARCHS, build_tiny_model

# The architecture class each arch must resolve to through AutoModelForImageTextToText (the real classes, no stubs).
EXPECTED_CLASSES = {
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "llava_onevision": ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor"),
    "internvl": ("InternVLForConditionalGeneration", "InternVLProcessor"),
    "idefics3": ("Idefics3ForConditionalGeneration", "Idefics3Processor"),
    "llava": ("LlavaForConditionalGeneration", "LlavaProcessor"),
}
# Text that one image stands for in a prompt, before the processor expands it (written here from each family's
# docs, independently of radar_tasks.models.likelihood).
PLACEHOLDER = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "internvl": "<IMG_CONTEXT>",
}


def test_all_archs_listed():
    assert set(TINY_ARCHS) == set(EXPECTED_CLASSES)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_reload_with_auto_classes_and_forward(arch, tiny_checkpoint, tiny_loaded, tiny_images):
    folder = tiny_checkpoint(arch)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    model, processor = tiny_loaded(arch)
    assert (type(model).__name__, type(processor).__name__) == EXPECTED_CLASSES[arch]
    assert model.config.model_type == arch
    assert sum(p.numel() for p in model.parameters()) < 2_000_000  # tiny
    # the embedding table covers every token the tokenizer can produce, special tokens included
    assert model.get_input_embeddings().num_embeddings >= len(processor.tokenizer)

    image = PLACEHOLDER.get(arch, "<image>")
    inputs = processor(text=[f"Look: {image} and {image}. Which animal?"], images=tiny_images[:2], return_tensors="pt")
    n_text = len(processor.tokenizer("Look: and . Which animal?")["input_ids"])
    assert inputs["input_ids"].shape[1] > n_text + 2  # each image expanded into several tokens
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ["qwen2_vl", "internvl", "idefics3"])
def test_chat_template_renders_images(arch, tiny_loaded):
    _, processor = tiny_loaded(arch)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert PLACEHOLDER.get(arch, "<image>") in text and "What is it?" in text


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_deterministic_and_seeded(tmp_path, tiny_checkpoint):
    start = time.perf_counter()
    again = build_tiny_model(tmp_path / "a", "qwen2_vl", seed=0)
    elapsed = time.perf_counter() - start
    assert _digest(again) == _digest(tiny_checkpoint("qwen2_vl"))
    other = build_tiny_model(tmp_path / "b", "qwen2_vl", seed=1)
    assert _digest(other)["model.safetensors"] != _digest(again)["model.safetensors"]
    assert _digest(other)["tokenizer.json"] == _digest(again)["tokenizer.json"]
    assert elapsed < 5  # ~0.3 s here; generous for loaded CI machines


def test_build_does_not_touch_global_rng(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", "llava", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny arch"):
        build_tiny_model(tmp_path, "gpt2")
