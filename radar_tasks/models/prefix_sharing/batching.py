"""Batching prepared questions: which run together (a fixed size, or `auto`: a token budget), one model input per
batch (collation), and a batch that runs out of memory split in two."""

from __future__ import annotations

import torch
from loguru import logger

from radar_tasks.models.args import parse_batch_size
from radar_tasks.models.prefix_sharing.preparation import PreparedQuestion

# `auto` batch size: token budget of one batch on CPU (on CUDA it comes from the free memory)
CPU_AUTO_TOKENS = 8192
# per-token keys of a processor encoding (right-padded in a batch); everything else is per image (concatenated)
_TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


class CannotCollate(Exception):
    """The prompts' per-image tensors do not stack into one batch (their shapes differ beyond what may be padded)."""


class Batcher:
    """Groups prepared questions into prefill batches and collates each into one model input.

    `batch_size`: questions per batch, or `auto` (`token_budget`); `max_batch_size` caps it (also set by an out of
    memory split under `auto`); `one_per_prefill`: every batch holds one question (attention kernels whose batched
    prefill with padding holes is not tested). `pad_id` pads input ids; `pad_dim1`: per-image keys zero-padded on
    dim 1 when the prompts of a batch differ there (`support.SUPPORT`).
    """

    def __init__(
        self, config, *, batch_size, max_batch_size, one_per_prefill: bool, device, dtype, pad_id: int, pad_dim1
    ):
        self.config = config
        self.batch_size = parse_batch_size(batch_size)
        self.max_batch_size = int(max_batch_size) if max_batch_size else None
        self.one_per_prefill = one_per_prefill
        self.device = device
        self.dtype = dtype
        self.pad_id = pad_id
        self.pad_dim1 = pad_dim1

    # ------------------------------------------------------------------------------------------- which together
    @staticmethod
    def cost(batch: list[PreparedQuestion]) -> int:
        """Tokens held by a batch: padded prefill + one cache row (and its continuation) per multi-token candidate."""
        p_max = max(p.prefix for p in batch)
        rows = [len(f) - 1 - p.prefix for p in batch for f in p.full_ids if p.has_row(f)]
        l_max = max(rows, default=0)
        return len(batch) * p_max + len(rows) * (p_max + l_max)

    def token_budget(self) -> int:
        """`auto`: tokens of one batch (see `cost`). CUDA: 40% of the free memory over a per-token estimate (its KV
        cache in all layers, plus one layer's transient activations); a batch that still runs out of memory is
        split in two (`split_on_oom`). CPU: `CPU_AUTO_TOKENS`."""
        if self.device.type != "cuda":
            return CPU_AUTO_TOKENS
        free, _ = torch.cuda.mem_get_info(self.device)
        text = self.config.get_text_config()
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        elem = torch.empty((), dtype=self.dtype).element_size()
        kv = 2 * text.num_hidden_layers * heads * head_dim * elem
        activations = (4 * text.hidden_size + 3 * getattr(text, "intermediate_size", 4 * text.hidden_size)) * elem
        return max(1024, int(0.4 * free / (kv + activations)))

    def batches(self, prepared: list[PreparedQuestion]):
        """The prefill batches of `prepared`, ordered by (images or not, prefix length): a batch holds prompts of
        similar length, little padding."""
        prepared = sorted(prepared, key=lambda p: (p.has_images, p.prefix, max(len(f) for f in p.full_ids)))
        cap = 1 if self.one_per_prefill else self.max_batch_size
        if self.batch_size != "auto":
            size = self.batch_size if cap is None else min(self.batch_size, cap)
            for part in self._split_collatable(prepared):
                for start in range(0, len(part), size):
                    yield part[start : start + size]
            return
        budget = self.token_budget()
        batch: list = []
        for prep in prepared:
            full = cap is not None and len(batch) >= cap
            if batch and (full or self.cost(batch + [prep]) > budget or batch[0].has_images != prep.has_images):
                yield from self._split_collatable(batch)
                batch = []
            batch.append(prep)
        if batch:
            yield from self._split_collatable(batch)

    @staticmethod
    def _split_collatable(batch: list[PreparedQuestion]):
        """Questions with and without images never share a prefill batch (simpler, and no processor mixes them)."""
        with_images = [p for p in batch if p.has_images]
        without = [p for p in batch if not p.has_images]
        for part in (without, with_images):
            if part:
                yield part

    # -------------------------------------------------------------------------------------------------- collating
    def collate(self, batch: list[PreparedQuestion]) -> dict:
        """One model input from the questions' prompt encodings cut to their shared prefix, right-padded; the
        per-image tensors already on the device. Raises `CannotCollate` where their shapes do not stack."""
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
                    raise CannotCollate(f"{key} shapes {sorted(shapes)}")
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

    # ---------------------------------------------------------------------------------------------- out of memory
    def split_on_oom(self, batch: list[PreparedQuestion], run):
        """`run(batch)`; where it runs out of CUDA memory, the two halves of the batch one after the other (and
        under `auto`, later batches capped at half its size). One question out of memory: raised."""
        try:
            return run(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(batch) // 2
            if self.batch_size == "auto":
                self.max_batch_size = max(1, half)
            logger.warning(f"prefix sharing: out of memory with {len(batch)} questions per batch; splitting")
            return self.split_on_oom(batch[:half], run) + self.split_on_oom(batch[half:], run)
