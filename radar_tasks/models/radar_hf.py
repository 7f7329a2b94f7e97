"""`radar_hf`: the lmms-eval wrapper that scores multiple-choice candidates by likelihood (likelihood only).

Model args: pretrained, device, dtype (float32|bfloat16|float16|auto), batch_size, trust_remote_code,
attn_implementation. The scoring itself is `radar_tasks.models.likelihood`; this module only adapts lmms-eval's
requests to it and its results back (see docs/ARCHITECTURE.md, "Prompt contract").
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from radar_tasks.models import likelihood


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _as_batch_size(value):
    # lmms-eval's CLI hands the batch size over as a string ("1", "auto", "auto:4")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


class RadarHF(lmms):
    is_simple = True  # lmms-eval runs multiple_choice only with simple models

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size=1,
        trust_remote_code=False,
        attn_implementation: str | None = None,
        max_batch_size=None,  # passed by lmms-eval's evaluator with --max_batch_size; unused for now
    ) -> None:
        super().__init__()
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            # data parallel: one full model per process; the evaluator gives each rank its own shard of docs
            device = str(self.accelerator.device)  # cuda:<local rank> (or cpu for `accelerate launch --cpu`)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
        device = device or likelihood.default_device()
        self._device = torch.device(device)
        self._dtype = likelihood.resolve_dtype(dtype, self._device)
        self.batch_size_per_gpu = _as_batch_size(batch_size)
        self.max_batch_size = max_batch_size
        self.pretrained = pretrained
        self._model, self.processor = likelihood.load_model(
            pretrained, self._device, self._dtype, _as_bool(trust_remote_code), attn_implementation or None
        )
        if self.rank == 0:
            logger.info(f"radar_hf: {pretrained} on {self._device} ({self._dtype}), world size {self.world_size}")

    @property
    def model(self):
        return self._model

    @property
    def config(self):
        return self._model.config

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self):
        return self._device

    @property
    def batch_size(self):
        return self.batch_size_per_gpu

    def _doc_and_images(self, doc_to_visual, doc_id, task, split):
        if doc_to_visual is None:
            return None, []
        doc = self.task_dict[task][split][doc_id]
        images = doc_to_visual(doc)
        return doc, list(images or [])

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        # Group the candidates of one question (same doc, same context) so that they are scored together:
        # images are loaded once per question, and the core can share the prompt between candidates.
        groups: OrderedDict = OrderedDict()
        for index, request in enumerate(requests):
            args = request.args
            context, continuation = args[0], args[1]
            visual, doc_id, task, split = args[2:6] if len(args) >= 6 else (None, None, None, None)
            groups.setdefault((task, split, doc_id, context), (visual, []))[1].append((index, continuation))

        results: list = [None] * len(requests)
        non_finite = 0
        progress = tqdm(total=len(groups), disable=self.rank != 0, desc="radar_hf questions")
        for (task, split, doc_id, context), (visual, members) in groups.items():
            doc, images = self._doc_and_images(visual, doc_id, task, split)
            # loglikelihood (not multiple_choice) tasks pass doc_to_target, a callable, as the continuation
            continuations = [c if isinstance(c, str) else c(doc) for _, c in members]
            scores = likelihood.score_continuations(
                self._model, self.processor, context, images, continuations, device=self._device, dtype=self._dtype
            )
            for (index, _), continuation, score in zip(members, continuations, scores):
                answer = (score.nll, score.is_greedy)
                non_finite += score.n_tokens > 0 and not math.isfinite(score.nll)
                self.cache_hook.add_partial("loglikelihood", (context, continuation), answer)
                # GenerationResult keeps the tuple intact through lmms-eval's output stringification
                results[index] = GenerationResult(text=answer)
            progress.update(1)
        progress.close()
        if non_finite:  # returned as is (the metric reports them), but say so once
            logger.warning(f"radar_hf: {non_finite} of {len(requests)} continuations got a non-finite loss")
        return results

    def generate_until(self, requests):
        raise NotImplementedError(
            "radar_hf is a likelihood-only wrapper (multiple_choice / loglikelihood tasks); "
            "use a generation wrapper such as qwen2_vl or llava_hf for generate_until tasks"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("radar_hf is a likelihood-only wrapper: it does not generate")
