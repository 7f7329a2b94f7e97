"""Fallback tracking: whether the run shares prefixes (and why not), which questions go the per-candidate way, the
run's first shared batch checked against the reference, and the counts `outcome()` reports (the results JSON's
`radar_tasks.model.prefix_sharing`). Every fallback is a loguru WARNING, once per reason."""

from __future__ import annotations

import math
from collections import Counter

import torch

from radar_tasks.models import once

# the first shared question of a run is checked against the reference: max |difference| of nll and mean logit allowed
# (measured on the tiny models: <= 1e-6 in float32, <= 1.1e-3 in bfloat16)
VERIFY_TOLERANCE = {"float32": 1e-3, "half": 5e-2}


class FallbackTracker:
    """The run's sharing state and its fallbacks.

    `share_prefix`: the run shares prefixes (false: asked so, `unsupported` said why not, or switched off by the
    first-batch check; `reason` then says why). `stats`: the scorer's counters (`per_candidate` corrected here for
    the check's own reference scoring). `verify=False` skips the first-batch check.
    """

    def __init__(self, *, share_prefix: bool, unsupported: str | None, verify: bool, dtype, stats: dict):
        self.stats = stats
        self.question_fallbacks = Counter()  # per-question fallback reason -> questions (each logged once)
        # the run's first shared question is also scored the reference way; a gap above this switches sharing off
        self.verified = set() if verify else {True, False}  # kinds of question (with / without images) checked
        half = torch.empty((), dtype=dtype).element_size() < 4
        self.verify_tolerance = VERIFY_TOLERANCE["half" if half else "float32"]
        self.share_prefix = bool(share_prefix)
        self.reason = None  # why sharing is off for the whole model
        if self.share_prefix and unsupported:
            self.reason = unsupported
            once.warning(f"prefix sharing off: {unsupported}; scoring one forward per candidate")
            self.share_prefix = False

    def switch_off(self, reason: str) -> None:
        """No more sharing in this run (every later question goes one forward per candidate)."""
        self.reason = reason
        self.share_prefix = False
        once.warning(f"prefix sharing off for this run: {reason}; scoring one forward per candidate")

    def question(self, reason: str) -> None:
        """One question goes the per-candidate way, for `reason`."""
        if not self.question_fallbacks[reason]:
            once.warning(
                f"prefix sharing: {reason}: such questions are scored one forward per candidate "
                "(counted in the results JSON, radar_tasks.prefix_sharing)"
            )
        self.question_fallbacks[reason] += 1

    def not_batchable(self, err: Exception, n_questions: int) -> None:
        """A batch whose prompts do not collate runs one prefill per question."""
        reason = "prompts not batchable (one prefill per question)"
        if not self.question_fallbacks[reason]:
            once.warning(f"prefix sharing: prompts not batchable ({err}); one prefill per question")
        self.question_fallbacks[reason] += n_questions

    def first_batch(self, batch: list, run_batch, reference):
        """The run's first shared batch of questions with (without) images, checked: an error, or scores of its first
        question that differ from the reference by more than `verify_tolerance`, switch sharing off for the run.

        `run_batch(batch)`: the shared scores, `[(question, scores)]`; `reference(question)`: one question's scores
        the per-candidate way (counted as such).
        """
        try:
            done = run_batch(batch)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:
            self.switch_off(f"the shared forward failed ({type(err).__name__}: {err})")
            return [(p, reference(p)) for p in batch]
        # the question with the most candidates that run on the cache (single-token ones use only prefill logits)
        rows = [sum(p.has_row(f) for f in p.full_ids) for p, _ in done]
        j = max(range(len(done)), key=rows.__getitem__)
        prep, shared = done[j]
        expected = reference(prep)
        self.stats["per_candidate"] -= 1  # a check, not a fallback
        tol = self.verify_tolerance
        worst = max(
            [
                max(abs(a.nll - b.nll), abs(a.mean_logit - b.mean_logit))
                for a, b in zip(expected, shared)
                if a.n_tokens and math.isfinite(a.nll) and math.isfinite(a.mean_logit)
            ],
            default=0.0,
        )
        if worst > tol or any(a.n_tokens != b.n_tokens for a, b in zip(expected, shared)):
            self.switch_off(f"its scores differ from one forward per candidate by {worst:.2e} (> {tol:g})")
            return [(p, expected if i == j else reference(p)) for i, (p, _) in enumerate(done)]
        if rows[j]:  # else the continuation forward was not exercised yet: check the next batch of this kind too
            self.verified.add(prep.has_images)
        return done

    def outcome(self) -> dict:
        """How the questions were scored: shared / per candidate, the run's fallback reason, per-question ones."""
        return {
            "shared": self.stats["shared"],
            "per_candidate": self.stats["per_candidate"],
            "run_fallback": self.reason,
            "question_fallbacks": dict(self.question_fallbacks),
        }
