"""RADAR scores of a model in memory, inside a training loop: `evaluate(model, processor, tasks)` and `RadarCallback`.

`evaluate` runs lmms-eval's `simple_evaluate` (the numbers of the CLI, with its seeds) on `radar_hf` built around
the live model (`RadarHF.from_model`: no save, no reload, no second copy of the weights). Around the call it puts
the model in eval mode and restores afterwards its train/eval mode, the grad mode and the random states of
python, numpy and torch (lmms-eval seeds them all: a training run must not be reseeded by its evaluations).

Under `torch.distributed` every rank calls it: lmms-eval gives each rank its share of the questions (it pads the
requests of the shorter ranks), rank 0 gathers and aggregates, and the result is broadcast, so every rank returns
the same dict. Every rank also runs the same number of model forwards: a rank that needed fewer repeats its last
forward that carried no KV cache until the counts match, so that a model whose forwards are collectives never
waits for a rank that has finished. That is not enough for FSDP with nested units: forwards with and without
images run different modules (different all-gathers), so FSDP2 (`fully_shard`) parameters are gathered once for
the scoring (`_unsharded`) and no forward is a collective. A DistributedDataParallel wrapper is taken off (its
forward only adds buffer broadcasts; its module scores alone).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Sequence

from radar_tasks.models.radar_hf import RadarHF
from radar_tasks.results import Results


def _distributed():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


class _ForwardCounter:
    """Counts the forwards of a module, remembering the inputs of the last one that carried no KV cache."""

    def __init__(self, module):
        self.module, self.count, self.last = module, 0, None
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        self.count += 1
        if not any(kwargs.get(k) is not None for k in ("cache", "past_key_values")):
            self.last = (args, dict(kwargs))

    def remove(self) -> None:
        self.handle.remove()

    def pad_to_max(self, dist, device) -> int:
        """Repeat forwards until every rank has run as many as the busiest; returns the number repeated."""
        import torch

        mine = torch.tensor([self.count], dtype=torch.long, device=device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(mine, op=dist.ReduceOp.MAX)
        extra = int(mine.item()) - self.count
        if extra and self.last is None:
            raise RuntimeError(
                "radar_tasks.evaluate: this rank ran no forward it could repeat; give every rank "
                "at least one question (more questions than ranks)"
            )
        with torch.inference_mode():
            for _ in range(extra):
                args, kwargs = self.last
                self.module(*args, **kwargs)
        return extra


@contextlib.contextmanager
def _unsharded(module):
    """FSDP2 (`fully_shard`) modules hold their full parameters inside (one all-gather per module, on every rank at
    the same point), so that the forwards of scoring need no collective: a rank's forwards may then differ from
    another's in number and in structure (the vision tower runs only in forwards with images). Their
    reshard-after-forward settings are restored and the parameters resharded after. Costs the memory of the full
    parameters on every rank while scoring."""
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
    """`radar_hf` whose loglikelihood runs with FSDP2 parameters gathered and ends with the same number of forwards
    on every rank."""

    forwards_padded = 0

    def loglikelihood(self, requests):
        counter = _ForwardCounter(self.model)
        try:
            with _unsharded(self.model):
                results = super().loglikelihood(requests)
                dist = _distributed()
                if dist is not None:
                    self.forwards_padded = counter.pad_to_max(dist, self.device)
        finally:
            counter.remove()
        self.forwards = counter.count
        return results


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


def scores_of(results: dict) -> dict[str, dict]:
    """`{task: {metric: value}}` of every leaf and group of an lmms-eval results dict (`"sds,none"` -> `"sds"`,
    lmms-eval's "N/A" -> None), with the per-item records under `samples` when the results carry them."""
    read = Results(results)
    scores = read.scores()
    for task, records in read.samples().items():
        if task in scores:
            scores[task]["samples"] = records
    return scores


def evaluate(
    model,
    processor,
    tasks: str | Sequence[str],
    *,
    batch_size=1,
    limit: float | None = None,
    log_samples: bool = False,
    data_dir: str | os.PathLike | None = None,
    **radar_hf_args,
) -> dict:
    """RADAR scores of `model` (a `PreTrainedModel` in memory, on its device, in its dtype) on `tasks`.

    Returns `{task: {"sds", "sds_stderr", "acc", "acc_stderr", "bpb", "bpb_stderr", "brier", "brier_stderr",
    "items", "skipped", "sds_perception", ...}}` for
    every leaf and group task, the numbers `lmms-eval --model radar_hf` writes for the same weights; with
    `log_samples`, each leaf also has `samples` (its per-item records). `data_dir`: the M3-Bench folder (default
    $RADAR_M3BENCH_DIR). `radar_hf_args`: radar_hf model args (prompt_style, score, share_prefix, protocol, ...).
    Under torch.distributed every rank must call it; all get the same dict (module docstring).
    """
    import lmms_eval.models  # noqa: F401  (loads our entry point: radar_hf, task discovery, stderr hooks)
    import torch
    from lmms_eval import evaluator
    from lmms_eval.tasks import TaskManager

    from radar_tasks.data import m3bench
    from radar_tasks.runner import environment
    from radar_tasks.tasks.plugin import install_preflight, reuse_task_index

    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if not names:
        raise ValueError("radar_tasks.evaluate: no task given")
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    root = str(m3bench.resolve_root(data_dir).absolute())
    reuse_task_index()
    # `evaluator.simple_evaluate(..., task_manager=TaskManager(...))` looks the function up before the TaskManager
    # that would wrap it is built (plugin.install_preflight): wrap it now, or a process's first call runs unchecked
    install_preflight()
    with _preserved(module), environment(RADAR_M3BENCH_DIR=root):
        lm = InLoopRadarHF.from_model(module, processor, batch_size=batch_size, **radar_hf_args)
        results = evaluator.simple_evaluate(
            model=lm,
            tasks=names,
            limit=limit,
            log_samples=log_samples,
            batch_size=batch_size,
            task_manager=TaskManager("WARNING", model_name="radar_hf"),
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

    Logged keys: `<prefix>/<task>/<metric>` for `metrics` of every task and group; the default prefix `eval_radar`
    makes the W&B and TensorBoard integrations file them as `eval/radar/<task>/<metric>`. `history` keeps every
    evaluation (step and scores). `eval_steps` None: `args.eval_steps` when it is a whole number, else only at
    the end. Extra keyword arguments go to `evaluate` (batch_size, limit, data_dir, radar_hf args).
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
            for metric in self.metrics
            if isinstance(row.get(metric), (int, float))
        }
        self.history.append(
            {"step": state.global_step, "tokens": state.num_input_tokens_seen or None, "scores": scores}
        )
        self.trainer.log(logs)
