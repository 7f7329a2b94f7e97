"""Shared-prefix likelihood scoring: run the vision tower and the prompt once per question, score every candidate.

`likelihood.score_continuations` is the reference: one forward per prompt + candidate. `SharedPrefixScorer`
computes the same numbers (within 1e-5 in float32) with one prompt encoding and one prefill per question, batched
across questions, and one continuation forward per batch on the prefill's KV cache. How it works, which
architectures it supports (`SUPPORT`) and when it falls back to the reference: docs/ARCHITECTURE.md, "Prefix
sharing".

One job per module:
* `support`: which model types share, their position scheme and padded keys (`SUPPORT`); run-level eligibility;
* `preparation`: `Question`; one question's encoding, candidate ids and shared prefix (`Preparer`);
* `batching`: which questions share a prefill (fixed size or a token budget), collation, out-of-memory splits;
* `layouts`: the continuation's `packed` and `rows` layouts and their position ids (M-RoPE deltas included);
* `forward`: prefill, continuation forward and per-candidate scores of one batch (`SharedForward`);
* `fallbacks`: run and question fallbacks, the first-batch check against the reference, `outcome()` counts;
* `scorer`: `SharedPrefixScorer`, which wires them together, and `score_questions`.
"""

from radar_tasks.models.prefix_sharing.preparation import PreparedQuestion, Question
from radar_tasks.models.prefix_sharing.scorer import SharedPrefixScorer, score_questions
from radar_tasks.models.prefix_sharing.support import SUPPORT

__all__ = ["SUPPORT", "PreparedQuestion", "Question", "SharedPrefixScorer", "score_questions"]
