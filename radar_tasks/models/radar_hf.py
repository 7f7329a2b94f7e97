"""`radar_hf`: the lmms-eval wrapper that scores multiple-choice candidates by likelihood (likelihood only).

Model args: pretrained, device, dtype (float32|bfloat16|float16|auto), batch_size (questions per batch, or auto),
share_prefix (default true; false = one forward per candidate, the reference), trust_remote_code,
attn_implementation; the reference protocol's: protocol (paper), prompt_style, score, processor_kwargs,
qwen_vl_utils_resize, image_conversion, llava_mmmu_one_distractor, internvl_reverse_images, mmmu_two_letters
(`protocol.resolve_settings`); the table that checks them is `radar_tasks.models.args.MODEL_ARGS`.
This module only adapts lmms-eval's requests to the scorer (`prefix_sharing`, `likelihood`) and its results back
(docs/ARCHITECTURE.md, "Prompt contract"); the prompt text is `radar_tasks.prompts`, the family rules `protocol`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import weakref
from collections import OrderedDict

import torch
from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from radar_tasks import prompts
from radar_tasks.data import images as images_io
from radar_tasks.metrics.items import CandidateResult
from radar_tasks.models import likelihood, prefix_sharing
from radar_tasks.models import protocol as _protocol  # `protocol` is also a model arg
from radar_tasks.models.args import as_bool, check_model_args, parse_batch_size
from radar_tasks.models.pipeline import QuestionPipeline, resolve_num_workers

_latest = None  # weak reference to the last RadarHF built (the results JSON metadata of its run)


def latest_instance():
    """The last `RadarHF` built in this process, or None."""
    return _latest() if _latest is not None else None


_TEMPLATE_WARNED: set[str] = set()  # checkpoints already warned about a non-base Qwen2-VL chat template


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

    @staticmethod
    def kwargs_from(arg_string, additional_config: dict | None = None) -> dict:
        """The checked keyword arguments of a run: `--model_args` (a string, or a dict) and lmms-eval's own
        --batch_size / --max_batch_size / --device (`additional_config`). Raises ArgumentError (one line)."""
        from lmms_eval.utils import simple_parse_args_string

        from radar_tasks.errors import ArgumentError

        if isinstance(arg_string, dict):
            raw = dict(arg_string)
        else:
            try:
                raw = simple_parse_args_string(arg_string or "")
            except ValueError:
                raise ArgumentError(
                    f"radar_hf: --model_args {arg_string!r}: expected key=value pairs separated by commas"
                ) from None
        return check_model_args(raw, additional_config)

    @classmethod
    def create_from_arg_string(cls, arg_string, additional_config=None):
        # lmms-eval passes --batch_size (default 1) beside the model args: checked and merged, not given twice
        return cls(**cls.kwargs_from(arg_string, additional_config))

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
        protocol: str | None = None,  # paper: the family's preset (protocol.PAPER_PRESETS); explicit args win
        prompt_style: str | None = None,  # raw | auto | qwen2vl_base | llava_ov_plain | internvl | chat
        score: str | None = None,  # logprob (default) | logit (the paper)
        processor_kwargs=None,  # "key:value;key:value", a JSON object or a dict -> AutoProcessor.from_pretrained
        qwen_vl_utils_resize=None,
        image_conversion: str | None = None,  # white (default) | qwen_vl_utils | pil_convert (data.images)
        llava_mmmu_one_distractor=None,  # None: the protocol preset's (on for LLaVA under protocol=paper)
        internvl_reverse_images=None,
        mmmu_two_letters=None,
        num_workers="auto",  # background processes preparing questions (pipeline); 0: in turn, in this process
        image_processor="fast",  # fast (torchvision backend) | pil
        loaded=None,  # (model, processor) already in memory: `from_model`
    ) -> None:
        super().__init__()
        global _latest
        _latest = weakref.ref(self)
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            # data parallel: one full model per process; the evaluator gives each rank its own shard of docs
            device = str(self.accelerator.device)  # cuda:<local rank> (or cpu for `accelerate launch --cpu`)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
        device = device or likelihood.default_device()
        if loaded is not None:  # a model in memory scores where it is
            device = str(loaded[0].device)
        self._device = torch.device(device)
        settings = _protocol.resolve_settings(
            model_type=lambda: (
                getattr(loaded[0].config, "model_type", None)
                if loaded is not None
                else self._model_type_of(pretrained, as_bool(trust_remote_code))
            ),
            protocol=protocol,
            prompt_style=prompt_style,
            score=score,
            dtype=dtype,
            processor_kwargs=processor_kwargs,
            qwen_vl_utils_resize=qwen_vl_utils_resize,
            image_conversion=image_conversion,
            llava_mmmu_one_distractor=llava_mmmu_one_distractor,
            internvl_reverse_images=internvl_reverse_images,
            mmmu_two_letters=mmmu_two_letters,
        )
        for field in dataclasses.fields(settings):  # self.protocol, self.score, self.processor_kwargs, ...
            setattr(self, field.name, getattr(settings, field.name))
        self._dtype = likelihood.resolve_dtype(settings.dtype, self._device)
        self.batch_size_per_gpu = parse_batch_size(batch_size)  # lmms-eval hands it over as a string
        self.max_batch_size = max_batch_size
        self.share_prefix = as_bool(share_prefix)
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
        self.num_workers = resolve_num_workers(num_workers, local_processes)
        self.pipeline_stats: dict = {}  # host preparation timings summed over loglikelihood calls (pipeline)
        self._scorer = None
        self._sharing = None  # prefix-sharing outcome of all ranks (loglikelihood)
        self.not_scored = 0  # questions left unscored by the wrapper (too long, control tokens in their text)
        self.pretrained = pretrained
        self._model, self.processor = (
            loaded
            if loaded is not None
            else likelihood.load_model(
                pretrained,
                self._device,
                self._dtype,
                as_bool(trust_remote_code),
                attn_implementation or None,
                processor_kwargs=self.processor_kwargs,
                image_processor=image_processor,
            )
        )
        self._finish_protocol()
        if self.rank == 0:
            logger.info(
                f"radar_hf: {pretrained} on {self._device} ({self._dtype}), world size {self.world_size}, "
                f"prompt_style {self.prompt_style}, score {self.score}, num_workers {self.num_workers}, "
                f"image processor {type(getattr(self.processor, 'image_processor', None)).__name__}"
            )

    @classmethod
    def from_model(cls, model, processor, **model_args) -> RadarHF:
        """radar_hf around a model already in memory: no loading and no copy; it scores on the model's device in
        the model's dtype. `model_args`: the model args other than those of loading (pretrained, device, dtype,
        trust_remote_code, attn_implementation, image_processor: the processor in memory is used as it is)."""
        loading = {"pretrained", "device", "dtype", "trust_remote_code", "attn_implementation", "image_processor"}
        taken = sorted(loading & set(model_args))
        if taken:
            raise ValueError(f"radar_hf.from_model: {', '.join(taken)} come from the model in memory")
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        dtype = str(model.dtype).removeprefix("torch.")
        return cls(pretrained=name, dtype=dtype, loaded=(model, processor), **model_args)

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
        return doc, self._question_images(doc, doc_to_visual)

    def _question_images(self, doc, doc_to_visual) -> list:
        """The images of one question as the model gets them. The task's `doc_to_visual` gives RGB with
        transparency composited onto white; under another `image_conversion` (protocol=paper: the family script's)
        an M3-Bench record's files are read again (its paths, or an exported record's embedded files) and converted
        that way. Then the Qwen script's first resize, when set. With `_prepare_question`, the whole per-question
        preparation (no shared state)."""
        if (
            self.image_conversion != images_io.DEFAULT_CONVERSION
            and prompts.is_m3bench_record(doc)
            and not doc.get("skipped")
        ):
            images = [images_io.load_rgb(source, self.image_conversion) for source in images_io.sources(doc)]
        else:
            images = list(doc_to_visual(doc) or [])
        if self.qwen_vl_utils_resize:
            images = [_protocol.qwen_vl_utils_resize(im) for im in images]
        return images

    # ------------------------------------------------------------------------------------------- reference protocol
    @staticmethod
    def _model_type_of(pretrained: str, trust_remote_code: bool) -> str | None:
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code), "model_type", None)

    def _finish_protocol(self) -> None:
        """After loading: the concrete prompt style, and a check that the processor took the kwargs."""
        self.model_type = getattr(self._model.config, "model_type", None)
        self.prompt_style = _protocol.resolve_style(self.style_arg, self.model_type)
        if self.prompt_style == "chat" and not getattr(self.processor, "chat_template", None):
            raise ValueError(f"prompt_style=chat: the processor of {self.pretrained} has no chat template")
        if self.prompt_style == "raw" and (
            self.llava_mmmu_one_distractor or self.internvl_reverse_images or self.mmmu_two_letters
        ):
            logger.warning(
                "radar_hf: llava_mmmu_one_distractor / internvl_reverse_images / mmmu_two_letters act "
                "only with a non-raw prompt_style; ignored"
            )
        self.system_message = _protocol.internvl_system_message(self._model.config)
        if self.protocol == "paper" and self.prompt_style == "qwen2vl_base":
            problem = _protocol.qwen_template_problem(
                lambda messages: self.processor.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=False
                )
            )
            if problem and self.pretrained not in _TEMPLATE_WARNED:  # once per checkpoint (in-loop: every eval)
                _TEMPLATE_WARNED.add(self.pretrained)
                logger.warning(
                    f"radar_hf: protocol=paper: the chat template of {self.pretrained} is not a Qwen2-VL "
                    f"base template: it {problem}. The Qwen2-VL script would score that prompt; "
                    "prompt_style qwen2vl_base scores images then the question, as with the base "
                    "checkpoint"
                )
        if self.protocol == "paper" and self.model_type == "llava_onevision":
            logger.warning(
                "radar_hf: protocol=paper on a transformers LlavaOnevision model: its image tokens (anyres "
                "tiles + newline embeddings) are not the reference's 729 flat tokens per image; convert "
                "the projector checkpoint to LlavaForConditionalGeneration and use "
                "prompt_style=llava_ov_plain for the exact layout"
            )
        image_processor = getattr(self.processor, "image_processor", None)
        for key, value in self.processor_kwargs.items():
            if not _kwarg_applied(key, value, (self.processor, image_processor)):
                logger.warning(
                    f"radar_hf: processor_kwargs {key}={value!r} does not show on the processor of "
                    f"{self.pretrained} (it may have been ignored)"
                )

    def _prepare_question(self, doc, context: str, images: list, continuations: list):
        """Per-question hook: `(scored, Question)`: which candidates of the request are scored, and the prompt,
        images, scored strings and processor of the question in the prompt style.

        `raw` (and any doc that is not an M3-Bench record, or a non-string continuation) keeps lmms-eval's context
        and continuations; a family/chat style rebuilds both from the doc with `radar_tasks.prompts` (the candidate
        = continuation minus lmms-eval's target_delimiter " ").
        """
        styled = None
        if (
            self.prompt_style != "raw"
            and prompts.is_m3bench_record(doc)
            and all(isinstance(c, str) for c in continuations)
        ):
            candidates, scored = _protocol.scored_candidates(
                doc,
                [prompts.strip_delimiter(c) for c in continuations],
                two_letters=self.mmmu_two_letters,
                one_distractor=self.llava_mmmu_one_distractor,
            )
            styled = prompts.build(
                doc,
                self.prompt_style,
                candidates,
                scored=scored,
                chat_template=self._render_chat,
                image_placeholder=self._chat_placeholder(),
                system_message=self.system_message,
                reverse_blocks=self.internvl_reverse_images,
            )
        elif self.prompt_style != "raw" and not getattr(self, "_warned_raw_fallback", False):
            self._warned_raw_fallback = True
            logger.warning(
                f"radar_hf: prompt_style {self.prompt_style} needs M3-Bench records; this task's docs "
                "are not: using its own prompt (raw)"
            )
        if styled is None:
            return tuple(True for _ in continuations), prefix_sharing.Question(context, images, list(continuations))
        processor = _protocol.ReversedBlocksProcessor(self.processor) if styled.reverse_blocks else None
        kept = [c for c, keep in zip(styled.continuations, styled.scored) if keep]
        return styled.scored, prefix_sharing.Question(styled.context, images, kept, processor)

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
                self._model,
                self.processor,
                device=self._device,
                dtype=self._dtype,
                batch_size=self.batch_size,
                share_prefix=self.share_prefix,
                max_batch_size=self.max_batch_size,
            )
        return self._scorer

    def _window(self) -> int:
        """Questions prepared (images loaded and encoded) at a time; the scorer orders and batches within it."""
        size = self.scorer.batch_size
        return 64 if size == "auto" else max(16, 4 * size)

    def load_question(self, task, split, doc_id, context: str, doc_to_visual, continuations: list):
        """One lmms-eval question, from its doc to what the scorer takes: `(Question, (scored, continuations,
        prompt, skipped, place))`; the Question is None for an item that is not scored at all (`skipped` says why).

        All the per-question host work before the scorer (the doc, its images, the prompt style) is here, in one
        function: background workers run it (`models.pipeline`). `continuations` may hold callables
        (doc_to_target of loglikelihood tasks)."""
        doc, images = self._doc_and_images(doc_to_visual, doc_id, task, split)
        continuations = [c if isinstance(c, str) else c(doc) for c in continuations]
        place = (
            f"{doc['source_file']}: item {doc.get('id')!r}"
            if isinstance(doc, dict) and doc.get("source_file")
            else None
        )
        skipped = self._text_problem(doc, continuations)
        if skipped:  # None: the pipeline does not score it
            return None, (None, continuations, None, skipped, place)
        scored, question = self._prepare_question(doc, context, images, continuations)
        return question, (scored, continuations, question.context, None, place)

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        # Group the candidates of one question (same doc, same context): they are scored together, on one prefill
        # of the prompt and its images (prefix_sharing). lmms-eval shards by doc, so a question never spans ranks.
        groups: OrderedDict = OrderedDict()
        for index, request in enumerate(requests):
            args = request.args
            context, continuation = args[0], args[1]
            visual, doc_id, task, split = args[2:6] if len(args) >= 6 else (None, None, None, None)
            groups.setdefault((task, split, doc_id, context), (visual, []))[1].append((index, continuation))
        items = list(groups.items())

        def load(i: int):
            (task, split, doc_id, context), (visual, members) = items[i]
            return self.load_question(task, split, doc_id, context, visual, [c for _, c in members])

        results: list = [None] * len(requests)
        non_finite = 0
        pipeline = QuestionPipeline(
            self.scorer,
            load,
            len(items),
            num_workers=self.num_workers,
            window=self._window(),
            pin_memory=self._device.type == "cuda",
        )
        # closing: an error here, in this loop, ends the workers at once too
        with (
            tqdm(total=len(items), disable=self.rank != 0, desc="radar_hf", unit="question") as progress,
            contextlib.closing(pipeline.scored(progress=progress.update)) as scored_questions,
        ):
            for i, (scored, continuations, prompt, skipped, place), scores in scored_questions:
                (task, _, doc_id, context), (_, members) = items[i]
                if scores is None:  # not scored at all (`load_question` says why)
                    progress.update(1)
                else:
                    skipped = next((s.skipped for s in scores if s.skipped), None)
                if skipped:
                    self._log_not_scored(place or f"task {task} doc {doc_id}", skipped)
                answers = (
                    [(math.nan, False)] * len(members) if skipped else _protocol.answers(scored, scores, self.score)
                )
                # what is returned, under either score sign
                non_finite += 0 if skipped else sum(not math.isfinite(loss) for loss, _ in answers)
                kept = scored or (True,) * len(members)
                for (index, _), continuation, answer, keep in zip(members, continuations, answers, kept):
                    self.cache_hook.add_partial("loglikelihood", (context, continuation), answer)
                    # GenerationResult keeps the tuple intact through lmms-eval's output stringification; the
                    # tuple carries what the per-item record shows (metrics/items.py)
                    candidate = prompts.strip_delimiter(continuation) if isinstance(continuation, str) else None
                    results[index] = GenerationResult(
                        text=CandidateResult(answer, candidate, prompt or context, skipped, dropped=not keep)
                    )
        for key, value in pipeline.stats.items():
            self.pipeline_stats[key] = value if key == "workers" else self.pipeline_stats.get(key, 0) + value
        self._sharing = self._gather_outcome()
        timing = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in pipeline.stats.items())
        logger.info(
            f"radar_hf rank {self.rank}/{self.world_size}: questions scored {self.scorer.stats}; "
            f"host preparation {timing}"
        )
        if non_finite:  # returned as is (the metric reports them), but say so once
            logger.warning(
                f"radar_hf: {non_finite} of {len(requests)} continuations got a non-finite {self.score} score"
            )
        return results

    # ------------------------------------------------------------------------------------------- not scored
    @property
    def control_tokens(self) -> tuple[str, ...]:
        """The tokenizer's special tokens (and the processor's image / video tokens): text holding one would be
        read as that token, not as text."""
        if getattr(self, "_control_tokens", None) is None:
            tok = self.tokenizer
            found = set(getattr(tok, "all_special_tokens", None) or ())
            found |= {
                t.content
                for t in (getattr(tok, "added_tokens_decoder", None) or {}).values()
                if getattr(t, "special", False)
            }
            found |= {getattr(self.processor, a, None) for a in ("image_token", "video_token")} - {None}
            self._control_tokens = tuple(sorted(t for t in found if isinstance(t, str) and len(t) > 1))
        return self._control_tokens

    def _text_problem(self, doc, continuations: list) -> str | None:
        """Why an item cannot be scored as the text it is: its question, options or candidates hold one of this
        model's special tokens (M3-Bench records; other tasks' contexts hold their own markers on purpose)."""
        texts = [c for c in continuations if isinstance(c, str)]
        if prompts.is_m3bench_record(doc):
            texts += [doc["question"], doc.get("options_text") or ""]
        token = next((t for t in self.control_tokens for text in texts if t in text), None)
        if token is None:
            return None
        return f"its text holds {token!r}, a special token of this model, which would not be read as text"

    def _log_not_scored(self, place: str, reason: str) -> None:
        self.not_scored += 1
        logger.warning(f"radar_hf: {place}: not scored, counted as skipped: {reason}")

    # ------------------------------------------------------------------------------------------- run metadata
    def _gather_outcome(self) -> dict:
        """The prefix-sharing outcome summed over the ranks (a collective: every rank scores once per run)."""
        outcome = {**self.scorer.outcome(), "not_scored": self.not_scored}
        if self.world_size == 1:
            return outcome
        from accelerate.utils import gather_object

        total = {"shared": 0, "per_candidate": 0, "not_scored": 0, "run_fallback": None, "question_fallbacks": {}}
        for part in gather_object([outcome]):
            for key in ("shared", "per_candidate", "not_scored"):
                total[key] += part[key]
            total["run_fallback"] = total["run_fallback"] or part["run_fallback"]
            for reason, n in part["question_fallbacks"].items():
                total["question_fallbacks"][reason] = total["question_fallbacks"].get(reason, 0) + n
        return total

    def run_metadata(self) -> dict:
        """What the results JSON records of this wrapper's run (under `radar_tasks.model`)."""
        sharing = dict(self._sharing or {**self.scorer.outcome(), "not_scored": self.not_scored})
        return {
            "pretrained": self.pretrained,
            "model_type": self.model_type,
            "prompt_style": self.prompt_style,
            "score": self.score,
            "protocol": self.protocol,
            "dtype": str(self._dtype).removeprefix("torch."),
            "device": str(self._device),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "share_prefix": self.share_prefix,
            "not_scored": sharing.pop("not_scored"),
            "prefix_sharing": sharing,
        }

    def generate_until(self, requests):
        raise NotImplementedError(
            "radar_hf is a likelihood-only wrapper (multiple_choice / loglikelihood tasks); "
            "use a generation wrapper such as qwen2_vl or llava_hf for generate_until tasks"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("radar_hf is a likelihood-only wrapper: it does not generate")
