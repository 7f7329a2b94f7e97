"""The shared forwards of one collated batch: the prefill (vision tower + prompts, once per question), one
continuation forward on its KV cache (a `layouts` layout), and every candidate's scores from the logits of both.

Each step is its own method (`prefill`, `continuation`, `scores`), so that a profiler shows where the time goes.
"""

from __future__ import annotations

import torch

from radar_tasks.models import likelihood
from radar_tasks.models.likelihood import ContinuationScore
from radar_tasks.models.prefix_sharing import layouts
from radar_tasks.models.prefix_sharing.preparation import PreparedQuestion
from radar_tasks.models.prefix_sharing.support import forward_params


class SharedForward:
    """`run(batch, inputs)`: per question of the batch, one ContinuationScore per candidate.

    `positions`: the model's position scheme (`mrope` or `1d`, `support.SUPPORT`); `layout`: `packed` or `rows`
    (`layouts`); `stats`: the scorer's counters (`shared`, `prefill_batches`, `continuation_forwards` counted here).
    """

    def __init__(self, model, *, device, dtype, positions: str | None, layout: str, pad_id: int, stats: dict):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.positions = positions
        self.layout = layout
        self.pad_id = pad_id
        self.stats = stats
        self.logits_to_keep = "logits_to_keep" in forward_params(model)

    def run(self, batch: list[PreparedQuestion], inputs: dict) -> list[tuple[PreparedQuestion, list]]:
        prefixes = torch.tensor([p.prefix for p in batch])
        prefix_mask = inputs["attention_mask"]
        cache, last_logits, deltas = self.prefill(inputs, prefixes)
        table = [last_logits]  # (B, V); then the continuation logits: one row of the table per fed token
        # the ids each candidate feeds beyond the prefix (P .. n-2), per question in candidate order
        fed = [[f[p.prefix : len(f) - 1] for f in p.full_ids if p.has_row(f)] for p in batch]
        if any(fed):
            table.append(self.continuation(fed, prefixes, prefix_mask, deltas, cache))
        del cache
        table = torch.cat(table) if len(table) > 1 else table[0]
        return self.scores(batch, table)

    def prefill(self, inputs: dict, prefixes: torch.Tensor):
        """Vision tower + prompt, once per question, with `use_cache=True`; only each prompt's last position
        reaches the LM head. -> (KV cache, (B, V) logits of the last prompt positions, (B,) M-RoPE deltas)."""
        model, device = self.model, self.device
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
        deltas = torch.zeros(len(prefixes), dtype=torch.long)
        if self.positions == "mrope" and getattr(inner, "rope_deltas", None) is not None:
            deltas = inner.rope_deltas.reshape(-1).to("cpu", torch.long)
        return cache, logits[:, 0], deltas

    def continuation(self, fed, prefixes, prefix_mask, deltas, cache) -> torch.Tensor:
        """The fed tokens of every candidate in one forward on the cache: their logits, (fed tokens, V)."""
        if any(getattr(layer, "is_sliding", False) for layer in getattr(cache, "layers", ())):
            raise RuntimeError("prefix sharing: sliding-window cache layers are not supported")
        if self.layout == "packed":
            eager = getattr(self.model.config, "_attn_implementation", "sdpa") == "eager"
            inputs = layouts.packed(
                fed,
                prefixes,
                prefix_mask,
                deltas,
                pad_id=self.pad_id,
                scheme=self.positions,
                additive_dtype=self.dtype if eager else None,
            )
        else:
            inputs = layouts.rows(fed, prefixes, prefix_mask, deltas, pad_id=self.pad_id, scheme=self.positions)
            cache.batch_select_indices(inputs.cache_rows.to(self.device))  # the question's prefix, once per candidate
        device = self.device
        kwargs = {}
        if self.logits_to_keep:  # the LM head sees the fed tokens only, not the padding
            kwargs["logits_to_keep"] = inputs.keep.to(device)
        cont = self.model(
            input_ids=inputs.input_ids.to(device),
            attention_mask=inputs.attention_mask.to(device),
            position_ids=inputs.position_ids.to(device),
            **kwargs,
            cache=cache,
            use_cache=True,
        )
        self.stats["continuation_forwards"] += 1
        return cont.logits if self.logits_to_keep else cont.logits[inputs.keep.to(cont.logits.device)]

    def scores(self, batch: list[PreparedQuestion], table: torch.Tensor) -> list[tuple[PreparedQuestion, list]]:
        """Per candidate, the table rows that predict its scored tokens f[t] (from position t - 1): the prefill's
        row of its question for t - 1 = P - 1, else the continuation row of its fed token t - 1."""
        results = []
        start = len(batch)  # table row of the current continuation row's first fed token
        for qi, p in enumerate(batch):
            scores = []
            for k, f in enumerate(p.full_ids):
                n = len(f)
                if n <= p.n_prompt:
                    scores.append(p.empty_score(k))
                    continue
                where = [qi if t - 1 == p.prefix - 1 else start + t - 1 - p.prefix for t in range(p.n_prompt, n)]
                if p.has_row(f):
                    start += n - 1 - p.prefix
                preds = table[torch.tensor(where, device=table.device)].unsqueeze(0)
                labels = f[p.n_prompt :].unsqueeze(0).to(table.device)
                nll, greedy, n_tok, mean_logit = likelihood.token_scores(preds, labels)[0]
                scores.append(ContinuationScore(nll, greedy, n_tok, mean_logit, p.prefix_ok[k]))
            self.stats["shared"] += 1
            results.append((p, scores))
        return results
