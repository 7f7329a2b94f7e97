"""`radar_hf`: the lmms-eval wrapper that scores multiple-choice candidates by likelihood (likelihood only).

Model args: pretrained, device, dtype (float32|bfloat16|float16|auto), batch_size (questions per batch, or auto),
share_prefix (default true; false = one forward per candidate, the reference), trust_remote_code,
attn_implementation; the reference protocol's: protocol (paper), prompt_style, score, processor_kwargs,
qwen_vl_utils_resize, llava_mmmu_one_distractor, internvl_reverse_images (see `_setup_protocol`).
The scoring itself is `radar_tasks.models.likelihood`; this module only adapts lmms-eval's requests to it and its
results back (see docs/ARCHITECTURE.md, "Prompt contract"); prompt styles live in `prompt_styles`.
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

from radar_tasks.models import likelihood, prefix_sharing
from radar_tasks.models import prompt_styles as styles


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _as_batch_size(value):
    # lmms-eval's CLI hands the batch size over as a string ("1", "auto", "auto:4")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def _get(obj, key):
    value = getattr(obj, key, None)
    if value is None and hasattr(obj, "get"):
        value = obj.get(key)
    return value


def _kwarg_applied(key: str, value, holders) -> bool:
    """Whether a processor kwarg shows on the processor or its image processor (unknown kwargs are dropped
    silently by from_pretrained). Qwen2-VL turns min_pixels / max_pixels into size.shortest_edge / longest_edge."""
    aliases = {"min_pixels": ("size", "shortest_edge"), "max_pixels": ("size", "longest_edge")}
    for obj in holders:
        if obj is None:
            continue
        held = _get(obj, key)
        if isinstance(value, dict) and held is not None:
            if all(_get(held, k) == v for k, v in value.items()):
                return True
        elif held == value:
            return True
        if key in aliases and _get(_get(obj, aliases[key][0]) or {}, aliases[key][1]) == value:
            return True
    return False


class RadarHF(lmms):
    is_simple = True  # lmms-eval runs multiple_choice only with simple models

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = None,  # None: the protocol preset's, else auto
        batch_size=1,
        trust_remote_code=False,
        attn_implementation: str | None = None,
        max_batch_size=None,  # passed by lmms-eval's evaluator with --max_batch_size: caps questions per batch
        share_prefix=True,  # score all candidates of a question on one prefill (prefix_sharing); false: reference
        protocol: str | None = None,  # paper: the preset below; explicit args override it
        prompt_style: str | None = None,  # raw | auto | qwen2vl_base | llava_ov_plain | internvl | chat
        score: str | None = None,  # logprob (default) | logit (the paper)
        processor_kwargs=None,  # "key:value;key:value", a JSON object or a dict -> AutoProcessor.from_pretrained
        qwen_vl_utils_resize=None,
        llava_mmmu_one_distractor=False,
        internvl_reverse_images=False,
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
        dtype, processor_kwargs = self._setup_protocol(
            pretrained, _as_bool(trust_remote_code), protocol, prompt_style, score, dtype, processor_kwargs,
            qwen_vl_utils_resize, llava_mmmu_one_distractor, internvl_reverse_images,
        )
        self._dtype = likelihood.resolve_dtype(dtype, self._device)
        self.batch_size_per_gpu = _as_batch_size(batch_size)
        self.max_batch_size = max_batch_size
        self.share_prefix = _as_bool(share_prefix)
        self._scorer = None
        self.pretrained = pretrained
        self._model, self.processor = likelihood.load_model(
            pretrained, self._device, self._dtype, _as_bool(trust_remote_code), attn_implementation or None,
            processor_kwargs=processor_kwargs,
        )
        self._finish_protocol(processor_kwargs)
        if self.rank == 0:
            logger.info(f"radar_hf: {pretrained} on {self._device} ({self._dtype}), world size {self.world_size}, "
                        f"prompt_style {self.prompt_style}, score {self.score}")

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

    # ------------------------------------------------------------------------------- reference protocol (issue 4)
    def _setup_protocol(self, pretrained, trust_remote_code, protocol, prompt_style, score, dtype, processor_kwargs,
                        qwen_vl_utils_resize, llava_mmmu_one_distractor, internvl_reverse_images):
        """Resolve the protocol preset and the explicit args (explicit wins); returns (dtype, processor kwargs).

        `protocol=paper` = the reference script of the checkpoint's family (prompt_style auto -> qwen2vl_base |
        llava_ov_plain | internvl, by config.model_type or by an explicit family prompt_style), score=logit, the
        family's dtype and processor settings (prompt_styles.PAPER_PRESETS).
        """
        protocol = str(protocol).strip().lower() if protocol not in (None, "") else None
        if protocol is not None and protocol not in styles.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(styles.PROTOCOLS)}; got {protocol!r}")
        self.protocol = protocol
        self._style_arg = prompt_style or ("auto" if protocol else "raw")
        styles.resolve_style(self._style_arg, None)  # an unknown style fails here, before the model loads
        preset = {}
        if protocol == "paper":
            from transformers import AutoConfig

            model_type = getattr(AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code),
                                 "model_type", None)
            style = styles.resolve_style(self._style_arg, model_type)
            preset = styles.paper_preset(style)
            if style not in styles.FAMILY_STYLES:
                logger.warning(f"radar_hf: protocol=paper: no reference script for model_type {model_type!r} "
                               f"(prompt_style {style}); only score=logit is set")
        self.score = str(score or preset.get("score") or "logprob").strip().lower()
        if self.score not in styles.SCORES:
            raise ValueError(f"score must be one of {', '.join(styles.SCORES)}; got {score!r}")
        self.qwen_vl_utils_resize = (_as_bool(qwen_vl_utils_resize) if qwen_vl_utils_resize not in (None, "")
                                     else preset.get("qwen_vl_utils_resize", False))
        self.llava_mmmu_one_distractor = _as_bool(llava_mmmu_one_distractor)
        self.internvl_reverse_images = _as_bool(internvl_reverse_images)
        kwargs = styles.merge_kwargs(preset.get("processor_kwargs", {}), styles.parse_kwargs(processor_kwargs))
        return dtype or preset.get("dtype") or "auto", kwargs

    def _finish_protocol(self, processor_kwargs: dict) -> None:
        """After loading: the concrete prompt style, and a check that the processor took the kwargs."""
        self.model_type = getattr(self._model.config, "model_type", None)
        self.prompt_style = styles.resolve_style(self._style_arg, self.model_type)
        self.processor_kwargs = dict(processor_kwargs)
        if self.prompt_style == "chat" and not getattr(self.processor, "chat_template", None):
            raise ValueError(f"prompt_style=chat: the processor of {self.pretrained} has no chat template")
        if self.prompt_style == "raw" and (self.llava_mmmu_one_distractor or self.internvl_reverse_images):
            logger.warning("radar_hf: llava_mmmu_one_distractor / internvl_reverse_images act only with a "
                           "non-raw prompt_style; ignored")
        if self.protocol == "paper" and self.model_type == "llava_onevision":
            logger.warning("radar_hf: protocol=paper on a transformers LlavaOnevision model: its image tokens (anyres "
                           "tiles + newline embeddings) are not the reference's 729 flat tokens per image; convert "
                           "the projector checkpoint to LlavaForConditionalGeneration and use "
                           "prompt_style=llava_ov_plain for the exact layout")
        image_processor = getattr(self.processor, "image_processor", None)
        for key, value in processor_kwargs.items():
            if not _kwarg_applied(key, value, (self.processor, image_processor)):
                logger.warning(f"radar_hf: processor_kwargs {key}={value!r} does not show on the processor of "
                               f"{self.pretrained} (it may have been ignored)")

    def _prepare_question(self, doc, context: str, images: list, continuations: list) -> styles.PreparedQuestion:
        """Per-question hook: the prompt, images, scored strings and processor of one question, in the prompt
        style; `.answers(scores)` maps the core's scores back to one `(loss, is_greedy)` per request.

        `raw` (and any doc that is not an M3-Bench record, or a non-string continuation) keeps lmms-eval's context
        and continuations; a family/chat style rebuilds both from the doc (the candidate = continuation minus
        lmms-eval's target_delimiter " ").
        """
        if self.qwen_vl_utils_resize:
            images = [styles.qwen_vl_utils_resize(im) for im in images]
        styled = None
        if (self.prompt_style != "raw" and styles.is_m3bench_record(doc)
                and all(isinstance(c, str) for c in continuations)):
            styled = styles.build(
                doc, self.prompt_style, [styles.strip_delimiter(c) for c in continuations],
                chat_template=self._render_chat, image_placeholder=self._chat_placeholder(),
                llava_mmmu_one_distractor=self.llava_mmmu_one_distractor,
                internvl_reverse_images=self.internvl_reverse_images,
            )
        elif self.prompt_style != "raw" and not getattr(self, "_warned_raw_fallback", False):
            self._warned_raw_fallback = True
            logger.warning(f"radar_hf: prompt_style {self.prompt_style} needs M3-Bench records; this task's docs "
                           "are not: using its own prompt (raw)")
        if styled is None:
            return styles.PreparedQuestion(context, images, list(continuations), self.processor,
                                           tuple(True for _ in continuations), self.score, "raw")
        processor = styles.ReversedBlocksProcessor(self.processor) if styled.reverse_blocks else self.processor
        kept = [c for c, keep in zip(styled.continuations, styled.scored) if keep]
        return styles.PreparedQuestion(styled.context, images, kept, processor, styled.scored, self.score,
                                       styled.style)

    def _render_chat(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _chat_placeholder(self) -> str | None:
        if self.prompt_style != "chat":
            return None
        return likelihood.image_placeholder(self.model_type, self.processor)

    @property
    def scorer(self) -> prefix_sharing.SharedPrefixScorer:
        """Scores batches of questions: shared prefix (default) or one forward per candidate (share_prefix=false)."""
        if self._scorer is None:
            self._scorer = prefix_sharing.SharedPrefixScorer(
                self._model, self.processor, device=self._device, dtype=self._dtype, batch_size=self.batch_size,
                share_prefix=self.share_prefix, max_batch_size=self.max_batch_size,
            )
        return self._scorer

    def _window(self) -> int:
        """Questions prepared (images loaded and encoded) at a time; the scorer orders and batches within it."""
        size = self.scorer.batch_size
        return 64 if size == "auto" else max(16, 4 * size)

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        # Group the candidates of one question (same doc, same context): they are scored together, on one prefill
        # of the prompt and its images (prefix_sharing). lmms-eval shards by doc, so a question never spans ranks.
        groups: OrderedDict = OrderedDict()
        for index, request in enumerate(requests):
            args = request.args
            context, continuation = args[0], args[1]
            visual, doc_id, task, split = args[2:6] if len(args) >= 6 else (None, None, None, None)
            groups.setdefault((task, split, doc_id, context), (visual, []))[1].append((index, continuation))

        results: list = [None] * len(requests)
        non_finite = 0
        progress = tqdm(total=len(groups), disable=self.rank != 0, desc="radar_hf", unit="question")
        items = list(groups.items())
        window = self._window()
        for start in range(0, len(items), window):
            chunk = []
            for (task, split, doc_id, context), (visual, members) in items[start : start + window]:
                doc, images = self._doc_and_images(visual, doc_id, task, split)
                # loglikelihood (not multiple_choice) tasks pass doc_to_target, a callable, as the continuation
                continuations = [c if isinstance(c, str) else c(doc) for _, c in members]
                question = self._prepare_question(doc, context, images, continuations)
                chunk.append((context, members, continuations, question))
            all_scores = self.scorer.score(
                [prefix_sharing.Question(q.context, q.images, q.continuations, q.processor) for *_, q in chunk],
                progress=progress.update,
            )
            for (context, members, continuations, question), scores in zip(chunk, all_scores):
                non_finite += sum(s.n_tokens > 0 and not math.isfinite(s.nll) for s in scores)
                for (index, _), continuation, answer in zip(members, continuations, question.answers(scores)):
                    self.cache_hook.add_partial("loglikelihood", (context, continuation), answer)
                    # GenerationResult keeps the tuple intact through lmms-eval's output stringification
                    results[index] = GenerationResult(text=answer)
        progress.close()
        logger.info(f"radar_hf rank {self.rank}/{self.world_size}: questions scored {self.scorer.stats}")
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
