"""Edges of radar_tasks.prompts that the mutation check found untested: defaults, the chat layout of skipped and
image-led MMMU-Pro items, two-image InternVL blocks, a custom system message, the error messages.
The MMMU-Pro option block and its letters are tests/test_prompts.py's."""

from __future__ import annotations

import pytest

from radar_tasks import prompts
from radar_tasks.prompts import IMAGE_MARKER


def record(subset, question, choices, n_images=1, skipped=False):
    return {
        "id": "q7",
        "subset": subset,
        "category": subset,
        "ability": "reasoning",
        "source_file": "x.json",
        "images": [f"/img/{k}.png" for k in range(n_images)],
        "question": question,
        "answer": choices[0],
        "distractors": choices[1:],
        "choices": choices,
        "options_text": "",
        "skipped": skipped,
        "source": "{}",
    }


EDGES = record("mmmu_pro", "<image 1> or <image 2>", ["3", "4"], n_images=2)  # an image first and last
SEEPHYS_TWO = record("seephys", "How many dots?", ["7", "8"], n_images=2)


def test_task_text_has_no_markers_unless_asked():
    assert prompts.task_text(SEEPHYS_TWO) == "How many dots?"
    assert prompts.task_text(SEEPHYS_TWO, image_markers=True) == f"{IMAGE_MARKER}{IMAGE_MARKER} How many dots?"
    assert prompts.task_text(EDGES) == "<image 1> or <image 2>"


def test_chat_messages_without_empty_text_parts():
    [msg] = prompts.chat_messages(EDGES)
    assert msg["content"] == [{"type": "image"}, {"type": "text", "text": " or "}, {"type": "image"}]
    [msg] = prompts.chat_messages(dict(EDGES, skipped=True))  # skipped: the text alone, its references removed
    assert msg == {"role": "user", "content": [{"type": "text", "text": " or "}]}


def test_internvl_reverses_two_image_blocks():
    assert prompts.build(SEEPHYS_TWO, "internvl", ["7", "8"], reverse_blocks=True).reverse_blocks
    assert not prompts.build(record("seephys", "Q?", ["7", "8"]), "internvl", ["7"], reverse_blocks=True).reverse_blocks


def test_build_keeps_style_and_system_message():
    prompt = prompts.build(SEEPHYS_TWO, "internvl", ["7", "8"], system_message="Be brief.")
    assert prompt.style == "internvl"
    assert prompt.context == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
        f"{IMAGE_MARKER} {IMAGE_MARKER} How many dots?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompts.build(SEEPHYS_TWO, "raw", ["7"]).style == "raw"


def test_error_messages():
    with pytest.raises(ValueError, match=r"prompt styles need an M3-Bench record \(columns subset, question, images"):
        prompts.build({"question": "Q?"}, "raw", ["a"])
    with pytest.raises(ValueError, match="prompt_style=chat needs the processor's chat template and image placeholder"):
        prompts.build(SEEPHYS_TWO, "chat", ["7"], chat_template=lambda messages: "")
    with pytest.raises(ValueError, match=r"unknown prompt style 'plain' \(one of raw, qwen2vl_base, llava_ov_plain, "):
        prompts.build(SEEPHYS_TWO, "plain", ["7"])
    with pytest.raises(
        ValueError,
        match=r"item 'q7': 2 image markers for 1 images \(does the question contain a "
        r"literal '<image>'\?\)",
    ):
        prompts.build(record("wiki_animal", f"Is {IMAGE_MARKER} a dog?", ["yes", "no"]), "raw", ["yes"])
    with pytest.raises(ValueError, match="user_text: no layout for style 'chat'"):
        prompts.user_text(SEEPHYS_TWO, "chat")
