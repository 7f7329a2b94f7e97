"""Shared-prefix likelihood scoring: run the vision tower and the prompt once per question, score every candidate.

`likelihood.score_continuations` is the reference: one forward per prompt + candidate. `SharedPrefixScorer`
computes the same numbers (within 1e-5 in float32) with one prompt encoding and one prefill per question, batched
across questions, and one continuation forward per batch on the prefill's KV cache. How it works, which
architectures it supports (`SUPPORT`) and when it falls back to the reference: docs/ARCHITECTURE.md, "Prefix
sharing".
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from loguru import logger

from radar_tasks.models import likelihood
from radar_tasks.models.args import parse_batch_size
from radar_tasks.models.likelihood import ContinuationScore, build_prompt, image_placeholder

# model_type -> (position scheme, keys zero-padded on dim 1 when prompts of one prefill batch differ there)
SUPPORT = {
    "qwen2_vl": ("mrope", ()),
    "qwen2_5_vl": ("mrope", ()),
    "llava": ("1d", ()),
    "llava_onevision": ("1d", ("pixel_values",)),  # anyres: (images, patches, 3, H, W); the model slices patches
    "internvl": ("1d", ()),
    "idefics3": ("1d", ("pixel_values", "pixel_attention_mask")),  # (batch, images, ...); all-zero images dropped
}
# per-token keys of a processor encoding (right-padded in a batch); everything else is per image (concatenated)
_TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
_MM_ID_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
# `auto` batch size: token budget of one batch on CPU (on CUDA it comes from the free memory)
CPU_AUTO_TOKENS = 8192
# the first shared question of a run is checked against the reference: max |difference| of nll and mean logit allowed
# (measured on the tiny models: <= 1e-6 in float32, <= 1.1e-3 in bfloat16)
VERIFY_TOLERANCE = {"float32": 1e-3, "half": 5e-2}


@dataclass
class Question:
    """What the scorer takes: one question's context (with `<image>` markers), images and continuations."""

    context: str
    images: list
    continuations: list[str]
    processor: object = None  # a per-question processor (e.g. protocol.ReversedBlocksProcessor); None: the model's


@dataclass
class _Tokenized:
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
    index: int = -1  # position in the list being scored (set by `score_prepared`)

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

    def pin_memory(self) -> _Tokenized:
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


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = (a[:n] != b[:n]).nonzero()
    return int(diff[0, 0]) if len(diff) else n


def _forward_params(model) -> set:
    return set(inspect.signature(type(model).forward).parameters)


class SharedPrefixScorer:
    """Scores many questions with shared prefixes and batching; `share_prefix=False` is the reference path."""

    def __init__(
        self,
        model,
        processor,
        *,
        device=None,
        dtype=None,
        batch_size=1,
        share_prefix=True,
        max_batch_size=None,
        verify=True,
    ):
        self.model = model
        self.processor = processor
        self.device = torch.device(device) if device is not None else model.device
        self.dtype = dtype if dtype is not None else model.dtype
        self.batch_size = parse_batch_size(batch_size)
        self.max_batch_size = int(max_batch_size) if max_batch_size else None
        self.tokenizer = getattr(processor, "tokenizer", processor)
        config = model.config
        self.model_type = getattr(config, "model_type", None)
        self.placeholder = image_placeholder(self.model_type, processor)
        self.mm_ids = {
            int(v) for a in _MM_ID_ATTRS for v in [getattr(config, a, None)] if isinstance(v, int) and v >= 0
        }
        self.pad_id = next(
            i
            for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0, 1, 2)
            if i is not None and i not in self.mm_ids
        )
        self.positions, self.pad_dim1 = SUPPORT.get(self.model_type, (None, ()))
        self.derived_tokens = self.model_type in SUPPORT  # else: the exact (processor per candidate) way
        self.checked_tokens = set()  # (images or not, processor class) whose derived ids were checked once
        self.stats = {"shared": 0, "per_candidate": 0, "prefill_batches": 0, "continuation_forwards": 0}
        self.fallbacks = Counter()  # per-question fallback reason -> questions (each logged once, at WARNING)
        self.max_length = likelihood.context_length(model)
        # the run's first shared question is also scored the reference way; a gap above this switches sharing off
        self.verified = set() if verify else {True, False}  # kinds of question (with / without images) checked
        half = torch.empty((), dtype=self.dtype).element_size() < 4
        self.verify_tolerance = VERIFY_TOLERANCE["half" if half else "float32"]
        self.share_prefix = bool(share_prefix)
        self.reason = None  # why sharing is off for the whole model
        if self.share_prefix:
            params = _forward_params(model)
            if self.model_type not in SUPPORT:
                self.reason = f"model_type {self.model_type!r} is not in prefix_sharing.SUPPORT"
            elif not ({"cache", "past_key_values"} & params) or "position_ids" not in params:
                self.reason = f"{type(model).__name__}.forward takes no cache / position_ids"
            elif "sliding_attention" in (getattr(config.get_text_config(), "layer_types", None) or ()):
                self.reason = "the language model has sliding-window layers"
            if self.reason:
                logger.warning(f"prefix sharing off: {self.reason}; scoring one forward per candidate")
                self.share_prefix = False
        self.logits_to_keep = "logits_to_keep" in _forward_params(model)
        # continuation layout: `packed` (one row per question, a 4D mask) where the attention takes a custom mask,
        # else `rows` (one row per candidate on a copy of the cache); flash-attention kernels are not tested with the
        # padding holes of a batched prefill: one question per prefill batch
        attention = getattr(config, "_attn_implementation", None) or "sdpa"
        self.layout = "packed" if attention in ("sdpa", "eager") else "rows"
        self.one_per_prefill = attention not in ("sdpa", "eager")

    # ------------------------------------------------------------------------------------------------ public API
    @torch.inference_mode()
    def score(self, questions: list, progress=None) -> list[list[ContinuationScore]]:
        """Per question (in the given order), one ContinuationScore per continuation. `progress(n)`: n done."""
        questions = [q if isinstance(q, Question) else Question(*q) for q in questions]
        prepared = [self.prepare(q) if self.share_prefix else None for q in questions]
        return self.score_prepared(prepared, questions.__getitem__, progress)

    @torch.inference_mode()
    def score_prepared(self, prepared: list, question_of, progress=None) -> list[list[ContinuationScore]]:
        """Score questions from `prepare`'s output (None: score that question the per-candidate way).

        `question_of(i)` gives question i itself (with its images): the per-candidate path and the run's first check
        need it; it is asked only for those questions (the pipeline reloads them then).
        """
        results: list = [None] * len(prepared)
        if not self.share_prefix:
            prepared = [None] * len(prepared)
        batchable = []
        for i, prep in enumerate(prepared):
            if prep is not None and prep.skipped is not None:
                results[i] = [likelihood.skipped_score(prep.skipped)] * prep.n_candidates
                if progress:
                    progress(1)
                continue
            if prep is None or prep.fallback is not None:
                if prep is not None:
                    self._fell_back(prep.fallback)
                results[i] = self._reference(question_of(i))
                if progress:
                    progress(1)
                continue
            prep.index = i
            if not any(len(f) > prep.n_prompt for f in prep.full_ids):  # no candidate adds a token
                results[i] = [self._empty(prep, k) for k in range(len(prep.full_ids))]
                if progress:
                    progress(1)
            else:
                batchable.append(prep)
        # ordered by (images or not, prefix length): a batch holds prompts of similar length, little padding
        batchable.sort(key=lambda p: (p.has_images, p.prefix, max(len(f) for f in p.full_ids)))
        for batch in self._batches(batchable):
            if not self.share_prefix:  # switched off by the first batch's check (below)
                done = [(p, self._reference(question_of(p.index))) for p in batch]
            elif batch[0].has_images in self.verified:  # a batch holds questions of one kind (images or not)
                done = self._run_batch(batch)
            else:
                done = self._first_batch(batch, question_of)
            for prep, scores in done:
                results[prep.index] = scores
            if progress:
                progress(len(batch))
        return results

    def _first_batch(self, batch: list[_Tokenized], question_of):
        """The run's first shared batch of questions with (without) images, checked: an error, or scores of its first
        question that differ from the reference by more than `verify_tolerance`, switch sharing off for the run."""
        try:
            done = self._run_batch(batch)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:
            self._switch_off(f"the shared forward failed ({type(err).__name__}: {err})")
            return [(p, self._reference(question_of(p.index))) for p in batch]
        # the question with the most candidates that run on the cache (single-token ones use only prefill logits)
        rows = [sum(self._has_row(p, f) for f in p.full_ids) for p, _ in done]
        j = max(range(len(done)), key=rows.__getitem__)
        prep, shared = done[j]
        reference = self._reference(question_of(prep.index))
        self.stats["per_candidate"] -= 1  # a check, not a fallback
        tol = self.verify_tolerance
        worst = max(
            [
                max(abs(a.nll - b.nll), abs(a.mean_logit - b.mean_logit))
                for a, b in zip(reference, shared)
                if a.n_tokens and math.isfinite(a.nll) and math.isfinite(a.mean_logit)
            ],
            default=0.0,
        )
        if worst > tol or any(a.n_tokens != b.n_tokens for a, b in zip(reference, shared)):
            self._switch_off(f"its scores differ from one forward per candidate by {worst:.2e} (> {tol:g})")
            return [
                (p, reference if i == j else self._reference(question_of(p.index))) for i, (p, _) in enumerate(done)
            ]
        if rows[j]:  # else the continuation forward was not exercised yet: check the next batch of this kind too
            self.verified.add(prep.has_images)
        return done

    def _switch_off(self, reason: str) -> None:
        self.reason = reason
        self.share_prefix = False
        logger.warning(f"prefix sharing off for this run: {reason}; scoring one forward per candidate")

    def _fell_back(self, reason: str) -> None:
        if not self.fallbacks[reason]:
            logger.warning(
                f"prefix sharing: {reason}: such questions are scored one forward per candidate "
                "(counted in the results JSON, radar_tasks.prefix_sharing)"
            )
        self.fallbacks[reason] += 1

    def outcome(self) -> dict:
        """How the questions were scored: shared / per candidate, the run's fallback reason, per-question ones."""
        return {
            "shared": self.stats["shared"],
            "per_candidate": self.stats["per_candidate"],
            "run_fallback": self.reason,
            "question_fallbacks": dict(self.fallbacks),
        }

    # ----------------------------------------------------------------------------------------------- reference
    def _reference(self, q: Question) -> list[ContinuationScore]:
        self.stats["per_candidate"] += 1
        return likelihood.score_continuations(
            self.model,
            q.processor or self.processor,
            q.context,
            q.images,
            q.continuations,
            device=self.device,
            dtype=self.dtype,
            max_length=self.max_length,
        )

    # ----------------------------------------------------------------------------------------------- preparing
    def prepare(self, q: Question) -> _Tokenized:
        """The host work of one question, before any forward: its prompt encoded with its images (the processor),
        the ids of every candidate, the shared prefix, or why it goes the per-candidate way (`fallback`). Needs no
        model forward and no other question: background workers run it (`models.pipeline`). The first question of
        each kind a process prepares is also tokenised the exact way (the check described in the module doc)."""
        images = [im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im for im in q.images]
        processor = q.processor or self.processor
        prompt = build_prompt(q.context, len(images), self.placeholder)
        encoding = likelihood.encode(processor, prompt, images)
        prompt_ids = encoding["input_ids"][0]
        n_prompt = len(prompt_ids)
        prep = _Tokenized(
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
                    logger.warning(
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
        prefix = min([n_prompt] + [_common_prefix(prompt_ids, f) for f in scored])
        prep.prefix = prefix
        tail = torch.cat([f[prefix:] for f in scored] + [prompt_ids[prefix:]]) if scored else prompt_ids[prefix:]
        if prefix == 0:
            prep.fallback = "no shared prefix"
        elif self.mm_ids and any(int(t) in self.mm_ids for t in tail):
            prep.fallback = "image tokens after the shared prefix"
        return prep

    def _derived_ids(self, prompt: str, prompt_ids: torch.Tensor, continuations: list[str]) -> list:
        """prompt + candidate ids from one prompt encoding with images and text-only tokenisations (see module doc)."""
        texts = self.tokenizer([prompt] + [prompt + c for c in continuations])["input_ids"]
        base, fulls = texts[0], texts[1:]
        shift = len(prompt_ids) - len(base)  # tokens added by the image-token expansion
        out = []
        for ids in fulls:
            common = _common_prefix(torch.tensor(base), torch.tensor(ids))
            out.append(torch.cat([prompt_ids[: common + shift], torch.tensor(ids[common:], dtype=prompt_ids.dtype)]))
        return out

    @staticmethod
    def _exact_ids(processor, prompt: str, images: list, continuations: list[str]) -> list:
        return [likelihood.encode(processor, prompt + c, images)["input_ids"][0] for c in continuations]

    @staticmethod
    def _has_row(p: _Tokenized, f: torch.Tensor) -> bool:
        """The candidate is scored and has ids to feed beyond the prefix (ids P .. n-2; the last one predicts
        nothing)."""
        return len(f) > p.n_prompt and len(f) - 1 - p.prefix > 0

    @staticmethod
    def _empty(prep: _Tokenized, k: int) -> ContinuationScore:
        return ContinuationScore(math.nan, False, 0, math.nan, prep.prefix_ok[k])

    # ------------------------------------------------------------------------------------------------ batching
    def _cost(self, batch: list[_Tokenized]) -> int:
        """Tokens held by a batch: padded prefill + one cache row (and its continuation) per multi-token candidate."""
        p_max = max(p.prefix for p in batch)
        rows = [len(f) - 1 - p.prefix for p in batch for f in p.full_ids if self._has_row(p, f)]
        l_max = max(rows, default=0)
        return len(batch) * p_max + len(rows) * (p_max + l_max)

    def _token_budget(self) -> int:
        """`auto`: tokens of one batch (see `_cost`). CUDA: 40% of the free memory over a per-token estimate (its KV
        cache in all layers, plus one layer's transient activations); a batch that still runs out of memory is
        split in two (`_run_batch`). CPU: `CPU_AUTO_TOKENS`."""
        if self.device.type != "cuda":
            return CPU_AUTO_TOKENS
        free, _ = torch.cuda.mem_get_info(self.device)
        text = self.model.config.get_text_config()
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        elem = torch.empty((), dtype=self.dtype).element_size()
        kv = 2 * text.num_hidden_layers * heads * head_dim * elem
        activations = (4 * text.hidden_size + 3 * getattr(text, "intermediate_size", 4 * text.hidden_size)) * elem
        return max(1024, int(0.4 * free / (kv + activations)))

    def _batches(self, prepared: list[_Tokenized]):
        cap = 1 if self.one_per_prefill else self.max_batch_size
        if self.batch_size != "auto":
            size = self.batch_size if cap is None else min(self.batch_size, cap)
            for part in self._split_collatable(prepared):
                for start in range(0, len(part), size):
                    yield part[start : start + size]
            return
        budget = self._token_budget()
        batch: list = []
        for prep in prepared:
            full = cap is not None and len(batch) >= cap
            if batch and (full or self._cost(batch + [prep]) > budget or batch[0].has_images != prep.has_images):
                yield from self._split_collatable(batch)
                batch = []
            batch.append(prep)
        if batch:
            yield from self._split_collatable(batch)

    def _split_collatable(self, batch: list[_Tokenized]):
        """Questions with and without images never share a prefill batch (simpler, and no processor mixes them)."""
        with_images = [p for p in batch if p.has_images]
        without = [p for p in batch if not p.has_images]
        for part in (without, with_images):
            if part:
                yield part

    # ---------------------------------------------------------------------------------------------- collating
    def _collate(self, batch: list[_Tokenized]) -> dict:
        """One model input from the questions' prompt encodings cut to their shared prefix, right-padded."""
        p_max = max(p.prefix for p in batch)
        out = {}
        keys = {k for p in batch for k in p.encoding if torch.is_tensor(p.encoding[k])}
        for key in sorted(keys):
            if key in _TEXT_KEYS:
                fill = self.pad_id if key == "input_ids" else 0
                rows = []
                for p in batch:
                    value = p.encoding.get(key)
                    value = value[0, : p.prefix] if value is not None else torch.zeros(p.prefix, dtype=torch.long)
                    rows.append(torch.cat([value, value.new_full((p_max - p.prefix,), fill)]))
                out[key] = torch.stack(rows)
                continue
            # per image (pixel values): moved one question at a time, so that pinned ones copy asynchronously
            values = [p.encoding[key].to(self.device, non_blocking=True) for p in batch if key in p.encoding]
            if len(values) == 1:
                out[key] = values[0]
                continue
            shapes = {tuple(v.shape[1:]) for v in values}
            if len(shapes) > 1:
                if key not in self.pad_dim1 or len({tuple(v.shape[2:]) for v in values}) > 1:
                    raise _CannotCollate(f"{key} shapes {sorted(shapes)}")
                n = max(v.shape[1] for v in values)
                values = [torch.cat([v, v.new_zeros((v.shape[0], n - v.shape[1], *v.shape[2:]))], 1) for v in values]
            out[key] = torch.cat(values)
        out["attention_mask"] = torch.stack(
            [
                torch.cat([torch.ones(p.prefix, dtype=torch.long), torch.zeros(p_max - p.prefix, dtype=torch.long)])
                for p in batch
            ]
        )
        return out

    # ------------------------------------------------------------------------------------------------- running
    def _run_batch(self, batch: list[_Tokenized]):
        try:
            try:
                inputs = self._collate(batch)
            except _CannotCollate as err:
                if len(batch) == 1:
                    raise
                reason = "prompts not batchable (one prefill per question)"
                if not self.fallbacks[reason]:
                    logger.warning(f"prefix sharing: prompts not batchable ({err}); one prefill per question")
                self.fallbacks[reason] += len(batch)
                return [pair for p in batch for pair in self._run_batch([p])]
            return self._forward_batch(batch, inputs)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(batch) // 2
            if self.batch_size == "auto":
                self.max_batch_size = max(1, half)
            logger.warning(f"prefix sharing: out of memory with {len(batch)} questions per batch; splitting")
            return self._run_batch(batch[:half]) + self._run_batch(batch[half:])

    def _positions(self, text_positions: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """(rows, L) text positions -> the model's position ids (M-RoPE: the prefill's rope_deltas, 3 equal rows)."""
        if self.positions == "mrope":
            return (text_positions + deltas[:, None]).unsqueeze(0).expand(3, -1, -1)
        return text_positions

    def _rows(self, fed, prefixes, prefix_mask, deltas, cache) -> dict:
        """Layout `rows`: one batch row per candidate on its own copy of the question's cache row, right-padded."""
        row_q = [qi for qi, seqs in enumerate(fed) for _ in seqs]
        seqs = [seq for q_seqs in fed for seq in q_seqs]
        l_max = max(len(seq) for seq in seqs)
        ids = torch.full((len(seqs), l_max), self.pad_id, dtype=torch.long)
        valid = torch.zeros((len(seqs), l_max), dtype=torch.bool)
        for r, seq in enumerate(seqs):
            ids[r, : len(seq)] = seq
            valid[r, : len(seq)] = True
        index = torch.tensor(row_q)
        cache.batch_select_indices(index.to(self.device))  # the question's prefix, copied once per candidate
        mask = torch.cat([prefix_mask[index], valid.long()], dim=1)
        positions = prefixes[index, None] + torch.arange(l_max)[None, :]
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": self._positions(positions, deltas[index]),
            "keep": valid,
        }

    def _packed(self, fed, prefixes, prefix_mask, deltas, cache) -> dict:
        """Layout `packed`: one batch row per question, its candidates one after the other on the question's cache
        row (no copy), each seeing the prefix and its own earlier tokens only (a 4D mask), positions restarting at P.
        """
        lengths = [sum(len(seq) for seq in seqs) for seqs in fed]
        s_max, n_q = max(lengths), len(fed)
        ids = torch.full((n_q, s_max), self.pad_id, dtype=torch.long)
        segment = torch.full((n_q, s_max), -1, dtype=torch.long)  # candidate number of each fed token; -1: padding
        offset = torch.zeros((n_q, s_max), dtype=torch.long)  # position of the token within its candidate
        for qi, seqs in enumerate(fed):
            at = 0
            for k, seq in enumerate(seqs):
                ids[qi, at : at + len(seq)] = seq
                segment[qi, at : at + len(seq)] = k
                offset[qi, at : at + len(seq)] = torch.arange(len(seq))
                at += len(seq)
        valid = segment >= 0
        order = torch.arange(s_max)
        own = (segment[:, :, None] == segment[:, None, :]) & (order[None, None, :] <= order[None, :, None])
        own &= valid[:, :, None] & valid[:, None, :]
        # every query row (padding included) sees the prefix: no all-masked row, whose NaNs would reach the values
        seen_prefix = prefix_mask.bool()[:, None, :].expand(-1, s_max, -1)
        allowed = torch.cat([seen_prefix, own], dim=2)[:, None]  # (B, 1, S, P + S)
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":
            allowed = torch.zeros(allowed.shape, dtype=self.dtype).masked_fill(~allowed, torch.finfo(self.dtype).min)
        positions = prefixes[:, None] + offset
        return {
            "input_ids": ids,
            "attention_mask": allowed,
            "position_ids": self._positions(positions, deltas),
            "keep": valid,
        }

    def _forward_batch(self, batch: list[_Tokenized], inputs: dict):
        model, device = self.model, self.device
        n_q = len(batch)
        prefixes = torch.tensor([p.prefix for p in batch])
        prefix_mask = inputs["attention_mask"]
        # ---- prefill: vision tower + prompt, once per question; only each prompt's last position reaches the LM head
        last_pos = (prefixes - 1)[:, None]  # (B, 1): 2D integer logits_to_keep = positions per row
        kwargs = {"use_cache": True}
        if self.logits_to_keep:
            kwargs["logits_to_keep"] = last_pos.to(device)
        inner = getattr(model, "model", None)
        if self.positions == "mrope":
            inner.rope_deltas = None  # computed afresh from this prefill (stale deltas of another batch otherwise)
        out = model(**likelihood.to_device(inputs, device, self.dtype), **kwargs)
        self.stats["prefill_batches"] += 1
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        logits = out.logits
        if not self.logits_to_keep:
            logits = torch.take_along_dim(logits, last_pos.to(logits.device)[..., None], dim=1)
        table = [logits[:, 0]]  # (B, V); then the continuation logits: one row of the table per fed token
        deltas = torch.zeros(n_q, dtype=torch.long)
        if self.positions == "mrope" and getattr(inner, "rope_deltas", None) is not None:
            deltas = inner.rope_deltas.reshape(-1).to("cpu", torch.long)
        del out, logits
        # ---- continuation: the ids each candidate feeds beyond the prefix (P .. n-2), per question in candidate order
        fed = [[f[p.prefix : len(f) - 1] for f in p.full_ids if self._has_row(p, f)] for p in batch]
        if any(fed):
            if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", ())):
                raise RuntimeError("prefix sharing: sliding-window cache layers are not supported")
            if self.layout == "packed":
                inputs = self._packed(fed, prefixes, prefix_mask, deltas, cache)
            else:
                inputs = self._rows(fed, prefixes, prefix_mask, deltas, cache)
            keep = inputs.pop("keep")  # the LM head sees the fed tokens only, not the padding: (fed tokens, V)
            if self.logits_to_keep:
                inputs["logits_to_keep"] = keep.to(device)
            cont = model(**{k: v.to(device) for k, v in inputs.items()}, cache=cache, use_cache=True)
            self.stats["continuation_forwards"] += 1
            table.append(cont.logits if self.logits_to_keep else cont.logits[keep.to(cont.logits.device)])
            del cont
        del cache
        table = torch.cat(table) if len(table) > 1 else table[0]
        # ---- scores: per candidate, the table rows that predict its scored tokens f[t] (from position t - 1)
        results = []
        start = n_q  # table row of the current continuation row's first fed token
        for qi, p in enumerate(batch):
            scores = []
            for k, f in enumerate(p.full_ids):
                n = len(f)
                if n <= p.n_prompt:
                    scores.append(self._empty(p, k))
                    continue
                where = [qi if t - 1 == p.prefix - 1 else start + t - 1 - p.prefix for t in range(p.n_prompt, n)]
                if self._has_row(p, f):
                    start += n - 1 - p.prefix
                preds = table[torch.tensor(where, device=table.device)].unsqueeze(0)
                labels = f[p.n_prompt :].unsqueeze(0).to(table.device)
                nll, greedy, n_tok, mean_logit = likelihood.token_scores(preds, labels)[0]
                scores.append(ContinuationScore(nll, greedy, n_tok, mean_logit, p.prefix_ok[k]))
            self.stats["shared"] += 1
            results.append((p, scores))
        return results


class _CannotCollate(Exception):
    pass


def score_questions(
    model, processor, questions: list, *, device=None, dtype=None, batch_size=1, share_prefix=True, progress=None
) -> list[list[ContinuationScore]]:
    """Score many questions at once: `[[ContinuationScore per continuation] per question]`.

    `questions`: `Question`s or `(context, images, continuations)` tuples. Same numbers as calling
    `likelihood.score_continuations` on each question (the reference, also used with `share_prefix=False`).
    """
    scorer = SharedPrefixScorer(
        model, processor, device=device, dtype=dtype, batch_size=batch_size, share_prefix=share_prefix
    )
    return scorer.score(questions, progress=progress)
