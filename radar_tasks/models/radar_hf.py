"""`radar_hf`: the lmms-eval wrapper that scores multiple-choice candidates by likelihood (likelihood only).

This module is the lmms-eval glue only: how the wrapper is built from lmms-eval's model args, how it reads
requests (grouped per question, the doc fetched from `task_dict`) and what it returns (docs/ARCHITECTURE.md,
"Prompt contract"). Its model args are declared once, in `radar_tasks.models.args.ModelArgs`; what it scores with
is `loading.LoadedModel` (the settings in effect: the protocol preset applied, `protocol.resolve_settings`); each
question is made by `questions.QuestionMaker` and scored by `prefix_sharing` through `pipeline`; the results JSON
entry is `run_metadata.results_entry`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import weakref
from collections import OrderedDict

from accelerate import Accelerator
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from radar_tasks import prompts
from radar_tasks.metrics.items import CandidateResult
from radar_tasks.models import once, prefix_sharing, protocol
from radar_tasks.models.args import ModelArgs, check_model_args, keyword_signature
from radar_tasks.models.loading import LoadedModel
from radar_tasks.models.pipeline import QuestionPipeline, resolve_num_workers
from radar_tasks.models.questions import QuestionMaker
from radar_tasks.models.run_metadata import gathered, results_entry

_latest = None  # weak reference to the last RadarHF built (the results JSON metadata of its run)


def latest_instance():
    """The last `RadarHF` built in this process, or None."""
    return _latest() if _latest is not None else None


class RadarHF(lmms):
    is_simple = True  # lmms-eval runs multiple_choice only with simple models
    progress_bar = True  # radar_hf's bar over the questions (rank 0)
    log_level = "INFO"  # of its lines on the model and on each call's scoring
    # questions prepared by earlier calls (`pipeline.PreparedCache`): the in-loop evaluator keeps one per model
    prepared_cache = None

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

    def __init__(self, *, loaded: LoadedModel | None = None, **model_args) -> None:
        """`model_args`: radar_hf's model args as keywords (`models.args.ModelArgs`, checked there); or `loaded`, a
        model already in memory with its settings (`from_model`)."""
        if loaded is not None and model_args:
            raise TypeError("radar_hf: give the model args or a loaded model, not both")
        super().__init__()
        global _latest
        _latest = weakref.ref(self)
        self.accelerator = Accelerator()
        device = None
        if self.accelerator.num_processes > 1:
            # data parallel: one full model per process; the evaluator gives each rank its own shard of docs
            device = str(self.accelerator.device)  # cuda:<local rank> (or cpu for `accelerate launch --cpu`)
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
        self.loaded = LoadedModel.load(ModelArgs.of(model_args), device) if loaded is None else loaded
        self.questions = QuestionMaker(self.loaded)
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
        self.num_workers = resolve_num_workers(self.settings.num_workers, local_processes, device_type=self.device.type)
        self.pipeline_stats: dict = {}  # host preparation timings summed over loglikelihood calls (pipeline)
        self._sharing = None  # prefix-sharing outcome of all ranks (loglikelihood)
        self.not_scored = 0  # questions left unscored by the wrapper (too long, control tokens in their text)
        if self.rank == 0:
            logger.log(
                self.log_level,
                f"radar_hf: {self.settings.pretrained} on {self.device} ({self.loaded.dtype}), "
                f"world size {self.world_size}, prompt_style {self.settings.prompt_style}, "
                f"score {self.settings.score}, num_workers {self.num_workers}, "
                f"image processor {type(getattr(self.processor, 'image_processor', None)).__name__}",
            )

    # help() and inspect show the model args as keywords: the declaration's (models.args.ModelArgs)
    __init__.__signature__ = keyword_signature(
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("loaded", inspect.Parameter.KEYWORD_ONLY, default=None),
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
        # the model's name labels the run (no checkpoint to find); its dtype is given, so no preset changes it
        given = ModelArgs.of({**model_args, "dtype": dtype}, pretrained=name)
        return cls(loaded=LoadedModel.in_memory(model, processor, given))

    @property
    def settings(self) -> ModelArgs:
        """The model args in effect: as given, the protocol preset applied, the prompt style resolved."""
        return self.loaded.settings

    @property
    def model(self):
        return self.loaded.model

    @property
    def processor(self):
        return self.loaded.processor

    @property
    def config(self):
        return self.loaded.model.config

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self):
        return self.loaded.device

    @property
    def batch_size(self):
        return self.settings.batch_size

    def scoring_model(self):
        """What the scorer calls for every forward: the model (a subclass may coordinate the forwards of ranks)."""
        return self.model

    def finish_scoring(self) -> None:
        """Called when this rank has scored all of its questions, before the ranks gather their outcomes (a
        subclass whose forwards are collectives answers the other ranks' forwards here until all are done)."""

    @functools.cached_property
    def scorer(self) -> prefix_sharing.SharedPrefixScorer:
        """Scores batches of questions: shared prefix (default) or one forward per candidate (share_prefix=false)."""
        return prefix_sharing.SharedPrefixScorer(
            self.scoring_model(),
            self.processor,
            device=self.device,
            dtype=self.loaded.dtype,
            batch_size=self.batch_size,
            share_prefix=self.settings.share_prefix,
            max_batch_size=self.settings.max_batch_size,
        )

    def _window(self) -> int:
        """Questions prepared (images loaded and encoded) at a time; the scorer orders and batches within it."""
        size = self.scorer.batch_size
        return 64 if size == "auto" else max(16, 4 * size)

    def load_question(self, task, split, doc_id, context: str, doc_to_visual, continuations: list):
        """One lmms-eval question, from its doc to what the scorer takes: `(Question, (scored, continuations,
        prompt, skipped, place, texts))`; the Question is None for an item that is not scored at all (`skipped` says
        why). `texts`: the continuations as scored (the prompt style's joiner and the candidate), of the scored ones.

        The function background workers run (`models.pipeline`): the doc from lmms-eval's `task_dict`, then the
        question (`questions.QuestionMaker`). `continuations` may hold callables (doc_to_target of loglikelihood
        tasks)."""
        doc = None if doc_to_visual is None else self.task_dict[task][split][doc_id]
        continuations = [c if isinstance(c, str) else c(doc) for c in continuations]
        place = (
            f"{doc['source_file']}: item {doc.get('id')!r}"
            if isinstance(doc, dict) and doc.get("source_file")
            else None
        )
        question, scored, skipped = self.questions.make(doc, context, doc_to_visual, continuations)
        prompt = question.context if question is not None else None
        texts = list(question.continuations) if question is not None else None
        return question, (scored, continuations, prompt, skipped, place, texts)

    def question_key(self, task, split, doc_id, context: str, doc_to_visual, continuations: list):
        """What a prepared question is kept under across calls (`prepared_cache`): its task and doc, its prompt and
        candidates, and the record's files (json source, image paths and stamps); None for a question not kept (not
        one of our M3-Bench records, or a candidate given as a function)."""
        if doc_to_visual is None or not all(isinstance(c, str) for c in continuations):
            return None
        doc = self.task_dict[task][split][doc_id]
        if not isinstance(doc, dict) or "image_stamps" not in doc:
            return None
        files = (doc.get("id"), doc.get("source_file"), tuple(doc["images"]), tuple(doc["image_stamps"]))
        return (task, split, doc_id, context, tuple(continuations), files)

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

        def key(i: int):
            (task, split, doc_id, context), (visual, members) = items[i]
            return self.question_key(task, split, doc_id, context, visual, [c for _, c in members])

        results: list = [None] * len(requests)
        non_finite = 0
        pipeline = QuestionPipeline(
            self.scorer,
            load,
            len(items),
            num_workers=self.num_workers,
            window=self._window(),
            pin_memory=self.device.type == "cuda",
            cache=self.prepared_cache,
            key=key if self.prepared_cache is not None else None,
        )
        # closing: an error here, in this loop, ends the workers at once too
        with (
            tqdm(
                total=len(items), disable=self.rank != 0 or not self.progress_bar, desc="radar_hf", unit="question"
            ) as progress,
            contextlib.closing(pipeline.scored(progress=progress.update)) as scored_questions,
        ):
            for i, (scored, continuations, prompt, skipped, place, texts), scores in scored_questions:
                (task, _, doc_id, context), (_, members) = items[i]
                if scores is None:  # not scored at all (`load_question` says why)
                    progress.update(1)
                else:
                    skipped = next((s.skipped for s in scores if s.skipped), None)
                if skipped:
                    self._log_not_scored(place or f"task {task} doc {doc_id}", skipped)
                answers = (
                    [(math.nan, False)] * len(members)
                    if skipped
                    else protocol.answers(scored, scores, self.settings.score)
                )
                # what is returned, under either score sign
                non_finite += 0 if skipped else sum(not math.isfinite(loss) for loss, _ in answers)
                kept = scored or (True,) * len(members)
                sums = [(None, None)] * len(members) if skipped else protocol.nll_sums(kept, scores, texts)
                for (index, _), continuation, answer, keep, (nll_sum, n_bytes) in zip(
                    members, continuations, answers, kept, sums
                ):
                    self.cache_hook.add_partial("loglikelihood", (context, continuation), answer)
                    # GenerationResult keeps the tuple intact through lmms-eval's output stringification; the
                    # tuple carries what the per-item record shows (metrics/items.py)
                    candidate = prompts.strip_delimiter(continuation) if isinstance(continuation, str) else None
                    results[index] = GenerationResult(
                        text=CandidateResult(
                            answer, candidate, prompt or context, skipped, not keep, nll_sum=nll_sum, n_bytes=n_bytes
                        )
                    )
        self.finish_scoring()
        for key, value in pipeline.stats.items():
            self.pipeline_stats[key] = value if key == "workers" else self.pipeline_stats.get(key, 0) + value
        self._sharing = gathered(self._outcome(), self.world_size)
        timing = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in pipeline.stats.items())
        logger.log(
            self.log_level,
            f"radar_hf rank {self.rank}/{self.world_size}: questions scored {self.scorer.stats}; "
            f"host preparation {timing}",
        )
        if non_finite:  # returned as is (the metric reports them), but say so once
            once.warning(
                f"radar_hf: {non_finite} of {len(requests)} continuations got a non-finite {self.settings.score} score"
            )
        return results

    def _outcome(self) -> dict:
        return {**self.scorer.outcome(), "not_scored": self.not_scored}

    def _log_not_scored(self, place: str, reason: str) -> None:
        self.not_scored += 1
        once.warning(f"radar_hf: {place}: not scored, counted as skipped: {reason}")

    def run_metadata(self) -> dict:
        """What the results JSON records of this wrapper's run (under `radar_tasks.model`)."""
        return results_entry(self.loaded, world_size=self.world_size, sharing=self._sharing or self._outcome())

    def generate_until(self, requests):
        raise NotImplementedError(
            "radar_hf is a likelihood-only wrapper (multiple_choice / loglikelihood tasks); "
            "use a generation wrapper such as qwen2_vl or llava_hf for generate_until tasks"
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("radar_hf is a likelihood-only wrapper: it does not generate")
