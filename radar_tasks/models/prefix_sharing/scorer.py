"""`SharedPrefixScorer`: scores many questions, wiring the package's parts (preparation, batching, the shared
forward, fallback tracking) together; `score_questions`, the one-call form."""

from __future__ import annotations

import torch

from radar_tasks.models import likelihood
from radar_tasks.models.likelihood import ContinuationScore
from radar_tasks.models.prefix_sharing import support
from radar_tasks.models.prefix_sharing.batching import Batcher, CannotCollate
from radar_tasks.models.prefix_sharing.fallbacks import FallbackTracker
from radar_tasks.models.prefix_sharing.forward import SharedForward
from radar_tasks.models.prefix_sharing.preparation import PreparedQuestion, Preparer, Question


class SharedPrefixScorer:
    """Scores many questions with shared prefixes and batching; `share_prefix=False` is the reference path.

    `score` = `prepare` per question + `score_prepared`. The parts: `preparer` (a question's encoding, candidate
    ids and shared prefix), `batching` (which questions share a prefill, collation, out-of-memory splits),
    `forward` (prefill, continuation layout, scores) and `fallbacks` (when and why questions go the per-candidate
    way; `outcome`); `stats` counts questions and forwards.
    """

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
        config = model.config
        self.model_type = getattr(config, "model_type", None)
        positions, pad_dim1 = support.SUPPORT.get(self.model_type, (None, ()))
        self.preparer = Preparer(
            processor,
            config,
            max_length=likelihood.context_length(model),
            derived_tokens=self.model_type in support.SUPPORT,  # else: the exact (processor per candidate) way
        )
        # continuation layout: `packed` (one row per question, a 4D mask) where the attention takes a custom mask,
        # else `rows` (one row per candidate on a copy of the cache); flash-attention kernels are not tested with the
        # padding holes of a batched prefill: one question per prefill batch
        attention = getattr(config, "_attn_implementation", None) or "sdpa"
        custom_mask = attention in ("sdpa", "eager")
        self.batching = Batcher(
            config,
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            one_per_prefill=not custom_mask,
            device=self.device,
            dtype=self.dtype,
            pad_id=self.preparer.pad_id,
            pad_dim1=pad_dim1,
        )
        self.stats = {"shared": 0, "per_candidate": 0, "prefill_batches": 0, "continuation_forwards": 0}
        self.fallbacks = FallbackTracker(
            share_prefix=share_prefix,
            unsupported=support.unsupported(model) if share_prefix else None,
            verify=verify,
            dtype=self.dtype,
            stats=self.stats,
        )
        self.forward = SharedForward(
            model,
            device=self.device,
            dtype=self.dtype,
            positions=positions,
            layout="packed" if custom_mask else "rows",
            pad_id=self.preparer.pad_id,
            stats=self.stats,
        )

    # what callers read or set on the scorer itself (radar_hf, the pipeline, tests)
    @property
    def share_prefix(self) -> bool:
        return self.fallbacks.share_prefix

    @share_prefix.setter
    def share_prefix(self, value: bool) -> None:
        self.fallbacks.share_prefix = value

    @property
    def reason(self) -> str | None:
        """Why sharing is off for the whole run (None: it is not, or was never asked for)."""
        return self.fallbacks.reason

    @property
    def batch_size(self):
        return self.batching.batch_size

    @property
    def max_length(self) -> int | None:
        """Positions of the model: a longer prompt (+ candidate) is not run, on both paths."""
        return self.preparer.max_length

    @max_length.setter
    def max_length(self, value: int | None) -> None:
        self.preparer.max_length = value

    def outcome(self) -> dict:
        """How the questions were scored: shared / per candidate, the run's fallback reason, per-question ones."""
        return self.fallbacks.outcome()

    # ------------------------------------------------------------------------------------------------ public API
    def prepare(self, q: Question) -> PreparedQuestion:
        """The host work of one question (`Preparer.prepare`): background workers run it (`models.pipeline`)."""
        return self.preparer.prepare(q)

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
                    self.fallbacks.question(prep.fallback)
                results[i] = self._reference(question_of(i))
                if progress:
                    progress(1)
                continue
            prep.index = i
            if not any(len(f) > prep.n_prompt for f in prep.full_ids):  # no candidate adds a token
                results[i] = [prep.empty_score(k) for k in range(len(prep.full_ids))]
                if progress:
                    progress(1)
            else:
                batchable.append(prep)

        def reference(p: PreparedQuestion) -> list[ContinuationScore]:
            return self._reference(question_of(p.index))

        for batch in self.batching.batches(batchable):
            if not self.share_prefix:  # switched off by the first batch's check (below)
                done = [(p, reference(p)) for p in batch]
            elif batch[0].has_images in self.fallbacks.verified:  # a batch holds questions of one kind (images or not)
                done = self._run_batch(batch)
            else:
                done = self.fallbacks.first_batch(batch, self._run_batch, reference)
            for prep, scores in done:
                results[prep.index] = scores
            if progress:
                progress(len(batch))
        return results

    # ------------------------------------------------------------------------------------------------- running
    def _run_batch(self, batch: list[PreparedQuestion]) -> list[tuple[PreparedQuestion, list]]:
        return self.batching.split_on_oom(batch, self._collate_and_run)

    def _collate_and_run(self, batch: list[PreparedQuestion]) -> list[tuple[PreparedQuestion, list]]:
        try:
            inputs = self.batching.collate(batch)
        except CannotCollate as err:
            if len(batch) == 1:
                raise
            self.fallbacks.not_batchable(err, len(batch))
            return [pair for p in batch for pair in self._run_batch([p])]
        return self.forward.run(batch, inputs)

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
