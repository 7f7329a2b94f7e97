"""RADAR scores of a model in memory, inside a training loop: `evaluate(model, processor, tasks)` and `RadarCallback`.

`evaluate` runs lmms-eval's `simple_evaluate` (the numbers of the CLI, with its seeds) on `radar_hf` built around
the live model (`RadarHF.from_model`: no save, no reload, no second copy of the weights). Around the call it puts
the model in eval mode and restores afterwards its train/eval mode, the grad mode and the random states of
python, numpy and torch (lmms-eval seeds them all: a training run must not be reseeded by its evaluations).

Called again and again in one process, it redoes only what depends on the weights. Kept from the first call: the
task objects and their docs (`plugin.reusing_tasks`, keyed on the data fingerprint: a changed file rebuilds them),
the validated records (`m3bench.load_category`: each category read and validated once per process), the pre-flight
check of the same files (`preflight`), and each question's preparation: its prompt, images through the processor
and candidate ids (`pipeline.PreparedCache`, per model, processor and settings, within `keep_prepared_mb`).
It is quiet: lmms-eval's progress bars and INFO lines only with `verbose=True`, each warning once per process
(`models.once`), and one INFO line of its own (headline scores and the call's time). The returned dict's `cost`
says what the call took: wall time and the model's forward time.

Under `torch.distributed` every rank calls it: lmms-eval gives each rank its share of the questions (it pads the
requests of the shorter ranks), rank 0 gathers and aggregates, and the result is broadcast, so every rank returns
the same dict. Every rank runs its forwards in lockstep with the others (`models.lockstep`: the same structure,
vision tower or not, in the same order; dummies where a rank has nothing of that structure), so a model whose
forwards are collectives (FSDP2 `fully_shard`, DeepSpeed ZeRO-3) scores with its parameters sharded, one unit
gathered at a time as in training. `gather_parameters=True` instead gathers FSDP2 parameters once for the scoring
(`_unsharded`: the memory of the full parameters on every rank). A DistributedDataParallel wrapper is taken off
(its forward only adds buffer broadcasts; its module scores alone).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
import weakref
from collections.abc import Sequence

from radar_tasks.models import likelihood, lockstep, once
from radar_tasks.models.pipeline import PreparedCache
from radar_tasks.models.prefix_sharing.support import forward_params
from radar_tasks.models.radar_hf import RadarHF
from radar_tasks.results import Results

KEEP_PREPARED_MB = 1024  # default bound of the prepared questions kept per process (`evaluate`)


def _distributed():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


class _ForwardTimer:
    """Forwards of a module and the seconds spent in them (top-level calls; on CUDA, up to the end of their
    kernels)."""

    def __init__(self, module):
        import torch

        self.seconds, self.count, self._depth, self._start = 0.0, 0, 0, 0.0
        self._cuda = any(p.is_cuda for p in module.parameters()) and torch.cuda.is_available()
        self.handles = [
            module.register_forward_pre_hook(self._enter),
            module.register_forward_hook(self._leave),
        ]

    def _enter(self, *_):
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def _leave(self, *_):
        self._depth -= 1
        if self._depth == 0:
            if self._cuda:
                import torch

                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self._start
            self.count += 1

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextlib.contextmanager
def _unsharded(module):
    """FSDP2 (`fully_shard`) modules hold their full parameters inside (one all-gather per module, on every rank at
    the same point), so that the forwards of scoring need no collective. Their reshard-after-forward settings are
    restored and the parameters resharded after. Costs the memory of the full parameters on every rank while
    scoring (`evaluate(..., gather_parameters=True)`; the default keeps them sharded: `models.lockstep`)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        FSDPModule = ()
    sharded = [m for m in module.modules() if isinstance(m, FSDPModule)] if FSDPModule else []
    if not sharded:
        yield
        return
    saved = []
    for m in sharded:
        state = m._get_fsdp_state()
        saved.append(
            (state, state._auto_reshard_after_forward, [g.post_forward_mesh_info for g in state._fsdp_param_groups])
        )
        m.unshard()
    sharded[0].set_reshard_after_forward(False)
    try:
        yield
    finally:
        for state, auto, infos in saved:
            state._auto_reshard_after_forward = auto
            for group, info in zip(state._fsdp_param_groups, infos):
                group.post_forward_mesh_info = info
        for m in sharded:
            m.reshard()


class InLoopRadarHF(RadarHF):
    """`radar_hf` on a model in memory, inside a training loop: its forwards timed (`forward_s`, `forwards`);
    under torch.distributed in lockstep with the other ranks (`lockstep`; `gather_parameters`: FSDP2 parameters
    gathered for the scoring instead); quiet (no progress bar, its lines at DEBUG); and it leaves the model and
    the process's memory alone after scoring (lmms-eval's `clean` would run the garbage collector, which costs a
    second in a large training process, to free nothing of ours)."""

    progress_bar = False
    log_level = "DEBUG"
    gather_parameters = False
    lockstep = None
    forward_s = 0.0
    forwards = 0

    def scoring_model(self):
        dist = _distributed()
        if dist is None:
            return self.model
        self.lockstep = lockstep.Lockstep(self.model, dist, self._dummy_inputs)
        return self.lockstep.proxy()

    def _dummy_inputs(self, vision: bool) -> dict:
        return lockstep.dummy_inputs(
            self.processor,
            likelihood.image_placeholder(self.loaded.model_type, self.processor),
            self.scorer.preparer.pad_id,
            vision=vision,
            device=self.device,
            dtype=self.loaded.dtype,
            logits_to_keep="logits_to_keep" in forward_params(self.model),
        )

    def finish_scoring(self) -> None:
        if self.lockstep is not None:
            self.lockstep.finish()

    def loglikelihood(self, requests):
        timer = _ForwardTimer(self.model)
        try:
            with _unsharded(self.model) if self.gather_parameters else contextlib.nullcontext():
                results = super().loglikelihood(requests)
        finally:
            timer.remove()
        self.forward_s, self.forwards = timer.seconds, timer.count
        return results

    def clean(self) -> None:
        pass


class _VerboseInLoopRadarHF(InLoopRadarHF):
    """`evaluate(..., verbose=True)`: radar_hf's progress bar and INFO lines as on the CLI."""

    progress_bar = True
    log_level = "INFO"


@contextlib.contextmanager
def _preserved(module):
    """Eval mode inside; the train/eval mode, grad mode and python / numpy / torch random states restored after."""
    import numpy as np
    import torch

    training, grad = module.training, torch.is_grad_enabled()
    states = (
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    )
    module.eval()
    try:
        yield
    finally:
        module.train(training)
        torch.set_grad_enabled(grad)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


@contextlib.contextmanager
def _log_lines(verbose: bool):
    """Quiet (default): lmms-eval's log records are off inside (its INFO lines: one per task and step); ours stay
    on (each warning once per process). Verbose: INFO lines of both on stderr too (warnings go where they always
    go, the sinks already there)."""
    from loguru import logger

    if not verbose:
        logger.disable("lmms_eval")
        try:
            yield
        finally:
            logger.enable("lmms_eval")
        return
    sink = logger.add(sys.stderr, level="INFO", filter=lambda record: record["level"].no < 30)
    try:
        yield
    finally:
        logger.remove(sink)


# the prepared questions kept across calls: (model (weak), processor, settings, cache) of the latest call
_prepared: tuple | None = None


def _prepared_cache(module, processor, settings, max_mb: float) -> PreparedCache | None:
    """The prepared questions of `module` with `processor` and `settings` kept by earlier calls (a new, empty cache
    for another model, processor or settings: preparation depends on them, never on the weights)."""
    global _prepared
    if not max_mb:
        _prepared = None
        return None
    budget = int(max_mb * 2**20)
    if _prepared is not None:
        model_ref, kept_processor, kept_settings, cache = _prepared
        if model_ref() is module and kept_processor is processor and kept_settings == settings:
            cache.max_bytes = budget
            return cache
    _prepared = (weakref.ref(module), processor, settings, PreparedCache(budget))
    return _prepared[3]


def scores_of(results: dict) -> dict[str, dict]:
    """`{task: {metric: value}}` of every leaf and group of an lmms-eval results dict (`"sds,none"` -> `"sds"`,
    lmms-eval's "N/A" -> None), with the per-item records under `samples` when the results carry them."""
    read = Results(results)
    scores = read.scores()
    for task, records in read.samples().items():
        if task in scores:
            scores[task]["samples"] = records
    return scores


def headline(names: list[str], scores: dict, cost: dict) -> str:
    """The one line a call logs: the requested tasks' SDS and accuracy, the call's time and its forwards'."""
    parts = []
    for name in names:
        row = scores.get(name) or {}
        values = " ".join(f"{m} {row[m]:.4f}" for m in ("sds", "acc") if isinstance(row.get(m), (int, float)))
        parts.append(f"{name} {values}".rstrip())
    return f"radar_tasks.evaluate: {'; '.join(parts)} ({cost['time_s']:.1f} s, forwards {cost['forward_s']:.1f} s)"


def evaluate(
    model,
    processor,
    tasks: str | Sequence[str],
    *,
    batch_size=1,
    limit: float | None = None,
    log_samples: bool = False,
    data_dir: str | os.PathLike | None = None,
    verbose: bool = False,
    gather_parameters: bool = False,
    keep_prepared_mb: float = KEEP_PREPARED_MB,
    **radar_hf_args,
) -> dict:
    """RADAR scores of `model` (a `PreTrainedModel` in memory, on its device, in its dtype) on `tasks`.

    Returns `{task: {"sds", "sds_stderr", "acc", "acc_stderr", "bpb", "bpb_stderr", "brier", "brier_stderr",
    "items", "skipped", "sds_perception", ...}}` for
    every leaf and group task, the numbers `lmms-eval --model radar_hf` writes for the same weights; with
    `log_samples`, each leaf also has `samples` (its per-item records). Also `"cost"`: `time_s` (the call's wall
    time), `forward_s` (time in the model's forwards, lockstep dummies included), `forwards` (the scoring's own)
    and `dummy_forwards` (lockstep dummies), each the largest over the ranks.

    `data_dir`: the M3-Bench folder (default $RADAR_M3BENCH_DIR). `verbose`: lmms-eval's progress bars and INFO
    lines on stderr. `gather_parameters`: under FSDP2, gather the full parameters on every rank for the scoring
    (default: score sharded). `keep_prepared_mb`: memory for the prepared questions kept across calls (0: none
    kept). `radar_hf_args`: radar_hf model args (prompt_style, score, share_prefix, protocol, ...). Under
    torch.distributed every rank must call it; all get the same dict (module docstring).
    """
    started = time.perf_counter()
    import lmms_eval.models  # noqa: F401  (loads our entry point: radar_hf, task discovery, stderr hooks)
    import torch
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    from radar_tasks import taxonomy
    from radar_tasks.data import m3bench
    from radar_tasks.runner import environment
    from radar_tasks.task_yamls import TASK_DIR
    from radar_tasks.tasks.plugin import install_preflight, quiet_progress, reusing_tasks

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise ValueError("radar_tasks.evaluate: no task given")
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    root = str(m3bench.resolve_root(data_dir).absolute())
    # `evaluator.simple_evaluate(..., task_manager=TaskManager(...))` looks the function up before the TaskManager
    # that would wrap it is built (plugin.install_preflight): wrap it now, or a process's first call runs unchecked
    install_preflight()
    wrapper = _VerboseInLoopRadarHF if verbose else InLoopRadarHF
    # M3-Bench tasks only (the usual case): index our task folder alone, not lmms-eval's 3,500 YAML files (the first
    # call of a process would spend most of its time there)
    ours = all(taxonomy.leaves_of(name) for name in names)
    with (
        _preserved(module),
        environment(RADAR_M3BENCH_DIR=root),
        reusing_tasks(),
        once.per_process(),
        _log_lines(verbose),
        quiet_progress(not verbose),
    ):
        manager = TaskManager(  # inside `reusing_tasks`: the index of an earlier call is reused
            "WARNING", include_path=TASK_DIR if ours else None, include_defaults=not ours, model_name="radar_hf"
        )
        lm = wrapper.from_model(module, processor, batch_size=batch_size, **radar_hf_args)
        lm.gather_parameters = gather_parameters
        lm.prepared_cache = _prepared_cache(module, processor, lm.settings, keep_prepared_mb)
        results = evaluator.simple_evaluate(
            model=lm,
            tasks=names,
            limit=limit,
            log_samples=log_samples,
            batch_size=batch_size,
            task_manager=manager,
            verbosity="WARNING",
            # as lmms-eval's CLI chooses it (its accelerate path fails under a plain torch.distributed group)
            distributed_executor_backend="torchrun" if _distributed() else "accelerate",
        )
    scores = scores_of(results) if results else None
    dist = _distributed()
    if dist is not None:  # rank 0 holds the aggregated results
        box = [scores if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        scores = box[0]
    if not scores:
        raise RuntimeError("radar_tasks.evaluate: lmms-eval returned no results")
    dummies = lm.lockstep.dummies if lm.lockstep is not None else 0
    cost = [time.perf_counter() - started, lm.forward_s, float(lm.forwards - dummies), float(dummies)]
    if dist is not None:
        on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        spread = torch.tensor(cost, dtype=torch.float64, device=on)
        dist.all_reduce(spread, op=dist.ReduceOp.MAX)
        cost = spread.tolist()
    scores["cost"] = {"time_s": cost[0], "forward_s": cost[1], "forwards": int(cost[2]), "dummy_forwards": int(cost[3])}
    if dist is None or dist.get_rank() == 0:
        logger.info(headline(names, scores, scores["cost"]))
    return scores


def _trainer_callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class RadarCallback(_trainer_callback_base()):
    """A transformers `TrainerCallback`: every `eval_steps` optimizer steps and at the end of training it runs
    `evaluate` on the trainer's model and logs the scores through the trainer's loggers (`Trainer.log`: W&B,
    TensorBoard, ... against the global step; tokens seen too when `include_num_input_tokens_seen` is on).

        trainer = Trainer(model=model, args=args, train_dataset=...)
        trainer.add_callback(RadarCallback(processor, tasks=["radar_mmm_lite"], eval_steps=500, trainer=trainer))

    Logged keys: `<prefix>/<task>/<metric>` for `metrics` of every task and group, and what the evaluation cost:
    `<prefix>/time_s` (its wall time) and `<prefix>/forward_s` (the model's forwards in it); the default prefix
    `eval_radar` makes the W&B and TensorBoard integrations file them as `eval/radar/...`. `history` keeps every
    evaluation (step and scores). `eval_steps` None: `args.eval_steps` when it is a whole number, else only at
    the end. Extra keyword arguments go to `evaluate` (batch_size, limit, data_dir, verbose, radar_hf args).
    """

    def __init__(
        self,
        processor,
        tasks: str | Sequence[str] = ("radar_mmm_lite",),
        eval_steps: int | None = None,
        *,
        trainer=None,
        prefix: str = "eval_radar",
        metrics: Sequence[str] = ("sds", "acc", "bpb", "brier", "sds_perception", "sds_reasoning"),
        **evaluate_kwargs,
    ):
        self.processor, self.tasks, self.eval_steps = processor, tasks, eval_steps
        self.trainer, self.prefix, self.metrics = trainer, prefix, tuple(metrics)
        self.evaluate_kwargs = evaluate_kwargs
        self.history: list[dict] = []
        self._last_step: int | None = None

    def bind(self, trainer) -> RadarCallback:
        self.trainer = trainer
        return self

    def _every(self, args) -> int | None:
        if self.eval_steps:
            return int(self.eval_steps)
        steps = getattr(args, "eval_steps", None)
        return int(steps) if isinstance(steps, (int, float)) and steps >= 1 and float(steps).is_integer() else None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        every = self._every(args)
        step = state.global_step
        if (every and step % every == 0) or (state.max_steps and step >= state.max_steps):
            self._evaluate(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._last_step != state.global_step:
            self._evaluate(state, model)

    def _evaluate(self, state, model) -> None:
        if self.trainer is None:
            raise RuntimeError(
                "RadarCallback logs through the trainer: create it with trainer=... "
                "(trainer.add_callback(RadarCallback(processor, ..., trainer=trainer)))"
            )
        self._last_step = state.global_step
        scores = evaluate(model, self.processor, self.tasks, **self.evaluate_kwargs)
        logs = {
            f"{self.prefix}/{task}/{metric}": float(row[metric])
            for task, row in scores.items()
            if task != "cost"
            for metric in self.metrics
            if isinstance(row.get(metric), (int, float))
        }
        logs.update({f"{self.prefix}/{key}": float(scores["cost"][key]) for key in ("time_s", "forward_s")})
        self.history.append(
            {"step": state.global_step, "tokens": state.num_input_tokens_seen or None, "scores": scores}
        )
        self.trainer.log(logs)
