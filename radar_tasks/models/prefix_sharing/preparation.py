"""Preparing one question for shared scoring: the host work before any forward.

Its prompt is encoded once with its images (the processor), every candidate's ids are derived from that encoding,
and the shared prefix is found; or the question is marked for the per-candidate way (`fallback`) or not scored
(`skipped`). No model forward and no other question: background workers run it (`models.pipeline`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from radar_tasks.models import likelihood, once
from radar_tasks.models.likelihood import ContinuationScore, build_prompt, image_placeholder

# config attributes holding the ids of image / video tokens (never padding; never after the shared prefix)
_MM_ID_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")


@dataclass
class Question:
    """What the scorer takes: one question's context (with `<image>` markers), images and continuations."""

    context: str
    images: list
    continuations: list[str]
    processor: object = None  # a per-question processor (e.g. protocol.ReversedBlocksProcessor); None: the model's


@dataclass
class PreparedQuestion:
    """A Question tokenised for sharing: candidate ids, the shared prefix length, the prompt's encoding."""

    n_prompt: int
    full_ids: list  # per candidate: 1D LongTensor of prompt + candidate ids (with image tokens expanded)
    prefix: int = 0  # P: length of the shared prefix that is prefilled
    encoding: dict = field(default_factory=dict)  # processor output of the prompt (batch of one)
    has_images: bool = False
    prefix_ok: list = field(default_factory=list)
    fallback: str | None = None  # why this question goes the per-candidate way
    skipped: str | None = None  # why this question is not scored at all (longer than the model's context)
    n_candidates: int = 0
    index: int = -1  # position in the list being scored (set by `SharedPrefixScorer.score_prepared`)

    def has_row(self, f: torch.Tensor) -> bool:
        """Candidate `f` is scored and has ids to feed beyond the prefix (ids P .. n-2; the last one predicts
        nothing): it takes a row (or a segment) of the continuation forward."""
        return len(f) > self.n_prompt and len(f) - 1 - self.prefix > 0

    def empty_score(self, k: int) -> ContinuationScore:
        """The score of candidate `k` when it adds no token to the prompt: nothing to score."""
        return ContinuationScore(math.nan, False, 0, math.nan, self.prefix_ok[k])

    # Pickled (from a background worker to the main process): small tensors travel by value, as numpy arrays; torch
    # would give each its own shared-memory segment and file descriptor, ~5x the cost of these few bytes.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["full_ids"] = [_by_value(f) for f in self.full_ids]
        state["encoding"] = {k: _by_value(v) for k, v in self.encoding.items()}
        return state

    def __setstate__(self, state: dict) -> None:
        state["full_ids"] = [_as_tensor(f) for f in state["full_ids"]]
        state["encoding"] = {k: _as_tensor(v) for k, v in state["encoding"].items()}
        self.__dict__.update(state)

    def pin_memory(self) -> PreparedQuestion:
        """The encoding's tensors in page-locked memory (torch's DataLoader calls this in its pin thread), so that
        their copies to CUDA (`likelihood.to_device`, non-blocking) overlap with the model's work."""
        self.encoding = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in self.encoding.items()}
        return self


_BY_VALUE_NUMEL = 1 << 16  # tensors up to this many elements are pickled by value (ids, masks, grids)


def _by_value(value):
    if torch.is_tensor(value) and value.numel() <= _BY_VALUE_NUMEL and value.dtype != torch.bfloat16:
        return value.numpy()  # bfloat16 has no numpy dtype
    return value


def _as_tensor(value):
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two 1D id tensors."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0, 0]) if len(diff) else n


class Preparer:
    """Tokenises questions for one model: `prepare(question) -> PreparedQuestion`.

    `derived_tokens`: candidate ids derived from the prompt's encoding and text-only tokenisations (one processor
    call per question) rather than the processor per candidate; the first question of each kind (with or without
    images, per processor class) is also tokenised the exact way, and a mismatch switches derivation off.
    """

    def __init__(self, processor, config, *, max_length: int | None, derived_tokens: bool):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.placeholder = image_placeholder(getattr(config, "model_type", None), processor)
        self.mm_ids = {
            int(v) for a in _MM_ID_ATTRS for v in [getattr(config, a, None)] if isinstance(v, int) and v >= 0
        }
        # the id that pads a batch of ids (prefill and continuation): any id but an image / video token's
        self.pad_id = next(
            i
            for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0, 1, 2)
            if i is not None and i not in self.mm_ids
        )
        self.max_length = max_length  # positions of the model: longer prompts (+ candidates) are skipped
        self.derived_tokens = derived_tokens
        self.checked_tokens = set()  # (images or not, processor class) whose derived ids were checked once

    def prepare(self, q: Question) -> PreparedQuestion:
        """The host work of one question, before any forward: its prompt encoded with its images (the processor),
        the ids of every candidate, the shared prefix, or why it goes the per-candidate way (`fallback`). Needs no
        model forward and no other question. The first question of each kind a process prepares is also tokenised
        the exact way (see the class doc)."""
        images = [im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im for im in q.images]
        processor = q.processor or self.processor
        prompt = build_prompt(q.context, len(images), self.placeholder)
        encoding = likelihood.encode(processor, prompt, images)
        prompt_ids = encoding["input_ids"][0]
        n_prompt = len(prompt_ids)
        prep = PreparedQuestion(
            n_prompt, [], encoding=dict(encoding), has_images=bool(images), n_candidates=len(q.continuations)
        )
        prep.skipped = likelihood.too_long(n_prompt + 1, self.max_length)
        if prep.skipped:
            return prep
        if n_prompt == 0:
            prep.fallback = "empty prompt"
            return prep
        if images and any(self.placeholder in c or likelihood.IMAGE_MARKER in c for c in q.continuations):
            prep.fallback = "image placeholder in a candidate"
            return prep
        if self.derived_tokens:
            prep.full_ids = self._derived_ids(prompt, prompt_ids, q.continuations)
            kind = (bool(images), type(processor).__name__)
            if kind not in self.checked_tokens:
                exact = self._exact_ids(processor, prompt, images, q.continuations)
                self.checked_tokens.add(kind)
                if any(not torch.equal(a, b) for a, b in zip(prep.full_ids, exact)):
                    once.warning(
                        f"prefix sharing: the candidate ids derived from the text-only tokenisation differ from the "
                        f"processor's with images ({type(self.processor).__name__}); tokenising every candidate "
                        f"with the processor from now on"
                    )
                    self.derived_tokens = False
                    prep.full_ids = exact
        else:
            prep.full_ids = self._exact_ids(processor, prompt, images, q.continuations)
        prep.skipped = likelihood.too_long(max(len(f) for f in prep.full_ids), self.max_length)
        if prep.skipped:
            return prep
        prep.prefix_ok = [len(f) >= n_prompt and bool(torch.equal(f[:n_prompt], prompt_ids)) for f in prep.full_ids]
        scored = [f for f in prep.full_ids if len(f) > n_prompt]
        # shared prefix: common to the prompt (whose pixel values are prefilled) and every scored candidate
        prefix = min([n_prompt] + [common_prefix(prompt_ids, f) for f in scored])
        prep.prefix = prefix
        tail = torch.cat([f[prefix:] for f in scored] + [prompt_ids[prefix:]]) if scored else prompt_ids[prefix:]
        if prefix == 0:
            prep.fallback = "no shared prefix"
        elif self.mm_ids and any(int(t) in self.mm_ids for t in tail):
            prep.fallback = "image tokens after the shared prefix"
        return prep

    def _derived_ids(self, prompt: str, prompt_ids: torch.Tensor, continuations: list[str]) -> list:
        """prompt + candidate ids from one prompt encoding with images and text-only tokenisations
        (docs/ARCHITECTURE.md, "Prefix sharing")."""
        texts = self.tokenizer([prompt] + [prompt + c for c in continuations])["input_ids"]
        base, fulls = texts[0], texts[1:]
        shift = len(prompt_ids) - len(base)  # tokens added by the image-token expansion
        out = []
        for ids in fulls:
            common = common_prefix(torch.tensor(base), torch.tensor(ids))
            out.append(torch.cat([prompt_ids[: common + shift], torch.tensor(ids[common:], dtype=prompt_ids.dtype)]))
        return out

    @staticmethod
    def _exact_ids(processor, prompt: str, images: list, continuations: list[str]) -> list:
        return [likelihood.encode(processor, prompt + c, images)["input_ids"][0] for c in continuations]
