"""What radar_hf checks once its model and processor are loaded, under the settings in effect.

The prompt style `auto` becomes the model's family style (protocol.resolve_style); `prompt_style=chat` needs a
chat template. The rest are warnings where the run will not do what its args say: quirk switches that act only
with a family style, a Qwen2-VL chat template that is not the base one (protocol=paper), transformers'
LLaVA-OneVision tiles (protocol=paper), processor kwargs that do not show on the processor. No lmms-eval here.
"""

from __future__ import annotations

import dataclasses

from radar_tasks.models import once, protocol
from radar_tasks.models.args import ModelArgs

_TEMPLATE_WARNED: set[str] = set()  # checkpoints already warned about a non-base Qwen2-VL chat template


def check_loaded(settings: ModelArgs, model_type: str | None, processor) -> ModelArgs:
    """`settings` with the concrete prompt style of `model_type`, once checked against the loaded `processor`
    (ValueError: `chat` without a chat template) and warned about (module docstring)."""
    name = settings.pretrained
    style = protocol.resolve_style(settings.prompt_style, model_type)
    if style == "chat" and not getattr(processor, "chat_template", None):
        raise ValueError(f"prompt_style=chat: the processor of {name} has no chat template")
    if style == "raw" and (
        settings.llava_mmmu_one_distractor or settings.internvl_reverse_images or settings.mmmu_two_letters
    ):
        once.warning(
            "radar_hf: llava_mmmu_one_distractor / internvl_reverse_images / mmmu_two_letters act "
            "only with a non-raw prompt_style; ignored"
        )
    if settings.protocol == "paper" and style == "qwen2vl_base":
        problem = protocol.qwen_template_problem(
            lambda messages: processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        )
        if problem and name not in _TEMPLATE_WARNED:  # once per checkpoint (in-loop: every eval)
            _TEMPLATE_WARNED.add(name)
            once.warning(
                f"radar_hf: protocol=paper: the chat template of {name} is not a Qwen2-VL "
                f"base template: it {problem}. The Qwen2-VL script would score that prompt; "
                "prompt_style qwen2vl_base scores images then the question, as with the base "
                "checkpoint"
            )
    if settings.protocol == "paper" and model_type == "llava_onevision":
        once.warning(
            "radar_hf: protocol=paper on a transformers LlavaOnevision model: its image tokens (anyres "
            "tiles + newline embeddings) are not the reference's 729 flat tokens per image; convert "
            "the projector checkpoint to LlavaForConditionalGeneration and use "
            "prompt_style=llava_ov_plain for the exact layout"
        )
    image_processor = getattr(processor, "image_processor", None)
    for key, value in settings.processor_kwargs.items():
        if not kwarg_applied(key, value, (processor, image_processor)):
            once.warning(
                f"radar_hf: processor_kwargs {key}={value!r} does not show on the processor of "
                f"{name} (it may have been ignored)"
            )
    return dataclasses.replace(settings, prompt_style=style)


def _get(obj, key):
    value = getattr(obj, key, None)
    if value is None and hasattr(obj, "get"):
        value = obj.get(key)
    return value


def kwarg_applied(key: str, value, holders) -> bool:
    """Whether a processor kwarg shows on the processor or its image processor (unknown kwargs are dropped
    silently by from_pretrained). Qwen2-VL turns min_pixels / max_pixels into size.shortest_edge / longest_edge."""
    aliases = {"min_pixels": ("size", "shortest_edge"), "max_pixels": ("size", "longest_edge")}
    for obj in holders:
        if obj is None:
            continue
        held = _get(obj, key)
        if isinstance(value, dict) and held is not None:
            if all(_get(held, k) == v for k, v in value.items()):
                return True
        elif held == value:
            return True
        if key in aliases and _get(_get(obj, aliases[key][0]) or {}, aliases[key][1]) == value:
            return True
    return False
