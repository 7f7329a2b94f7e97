"""The authors' protocol per model family: style resolution, `protocol=paper` presets, score convention, quirks.

Pure but for `ReversedBlocksProcessor` (torch, imported lazily). docs/REFERENCE.md says what each reference
script does; the prompt text itself is `radar_tasks.prompts`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from collections.abc import Callable

from radar_tasks import prompts
from radar_tasks.models.args import MODEL_ARGS, SCORES, STYLE_ARGS, ModelArgs, merge_kwargs

# `prompt_style=auto`: the reference script's style for the checkpoint's `config.model_type`, else `raw`.
MODEL_TYPE_STYLES = {
    "qwen2_vl": "qwen2vl_base",
    "qwen2_5_vl": "qwen2vl_base",
    "llava_onevision": "llava_ov_plain",
    "internvl": "internvl",
}


def resolve_style(style: str | None, model_type: str | None) -> str:
    """`auto` (or None) -> the reference style of `model_type`, else `raw`; a named style is checked and kept."""
    style = (style or "auto").strip().lower()
    if style not in STYLE_ARGS:
        raise ValueError(f"prompt_style must be one of {', '.join(STYLE_ARGS)}; got {style!r}")
    if style == "auto":
        return MODEL_TYPE_STYLES.get(model_type or "", "raw")
    return style


# ------------------------------------------------------------------------------------------- scores (loss convention)
# A candidate left out of an item (llava_mmmu_one_distractor) gets this loss: finite, so the item stays scored,
# and exp(-1e30 - max) == 0.0 exactly, so it takes no probability and never wins the argmax.
DROPPED_LOSS = 1e30


def loss_of(score: str, nll: float, mean_logit: float) -> float:
    """The number radar_hf returns per candidate, in lmms-eval's loss convention (lower is better).

    `logprob`: the mean token NLL. `logit` (the paper): MINUS the mean raw logit. SDS = softmax over -loss, so
    with `logit` it is exactly the paper's softmax over mean raw logits; acc (argmin loss) is its argmax.
    """
    if score == "logprob":
        return nll
    if score == "logit":
        return -mean_logit if not math.isnan(mean_logit) else math.nan
    raise ValueError(f"score must be one of {', '.join(SCORES)}; got {score!r}")


def answers(scored, scores, score: str) -> list[tuple[float, bool]]:
    """One `(loss, is_greedy)` per candidate of a request, from the likelihood core's scores of the scored ones
    (in order); candidates a quirk left out get `(DROPPED_LOSS, False)`."""
    if len(scores) != sum(scored):
        raise ValueError(f"{len(scores)} scores for {sum(scored)} scored candidates")
    it = iter(scores)
    out = []
    for keep in scored:
        if not keep:
            out.append((DROPPED_LOSS, False))
            continue
        s = next(it)
        out.append((loss_of(score, s.nll, s.mean_logit), s.is_greedy))
    return out


def nll_sums(scored, scores, texts) -> list[tuple[float | None, int | None]]:
    """Per candidate of a request: the summed NLL in nats (the likelihood core's mean NLL x its token count, under
    either score sign) and the UTF-8 bytes of the continuation as scored (`texts`, one per scored candidate, in
    order: the prompt style's joiner and the candidate), which give its bits per byte; (None, None) for a candidate
    a quirk left out."""
    if len(scores) != sum(scored) or len(texts) != len(scores):
        raise ValueError(f"{len(scores)} scores and {len(texts)} texts for {sum(scored)} scored candidates")
    pairs = iter(zip(scores, texts))
    out = []
    for keep in scored:
        if not keep:
            out.append((None, None))
            continue
        score, text = next(pairs)
        out.append((score.nll * score.n_tokens, len(text.encode("utf-8"))))
    return out


# --------------------------------------------------------------------------------------------------- presets
# `protocol=paper`: what each reference script sets, by family style. Explicit model_args override every key, so
# each quirk below can be turned off on its own (e.g. `protocol=paper,mmmu_two_letters=false`).
PAPER_PRESETS = {
    "qwen2vl_base": {
        "dtype": "bfloat16",
        # min_pixels=256*28*28, max_pixels=768*28*28: 256..768 merged visual tokens per image (one per 28x28 px);
        # transformers 5 keeps them as size.shortest_edge / longest_edge (min_pixels= at call time is deprecated)
        "processor_kwargs": {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 768 * 28 * 28}},
        "qwen_vl_utils_resize": True,
        "image_conversion": "qwen_vl_utils",  # qwen-vl-utils `to_rgb`: only RGBA is pasted onto white
    },
    "internvl": {
        "dtype": "bfloat16",
        # the checkpoint's own tile size (448 px, 256 tokens per tile); 1..3 tiles + a thumbnail when > 1 tile
        "processor_kwargs": {"crop_to_patches": True, "min_patches": 1, "max_patches": 3},
        "image_conversion": "pil_convert",
        "internvl_reverse_images": True,
    },
    "llava_ov_plain": {
        "dtype": "float16",
        "processor_kwargs": {},
        "image_conversion": "pil_convert",
        "llava_mmmu_one_distractor": True,
    },
}
# What every family script does alike: score=logit and the two letters A/B of MMMU-Pro options blocks.
PAPER_COMMON = {"score": "logit", "mmmu_two_letters": True}
# `protocol=paper` without an explicit prompt_style: the checkpoint's family style (resolve_style)
PAPER_STYLE = "auto"
# The switches a preset may set (model args declared `switch=True`), with their value without protocol.
SWITCH_DEFAULTS = {name: spec.default for name, spec in MODEL_ARGS.items() if spec.switch}


def paper_preset(style: str) -> dict:
    """The `protocol=paper` settings for a resolved style (score=logit always; family settings where known)."""
    preset = {"processor_kwargs": {}, **SWITCH_DEFAULTS}
    if style in PAPER_PRESETS:
        preset.update(PAPER_COMMON)
        preset.update(copy.deepcopy(PAPER_PRESETS[style]))
    else:
        preset["score"] = PAPER_COMMON["score"]
    return preset


# --------------------------------------------------------------------------------------------------- quirks
def one_distractor_mask(doc, n_candidates: int, seed: int = 0) -> tuple[bool, ...]:
    """LLaVA script quirk: MMMU-Pro text-option items keep the answer and ONE distractor drawn at random.

    The script draws with `random.sample(distraction, 1)` from one global generator, so its draw depends on the
    file order and on every earlier draw: it cannot be replayed. Ours is a per-item draw seeded by the item id:
    candidate `random.Random(f"{seed}:llava_mmmu_one_distractor/{id}").randrange(1, n_candidates)` is kept.
    """
    keep = [True] * n_candidates
    if doc.get("subset") != "mmmu_pro" or prompts.shows_options(doc) or n_candidates <= 2:
        return tuple(keep)
    kept = random.Random(f"{seed}:llava_mmmu_one_distractor/{doc['id']}").randrange(1, n_candidates)
    return tuple(i == 0 or i == kept for i in range(n_candidates))


def scored_candidates(
    doc, candidates: list[str], *, two_letters: bool = False, one_distractor: bool = False
) -> tuple[list[str], tuple[bool, ...]]:
    """The strings to score for one request's `candidates` (the record's `choices`, correct first) under the
    candidate quirks, and which of them are scored (the others get DROPPED_LOSS: one per request either way).

    `two_letters` (every script): an options block is scored on `A`/`B` only (prompts.option_letters), the
    remaining letters are dropped. `one_distractor` (LLaVA script): one_distractor_mask.
    """
    candidates = list(candidates)
    n_options = 1 + len(doc.get("distractors") or [])
    if two_letters and prompts.shows_options(doc) and len(candidates) == n_options:
        letters = prompts.option_letters(n_options, bool(doc.get("correct_first")), two_letters=True)
        return letters + candidates[2:], tuple(i < 2 for i in range(n_options))
    if one_distractor:
        return candidates, one_distractor_mask(doc, len(candidates))
    return candidates, tuple(True for _ in candidates)


QWEN_FACTOR, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS, QWEN_MAX_RATIO = 28, 4 * 28 * 28, 16384 * 28 * 28, 200


def qwen_smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """qwen-vl-utils' target size: multiples of `factor`, pixel count within bounds, aspect ratio kept."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_vl_utils_resize(image):
    """The Qwen2-VL script's first resize (`process_vision_info` -> `fetch_image`, default bounds, PIL's default
    resampling) before the processor's own min/max-pixels resize. Extreme aspect ratios (> 200, where
    qwen-vl-utils raises) are returned unchanged."""
    width, height = image.size
    if max(width, height) / max(1, min(width, height)) > QWEN_MAX_RATIO:
        return image
    h, w = qwen_smart_resize(height, width)
    return image.resize((w, h))


class ReversedBlocksProcessor:
    """The InternVL script's multi-image order, for an HF InternVL processor (`internvl_reverse_images=true`).

    The script prepends `<image>` + sep once per image and expands the first `<image>` each time, so the text holds
    the image blocks in reverse order (block i sized for image n-1-i) while the pixel values stay in file order:
    when the images have different tile counts, image boundaries and `<img>`/`</img>` no longer line up with the
    visual features. This proxy reproduces it: it tokenises with the images reversed (block sizes reversed) and
    hands the pixel values back in file order. Everything else is delegated to the wrapped processor.
    """

    def __init__(self, processor):
        self._processor = processor

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, images=None, **kwargs):
        if not images or len(images) < 2:
            return self._processor(*args, images=images, **kwargs)
        import torch

        reversed_images = list(images)[::-1]
        out = self._processor(*args, images=reversed_images, **kwargs)
        ip = self._processor.image_processor
        counts = [int(ip.get_number_of_image_patches(im.height, im.width, {})) for im in reversed_images]
        pixels = out["pixel_values"]
        if sum(counts) != pixels.shape[0]:
            raise ValueError(f"ReversedBlocksProcessor: {pixels.shape[0]} tiles for per-image counts {counts}")
        out["pixel_values"] = torch.cat(list(torch.split(pixels, counts, dim=0))[::-1], dim=0)
        return out


# --------------------------------------------------------------------------------------------------- checkpoints
def internvl_system_message(config) -> str:
    """The InternVL script's system message: `config.system_message` when the checkpoint has one, even empty (the
    original model reads it from there; `convert-internvl` keeps it), else the `internvl2_5` template's default."""
    own = getattr(config, "system_message", None)
    return own if isinstance(own, str) else prompts.INTERNVL_SYSTEM_MESSAGE


QWEN_VISION = "<|vision_start|><|image_pad|><|vision_end|>"
_QWEN_PROBE = "How many dots are there?"


def qwen_script_messages(n_images: int, question: str) -> list[dict]:
    """What the Qwen2-VL script hands `apply_chat_template`: a flat, role-less list (one item per image, then the
    question)."""
    images = [{"type": "image", "content": [{"type": "image", "image": f"image_{i}.png"}]} for i in range(n_images)]
    return images + [{"type": "text", "text": question, "content": []}]


def qwen_template_problem(render: Callable[[list], str]) -> str | None:
    """None when the checkpoint's chat template (`render(messages)`, no generation prompt) turns the Qwen2-VL
    script's messages into images then the question, as the base checkpoint's template does (and as
    prompt_style qwen2vl_base scores them); else a description of what the script would have scored instead.
    An Instruct-style template, which loops over each message's roles and content, renders a system prompt and
    empty turns and drops the question."""
    try:
        rendered = render(qwen_script_messages(2, _QWEN_PROBE))
    except Exception as exc:  # a template that cannot render the script's messages: the script fails there
        return f"cannot render the script's messages ({type(exc).__name__}: {exc})"
    if rendered == 2 * QWEN_VISION + _QWEN_PROBE:
        return None
    lost = "" if _QWEN_PROBE in rendered else ", without the question"
    return f"renders the script's messages (2 images, a question) as {rendered!r}{lost}"


# --------------------------------------------------------------------------------------------------- settings
def resolve_settings(args: ModelArgs, model_type: Callable[[], str | None]) -> ModelArgs:
    """`args` (checked: models.args) with the protocol's preset applied: every model arg the preset sets and the
    caller did not give takes the preset's value (explicit args win; processor_kwargs are merged key by key over the
    preset's). `protocol=paper` = the reference script of the checkpoint's family (prompt_style auto ->
    qwen2vl_base | llava_ov_plain | internvl, by `model_type()` or by an explicit family prompt_style),
    score=logit, the family's dtype, processor settings, image conversion and quirks (PAPER_PRESETS).
    `model_type` is called only when a preset needs it (it reads the checkpoint's config)."""
    if args.protocol != "paper":
        return args
    style_arg = args.prompt_style if "prompt_style" in args.given else PAPER_STYLE
    family = model_type()
    style = resolve_style(style_arg, family)
    preset = paper_preset(style)
    if style not in prompts.FAMILY_STYLES:
        from loguru import logger

        logger.warning(
            f"radar_hf: protocol=paper: no reference script for model_type {family!r} "
            f"(prompt_style {style}); only score=logit is set"
        )
    preset["prompt_style"] = style_arg
    applied = {name: value for name, value in preset.items() if name not in args.given}
    applied["processor_kwargs"] = merge_kwargs(preset["processor_kwargs"], args.processor_kwargs)
    return dataclasses.replace(args, **applied)
