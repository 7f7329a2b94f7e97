r"""Prompt styles: how one M3-Bench record becomes the prompt and the scored strings of one model family.

Pure (no lmms-eval; torch only inside `ReversedBlocksProcessor`): `build(doc, style, candidates)` turns a normalized
record (docs/ARCHITECTURE.md) and its candidate strings into a `StyledQuestion`: the context with one
`IMAGE_MARKER` per image (the likelihood core swaps each for the model's own image tokens), the strings appended to
it, and which candidates are scored at all.

Styles (shared/notes/radar-reference-protocol.md is the authority; `A` = candidate, `Q` = question):

| style | context (user text, then template) | scored string |
|---|---|---|
| `qwen2vl_base` | all images, then `Q` (the base checkpoint's chat template); MMMU-Pro: inline | `ctx + " " + A` |
| `llava_ov_plain` | `plain`: text + `"\n"`; text = `<img>\nQ` (MMBench, MathVista), `<img> Q` (Wiki, | `ctx + A` |
| | spatial), `<img>`*n + `" Q"` (SeePhys), inline (MMMU-Pro) | |
| `internvl` | `internvl2_5` ChatML with its system message; user = per image `<img>` + sep (`"\n"` | `ctx + A` |
| | MMBench / MathVista, `" "` otherwise) + `Q`, inline for MMMU-Pro; ends `<|im_start|>assistant\n` | |
| `chat` | the processor's chat template: one user turn (images, then `Q`; MMMU-Pro interleaved), | `ctx + A` |
| | generation prompt | |
| `raw` | lmms-eval's context as rendered from the task YAML (not built here) | `ctx + " " + A` |

MMMU-Pro items whose options hold images carry `options_text` (`" A. <opt> B. <opt> Please select the correct
option: "`) and letter candidates in the record: every style shows `Q + options_text` with all images inline.
Skipped records (more than 12 images) are rendered without images; they are never scored.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from radar_tasks.prompts import IMAGE_MARKER

STYLES = ("raw", "auto", "qwen2vl_base", "llava_ov_plain", "internvl", "chat")
FAMILY_STYLES = ("qwen2vl_base", "llava_ov_plain", "internvl")  # the three reference scripts

# `prompt_style=auto`: the reference script's style for the checkpoint's `config.model_type`, else `raw`.
MODEL_TYPE_STYLES = {
    "qwen2_vl": "qwen2vl_base",
    "qwen2_5_vl": "qwen2vl_base",
    "llava_onevision": "llava_ov_plain",
    "internvl": "internvl",
}

# The `internvl2_5` conversation template of InternVL (system template `<|im_start|>system\n{system_message}`,
# roles `<|im_start|>user\n` / `<|im_start|>assistant\n`, MPT separator `<|im_end|>\n`).
INTERNVL_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>\n"

_IMAGE_REF = re.compile(r"<image \d+>")
_NEWLINE_AFTER_IMAGE = {  # subsets whose image(s) are followed by "\n" (else " ") in the family's user text
    "llava_ov_plain": frozenset({"mmbench", "mathvista"}),
    "internvl": frozenset({"mmbench", "mathvista", "mmmu_pro"}),
}
# A candidate left out of an item (llava_mmmu_one_distractor) gets this loss: finite, so the item stays scored,
# and exp(-1e30 - max) == 0.0 exactly, so it takes no probability and never wins the argmax.
DROPPED_LOSS = 1e30


@dataclass(frozen=True)
class StyledQuestion:
    context: str  # one IMAGE_MARKER per image; marker i stands for the record's image i (every style keeps the
    # record's order, which is the scripts' order: MMMU-Pro question images, then option images, as they appear)
    continuations: tuple[str, ...]  # one per candidate (also the dropped ones), appended to `context` as is
    scored: tuple[bool, ...]  # False: candidate left out (reference quirk), answered with DROPPED_LOSS
    reverse_blocks: bool = False  # InternVL script quirk, see ReversedBlocksProcessor
    style: str = ""


def is_m3bench_record(doc) -> bool:
    """A normalized M3-Bench record (the styles need its columns); anything else falls back to `raw`."""
    return isinstance(doc, dict) and all(k in doc for k in ("subset", "question", "images", "choices"))


def resolve_style(style: str | None, model_type: str | None) -> str:
    """`auto` (or None) -> the reference style of `model_type`, else `raw`; a named style is checked and kept."""
    style = (style or "auto").strip().lower()
    if style not in STYLES:
        raise ValueError(f"prompt_style must be one of {', '.join(STYLES)}; got {style!r}")
    if style == "auto":
        return MODEL_TYPE_STYLES.get(model_type or "", "raw")
    return style


def _n_images(doc) -> int:
    return 0 if doc.get("skipped") else len(doc["images"])


def _inline(text: str, marker: str) -> str:
    return _IMAGE_REF.sub(lambda _: marker, text)


def _mmmu_text(doc, marker: str) -> str:
    """MMMU-Pro: question (+ options block of image-option items) with every `<image k>` replaced inline."""
    return _inline(doc["question"] + (doc.get("options_text") or ""), marker)


def user_text(doc, style: str) -> str:
    """The text of the user turn (before any template) with IMAGE_MARKERs, for a family style."""
    marker = "" if doc.get("skipped") else IMAGE_MARKER
    if doc["subset"] == "mmmu_pro":
        return _mmmu_text(doc, marker)
    n, question = _n_images(doc), doc["question"]
    if style == "qwen2vl_base":
        return IMAGE_MARKER * n + question
    if n == 0:
        return question
    sep = "\n" if doc["subset"] in _NEWLINE_AFTER_IMAGE[style] else " "
    if style == "llava_ov_plain":  # all markers, then one separator (SeePhys: `<image>` * img_num + " ")
        return IMAGE_MARKER * n + sep + question
    if style == "internvl":  # one separator after each image block
        return (IMAGE_MARKER + sep) * n + question
    raise ValueError(f"user_text: no family rule for style {style!r}")


def internvl_chatml(user: str, system_message: str = INTERNVL_SYSTEM_MESSAGE) -> str:
    """`internvl2_5` rendering of one user turn, ending with the assistant header (the answer follows directly)."""
    return (f"{_IM_START}system\n{system_message}{_IM_END}"
            f"{_IM_START}user\n{user}{_IM_END}"
            f"{_IM_START}assistant\n")


def chat_messages(doc) -> list[dict]:
    """One user turn for a processor chat template: images first, then the question (MMMU-Pro: interleaved)."""
    text = doc["question"] + (doc.get("options_text") or "")
    if doc["subset"] != "mmmu_pro":
        content = [{"type": "image"} for _ in range(_n_images(doc))] + [{"type": "text", "text": text}]
    elif doc.get("skipped"):
        content = [{"type": "text", "text": _inline(text, "")}]
    else:
        content = []
        for i, piece in enumerate(_IMAGE_REF.split(text)):
            if i:
                content.append({"type": "image"})
            if piece:
                content.append({"type": "text", "text": piece})
    return [{"role": "user", "content": content}]


def one_distractor_mask(doc, n_candidates: int, seed: int = 0) -> tuple[bool, ...]:
    """LLaVA script quirk: MMMU-Pro text-option items keep the answer and ONE distractor drawn at random.

    The script draws with `random.sample(distraction, 1)` from one global generator, so its draw depends on the
    file order and on every earlier draw: it cannot be replayed. Ours is a per-item draw seeded by the item id.
    """
    keep = [True] * n_candidates
    if doc.get("subset") != "mmmu_pro" or doc.get("options_text") or n_candidates <= 2:
        return tuple(keep)
    kept = random.Random(f"{seed}:llava_mmmu_one_distractor/{doc['id']}").randrange(1, n_candidates)
    return tuple(i == 0 or i == kept for i in range(n_candidates))


def build(
    doc,
    style: str,
    candidates: Sequence[str],
    *,
    chat_template: Callable[[list[dict]], str] | None = None,
    image_placeholder: str | None = None,
    llava_mmmu_one_distractor: bool = False,
    internvl_reverse_images: bool = False,
    system_message: str = INTERNVL_SYSTEM_MESSAGE,
    seed: int = 0,
) -> StyledQuestion:
    """Prompt and scored strings of one M3-Bench record in `style` (not `raw`/`auto`: resolve those first).

    `candidates` are the strings to score, without any delimiter (the record's `choices`, or fewer for a skipped
    record). `chat` needs `chat_template(messages) -> str` (rendered with the generation prompt) and the model's
    per-image placeholder text as that template renders it, which is turned back into IMAGE_MARKERs.
    """
    if not is_m3bench_record(doc):
        raise ValueError("prompt styles need an M3-Bench record (columns subset, question, images, choices)")
    n = _n_images(doc)
    candidates = list(candidates)
    reverse_blocks = False
    if style == "qwen2vl_base":
        context, joiner = user_text(doc, style), " "
    elif style == "llava_ov_plain":
        context, joiner = user_text(doc, style) + "\n", ""
    elif style == "internvl":
        context, joiner = internvl_chatml(user_text(doc, style), system_message), ""
        reverse_blocks = internvl_reverse_images and doc["subset"] != "mmmu_pro" and n > 1
    elif style == "chat":
        if chat_template is None or not image_placeholder:
            raise ValueError("prompt_style=chat needs the processor's chat template and image placeholder")
        rendered = chat_template(chat_messages(doc))
        if rendered.count(image_placeholder) != n:
            raise ValueError(f"the chat template rendered {rendered.count(image_placeholder)} image placeholders "
                             f"({image_placeholder!r}) for {n} images")
        context, joiner = rendered.replace(image_placeholder, IMAGE_MARKER), ""
    else:
        raise ValueError(f"build: style {style!r} is not a family or chat style (raw/auto are resolved elsewhere)")
    if context.count(IMAGE_MARKER) != n:
        raise ValueError(f"item {doc.get('id')!r}: {context.count(IMAGE_MARKER)} image markers for {n} images "
                         f"(does the question contain a literal {IMAGE_MARKER!r}?)")
    scored = (one_distractor_mask(doc, len(candidates), seed) if llava_mmmu_one_distractor
              else tuple(True for _ in candidates))
    return StyledQuestion(
        context=context,
        continuations=tuple(joiner + c for c in candidates),
        scored=scored,
        reverse_blocks=reverse_blocks,
        style=style,
    )


def strip_delimiter(continuation: str, delimiter: str = " ") -> str:
    """lmms-eval's continuation is `target_delimiter + choice`: the candidate itself."""
    return continuation[len(delimiter):] if delimiter and continuation.startswith(delimiter) else continuation


# ------------------------------------------------------------------------------------------- scores (loss convention)
SCORES = ("logprob", "logit")


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


# --------------------------------------------------------------------------------------------------- model_args
def parse_kwargs(value) -> dict:
    """`processor_kwargs` from a model_arg: a dict, a JSON object, or `key:value;key:value`.

    The `;`/`:` form survives lmms-eval's (and lm-eval's) comma split of --model_args. Values: int, float,
    true/false, none, else string; a dotted key sets a nested dict (`size.height:448;size.width:448`).
    """
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    text = str(value).strip()
    if text.startswith("{"):
        import json

        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError(f"processor_kwargs: expected a JSON object, got {text!r}")
        return parsed
    out: dict = {}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, raw = item.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"processor_kwargs: expected key:value pairs separated by ';', got {item!r}")
        target, parts = out, key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = _scalar(raw.strip())
    return out


def _scalar(raw: str):
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


# `protocol=paper`: what each reference script sets, by family style. Explicit model_args override every key.
PAPER_PRESETS = {
    "qwen2vl_base": {
        "dtype": "bfloat16",
        # min_pixels=256*28*28, max_pixels=768*28*28: 256..768 merged visual tokens per image (one per 28x28 px);
        # transformers 5 keeps them as size.shortest_edge / longest_edge (min_pixels= at call time is deprecated)
        "processor_kwargs": {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 768 * 28 * 28}},
        "qwen_vl_utils_resize": True,
    },
    "internvl": {
        "dtype": "bfloat16",
        # the checkpoint's own tile size (448 px, 256 tokens per tile); 1..3 tiles + a thumbnail when > 1 tile
        "processor_kwargs": {"crop_to_patches": True, "min_patches": 1, "max_patches": 3},
    },
    "llava_ov_plain": {"dtype": "float16", "processor_kwargs": {}},
}
PROTOCOLS = ("paper",)


def paper_preset(style: str) -> dict:
    """The `protocol=paper` settings for a resolved style (score=logit always; family settings where known)."""
    import copy

    preset = {"score": "logit", "processor_kwargs": {}, "qwen_vl_utils_resize": False}
    preset.update(copy.deepcopy(PAPER_PRESETS.get(style, {})))
    return preset


def merge_kwargs(base: dict, override: dict) -> dict:
    """`override` on top of `base`, nested dicts merged key by key (`size.longest_edge:...` keeps the preset's
    `size.shortest_edge`)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_kwargs(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------- image quirks
QWEN_FACTOR, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS, QWEN_MAX_RATIO = 28, 4 * 28 * 28, 16384 * 28 * 28, 200


def qwen_smart_resize(height: int, width: int, factor: int = QWEN_FACTOR, min_pixels: int = QWEN_MIN_PIXELS,
                      max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
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


# ------------------------------------------------------------------------------------------- one question, prepared
@dataclass
class PreparedQuestion:
    """What the scorer gets for one question (radar_hf's per-question hook), and how its results map back.

    `continuations` holds only the scored candidates; `answers(scores)` returns one `(loss, is_greedy)` per
    candidate of the request, in request order (dropped ones: `(DROPPED_LOSS, False)`). `processor` is the model's
    processor or a per-question proxy (ReversedBlocksProcessor): encode this question's prompt with it.
    """

    context: str
    images: list
    continuations: list[str]
    processor: object
    scored: tuple[bool, ...]
    score: str = "logprob"
    style: str = "raw"

    def answers(self, scores) -> list[tuple[float, bool]]:
        if len(scores) != sum(self.scored):
            raise ValueError(f"{len(scores)} scores for {sum(self.scored)} scored candidates")
        it = iter(scores)
        out = []
        for keep in self.scored:
            if not keep:
                out.append((DROPPED_LOSS, False))
                continue
            s = next(it)
            out.append((loss_of(self.score, s.nll, s.mean_logit), s.is_greedy))
        return out
