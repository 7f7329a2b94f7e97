"""Continuation layouts: how the candidates' tokens beyond the shared prefix are laid out for one forward on top of
the prefill's KV cache, and their position ids. Pure tensor building on the host; no model call, no cache change.

`fed[q]` holds, per question of the batch and in candidate order, the ids each multi-token candidate feeds beyond
the prefix (ids P .. n-2); `prefixes[q]` is the question's prefix length P, `prefix_mask` the prefill's (B, P_max)
attention mask, `deltas[q]` the question's M-RoPE `rope_deltas` from the prefill (zeros for 1D positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ContinuationInputs:
    input_ids: torch.Tensor  # (rows, L)
    attention_mask: torch.Tensor  # (rows, P_max + L), or a 4D mask (rows, 1, L, P_max + L)
    position_ids: torch.Tensor  # (rows, L), or (3, rows, L) for M-RoPE
    keep: torch.Tensor  # (rows, L) bool: fed tokens, not padding; only these reach the LM head
    cache_rows: torch.Tensor | None = None  # `rows`: the question (cache row) each row continues; None: one each


def position_ids(text_positions: torch.Tensor, deltas: torch.Tensor, scheme: str) -> torch.Tensor:
    """(rows, L) text positions -> the model's position ids (M-RoPE: the prefill's rope_deltas, 3 equal rows)."""
    if scheme == "mrope":
        return (text_positions + deltas[:, None]).unsqueeze(0).expand(3, -1, -1)
    return text_positions


def rows(fed, prefixes, prefix_mask, deltas, *, pad_id: int, scheme: str) -> ContinuationInputs:
    """Layout `rows`: one batch row per candidate on its own copy of the question's cache row (`cache_rows`: the
    caller copies them), right-padded. For attention kernels that take no custom mask (flash-attention)."""
    row_q = [qi for qi, seqs in enumerate(fed) for _ in seqs]
    seqs = [seq for q_seqs in fed for seq in q_seqs]
    l_max = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), l_max), pad_id, dtype=torch.long)
    valid = torch.zeros((len(seqs), l_max), dtype=torch.bool)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = seq
        valid[r, : len(seq)] = True
    index = torch.tensor(row_q)
    mask = torch.cat([prefix_mask[index], valid.long()], dim=1)
    positions = prefixes[index, None] + torch.arange(l_max)[None, :]
    return ContinuationInputs(ids, mask, position_ids(positions, deltas[index], scheme), valid, cache_rows=index)


def packed(fed, prefixes, prefix_mask, deltas, *, pad_id: int, scheme: str, additive_dtype=None) -> ContinuationInputs:
    """Layout `packed`: one batch row per question, its candidates one after the other on the question's cache
    row (no copy), each seeing the prefix and its own earlier tokens only (a 4D mask), positions restarting at P.
    For sdpa (a boolean mask) and eager attention (`additive_dtype`: the mask as 0 / the dtype's minimum)."""
    lengths = [sum(len(seq) for seq in seqs) for seqs in fed]
    s_max, n_q = max(lengths), len(fed)
    ids = torch.full((n_q, s_max), pad_id, dtype=torch.long)
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
    if additive_dtype is not None:
        allowed = torch.zeros(allowed.shape, dtype=additive_dtype).masked_fill(
            ~allowed, torch.finfo(additive_dtype).min
        )
    positions = prefixes[:, None] + offset
    return ContinuationInputs(ids, allowed, position_ids(positions, deltas, scheme), valid)
