"""The likelihood core: score continuations of a multimodal prompt with a Hugging Face image-text-to-text model.

No lmms-eval here: `radar_hf` (lmms-eval glue) and anything else can call `score_continuations`.

Protocol (docs/ARCHITECTURE.md, the reference scripts):
* the context holds one `IMAGE_MARKER` per image, in order; each is swapped for the model's own per-image
  placeholder text, which the processor then expands into the full run of image tokens;
* continuation tokens = the ids of `prompt + continuation` beyond `len(ids of prompt)`, both tokenised by the
  processor *with* the images (so after image-token expansion);
* per continuation: mean token NLL (lmms-eval's loss), is_greedy, token count, mean raw logit (the paper's score).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch

from radar_tasks.models.args import IMAGE_BACKENDS
from radar_tasks.prompts import IMAGE_MARKER

# Per-image placeholder text by `config.model_type`, where it is not simply `processor.image_token`.
_QWEN_VL = "<|vision_start|><|image_pad|><|vision_end|>"  # processor.image_token is only the <|image_pad|> part
IMAGE_PLACEHOLDERS = {
    "qwen2_vl": _QWEN_VL,
    "qwen2_5_vl": _QWEN_VL,
    "qwen3_vl": _QWEN_VL,
    "llava": "<image>",
    "llava_next": "<image>",
    "llava_onevision": "<image>",
    "idefics2": "<image>",
    "idefics3": "<image>",
    "smolvlm": "<image>",
    # internvl: processor.image_token (<IMG_CONTEXT>), which the processor wraps as <img>...</img> itself
}


def image_placeholder(model_type: str | None, processor) -> str:
    """The text standing for one image in a prompt for this model, before the processor expands it."""
    if model_type in IMAGE_PLACEHOLDERS:
        return IMAGE_PLACEHOLDERS[model_type]
    token = getattr(processor, "image_token", None)
    if not token:
        raise ValueError(
            f"no image placeholder known for model_type {model_type!r} and the processor has no image_token"
        )
    return token


def build_prompt(context: str, n_images: int, placeholder: str) -> str:
    """Swap each marker for `placeholder`; with no marker but some images, put all images first."""
    n_markers = context.count(IMAGE_MARKER)
    if n_markers == 0:
        return placeholder * n_images + context
    if n_markers != n_images:
        raise ValueError(f"the context holds {n_markers} {IMAGE_MARKER} markers but {n_images} images were given")
    return context.replace(IMAGE_MARKER, placeholder)


@dataclass(frozen=True)
class ContinuationScore:
    nll: float  # mean over continuation tokens of -log p(token): lmms-eval's loss, lower is better
    is_greedy: bool  # every continuation token is the argmax at its position
    n_tokens: int
    mean_logit: float  # mean raw (pre-softmax) logit of the continuation tokens: the paper's `score=logit`
    prefix_ok: bool  # prompt ids are a prefix of prompt+continuation ids (False: a merge across the boundary)
    skipped: str | None = None  # why it was not scored (the sequence is longer than the model's context)


def context_length(model) -> int | None:
    """Positions the language model was built for (`max_position_embeddings`), if it says."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def too_long(n_tokens: int, limit: int | None) -> str | None:
    """The skip reason of a sequence of `n_tokens` for a model of `limit` positions (None: it fits)."""
    if limit is None or n_tokens <= limit:
        return None
    return f"prompt and candidate hold {n_tokens} tokens, more than the model's {limit} positions"


def skipped_score(reason: str) -> ContinuationScore:
    return ContinuationScore(math.nan, False, 0, math.nan, True, skipped=reason)


def token_scores(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, bool, int, float]]:
    """Per row: (mean NLL, is_greedy, n_tokens, mean raw logit) of the labelled positions.

    `logits[b, t]` is the prediction for `labels[b, t]` (already shifted); label -100 = not scored (context,
    padding). Batched on purpose, so that a shared-prefix / padded path can reuse it.
    """
    logits = logits.float()  # log_softmax in fp32 even for bf16 / fp16 models
    mask = labels != -100
    target = labels.clamp(min=0).unsqueeze(-1)
    logprob = torch.log_softmax(logits, dim=-1).gather(-1, target).squeeze(-1)
    raw = logits.gather(-1, target).squeeze(-1)
    greedy = (logits.argmax(dim=-1) == target.squeeze(-1)) | ~mask
    n = mask.sum(dim=-1)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    # torch.where, not multiplication: a -inf log-prob at a masked position must not turn the sum into nan
    nll = -torch.where(mask, logprob, zero).sum(dim=-1) / n
    mean_logit = torch.where(mask, raw, zero).sum(dim=-1) / n
    return [(float(nll[b]), bool(greedy[b].all()), int(n[b]), float(mean_logit[b])) for b in range(labels.shape[0])]


@functools.cache
def _accepts_logits_to_keep(model_cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_cls.forward).parameters


def encode(processor, text: str, images: list):
    """The processor's encoding of one prompt with its images (a batch of one, torch tensors)."""
    return processor(text=[text], images=images or None, return_tensors="pt")


def _prepend(inputs, token_id: int) -> None:
    """Put one token in front of a text-only encoding (so that the first continuation token has a predictor)."""
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
        if key in inputs:
            value = {"input_ids": token_id, "attention_mask": 1}.get(key, 0)
            inputs[key] = torch.cat([torch.full_like(inputs[key][:, :1], value), inputs[key]], dim=1)


def to_device(inputs, device, dtype) -> dict:
    """A processor encoding moved to `device`; only floating tensors (pixel values) take `dtype`. The copy is
    non-blocking and comes before the cast: from pinned memory it runs asynchronously on CUDA, in stream order
    before the forward that reads it (a cast first would make a pageable copy)."""

    def moved(v):
        v = v.to(device=device, non_blocking=True)
        return v.to(dtype) if dtype is not None and v.is_floating_point() else v

    return {k: moved(v) if torch.is_tensor(v) else v for k, v in inputs.items()}


@torch.inference_mode()
def score_continuations(
    model,
    processor,
    context: str,
    images: list,
    continuations: list[str],
    *,
    device=None,
    dtype=None,
    max_length: int | None = None,
) -> list[ContinuationScore]:
    """Score each continuation of one question: one forward per prompt + continuation (the reference path).

    `prefix_sharing.score_questions` / `SharedPrefixScorer` compute the same numbers with one prefill per question
    and batching across questions (radar_hf's default); this function is what they are tested against and what
    they fall back to. `device` / `dtype` default to the model's; `dtype` is what pixel values are cast to.
    A sequence longer than `max_length` tokens is not run: its score says why (`skipped`).
    """
    device = device if device is not None else model.device
    dtype = dtype if dtype is not None else model.dtype
    images = [im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im for im in images]
    prompt = build_prompt(context, len(images), image_placeholder(getattr(model.config, "model_type", None), processor))
    prompt_ids = encode(processor, prompt, images)["input_ids"][0]
    # An empty text-only prompt leaves nothing to predict the first continuation token: use BOS (or EOS) as the
    # context, as lm-eval does with its end-of-text token.
    tokenizer = getattr(processor, "tokenizer", processor)
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    add_start = len(prompt_ids) == 0
    if add_start:
        prompt_ids = torch.tensor([start_id])
    n_prompt = len(prompt_ids)
    reason = too_long(n_prompt + 1, max_length)
    if reason:
        return [skipped_score(reason) for _ in continuations]

    scores = []
    for continuation in continuations:
        inputs = encode(processor, prompt + continuation, images)
        if add_start:
            _prepend(inputs, start_id)
        ids = inputs["input_ids"]
        n_total = ids.shape[1]
        reason = too_long(n_total, max_length)
        if reason:
            scores.append(skipped_score(reason))
            continue
        prefix_ok = n_total >= n_prompt and bool(torch.equal(ids[0, :n_prompt], prompt_ids))
        if n_total <= n_prompt:  # the continuation adds no token: nothing to score
            scores.append(ContinuationScore(math.nan, False, 0, math.nan, prefix_ok))
            continue
        labels = ids.clone()
        labels[:, :n_prompt] = -100  # context (text and image tokens) is never scored
        kwargs = {"use_cache": False}
        # Only positions n_prompt-1 .. end predict continuation tokens (the last one predicts nothing): the
        # full-vocab logits of a long image prompt are big, so ask the model for these alone where it can.
        keep = n_total - n_prompt + 1
        if _accepts_logits_to_keep(type(model)):
            kwargs["logits_to_keep"] = keep
        logits = model(**to_device(inputs, device, dtype), **kwargs).logits[:, -keep:]
        # logits[:, t] predicts labels[:, t + 1]: shift, as a causal LM loss does
        nll, greedy, n, mean_logit = token_scores(logits[:, :-1], labels[:, 1:][:, -(keep - 1) :].to(logits.device))[0]
        scores.append(ContinuationScore(nll, greedy, n, mean_logit, prefix_ok))
    return scores


# ----------------------------------------------------------------------------------------------------- loading
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype, device="cpu") -> torch.dtype:
    """`auto` = bfloat16 on CUDA, float32 elsewhere; also accepts torch dtypes and `torch.`-prefixed names."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[name]


def load_model(
    pretrained: str,
    device=None,
    dtype="auto",
    trust_remote_code=False,
    attn_implementation=None,
    processor_kwargs: dict | None = None,
    image_processor: str = "fast",
):
    """(model, processor) from a local folder or hub id, in eval mode on `device`.

    `processor_kwargs` go to `AutoProcessor.from_pretrained` (e.g. min_pixels / max_pixels, max_patches).
    `image_processor`: `fast` (transformers' torchvision backend, where the model has one) or `pil`.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if image_processor not in IMAGE_BACKENDS:  # before the (slow) model load
        raise ValueError(f"image_processor must be one of {', '.join(IMAGE_BACKENDS)}; got {image_processor!r}")
    device = device or default_device()
    kwargs = {"dtype": resolve_dtype(dtype, device), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(pretrained, **kwargs).to(device).eval()
    processor = AutoProcessor.from_pretrained(
        pretrained, trust_remote_code=trust_remote_code, **(processor_kwargs or {})
    )
    select_image_backend(processor, pretrained, image_processor, trust_remote_code, processor_kwargs)
    return model, processor


def select_image_backend(
    processor, pretrained: str, choice: str, trust_remote_code=False, processor_kwargs: dict | None = None
) -> None:
    """Give `processor` the image processor of the chosen backend (`IMAGE_BACKENDS`), loaded with the same kwargs.

    A backend is chosen here, not by `AutoProcessor`: its `backend` kwarg reaches every sub-processor, and video
    processors have no PIL backend. A model with one backend only keeps it (transformers logs the fallback).
    """
    current = getattr(processor, "image_processor", None)  # `choice` checked by load_model, the one caller
    backend = IMAGE_BACKENDS[choice]
    if current is None or getattr(current, "backend", None) in (None, backend):
        return
    from transformers import AutoImageProcessor

    processor.image_processor = AutoImageProcessor.from_pretrained(
        pretrained, backend=backend, trust_remote_code=trust_remote_code, **(processor_kwargs or {})
    )
