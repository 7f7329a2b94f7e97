"""Text a model would not read as text: its special tokens, and the items whose text holds one (not scored).

No lmms-eval here.
"""

from __future__ import annotations

from radar_tasks import prompts


def of_processor(processor) -> tuple[str, ...]:
    """The tokenizer's special tokens (and the processor's image / video tokens): text holding one would be read
    as that token, not as text."""
    tok = getattr(processor, "tokenizer", processor)
    found = set(getattr(tok, "all_special_tokens", None) or ())
    found |= {
        t.content for t in (getattr(tok, "added_tokens_decoder", None) or {}).values() if getattr(t, "special", False)
    }
    found |= {getattr(processor, a, None) for a in ("image_token", "video_token")} - {None}
    return tuple(sorted(t for t in found if isinstance(t, str) and len(t) > 1))


def text_problem(doc, continuations: list, tokens: tuple[str, ...]) -> str | None:
    """Why an item cannot be scored as the text it is: its question, options or candidates hold one of the model's
    special `tokens` (M3-Bench records; other tasks' contexts hold their own markers on purpose)."""
    texts = [c for c in continuations if isinstance(c, str)]
    if prompts.is_m3bench_record(doc):
        texts += [doc["question"], doc.get("options_text") or ""]
    token = next((t for t in tokens for text in texts if t in text), None)
    if token is None:
        return None
    return f"its text holds {token!r}, a special token of this model, which would not be read as text"
