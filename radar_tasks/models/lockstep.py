"""Forwards in lockstep across ranks, so that a sharded model (FSDP2, DeepSpeed ZeRO-3) scores without gathering
its parameters.

A sharded model's forward is a sequence of collectives: each sharded unit (a decoder layer, a vision block, the
root) all-gathers its parameters when it runs and frees them after. Every rank must therefore run forwards that
reach the same units in the same order, however its own questions differ. Which units a forward reaches depends on
one thing only: whether it runs the vision tower. Shapes do not matter (an all-gather is per unit, whatever the
activations), nor does a KV cache (the LM's layers run either way), nor the number of images: Qwen2-VL, InternVL,
LLaVA, LLaVA-OneVision and Idefics3 run their vision tower once per forward on all of its images (patches, tiles
or crops concatenated), and none runs it without pixel values. So a forward has one of two structures: `vision`
(pixel values given) or `text` (none: text-only prompts, continuations on a cache, one-token dummies).

`Lockstep` wraps the top-level model: before each forward, the ranks all-reduce which structures they need now
(one small tensor); then every rank runs, for each structure needed anywhere, in the fixed order vision then text,
either its real forward or a dummy of that structure whose output it discards (a tiny prompt with one small image;
one token). A rank with nothing left keeps answering with dummies (`finish`) until every rank has finished. The
scorer's every forward goes through it: prefills, continuations, the reference path, the first-batch check and the
fallbacks. Model state a dummy would change (Qwen2-VL's `rope_deltas`, kept between a prefill and its
continuation) is restored after it.
"""

from __future__ import annotations

import functools

import torch

VISION, TEXT = 0, 1  # positions in the all-reduced tensor; also the order in which they run
DUMMY_IMAGE_SIZE = 56  # pixels: one merged patch for Qwen2-VL (its minimum); others resize to their own size


def runs_vision(kwargs: dict) -> bool:
    """A forward with pixel values (of any name: pixel_values, pixel_values_videos) runs the vision tower."""
    return any(k.startswith("pixel_values") and torch.is_tensor(v) and v.numel() for k, v in kwargs.items())


def _normal(value):
    return value.clone() if torch.is_tensor(value) and value.is_inference() else value


@functools.cache
def _proxy_class(model_cls: type) -> type:
    """A class that reads as the model's (its name and `forward`, which signature checks read) for the proxy."""
    return type(model_cls.__name__, (_LockstepModel,), {"forward": model_cls.forward})


class _LockstepModel:
    """The model as the scorer calls it: calls go through `Lockstep.forward`, everything else to the model."""

    def __init__(self, model, lockstep: Lockstep):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_lockstep", lockstep)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        setattr(self._model, name, value)

    def __call__(self, *args, **kwargs):
        return self._lockstep.forward(*args, **kwargs)


class Lockstep:
    """Every rank's forwards of `model` in the same structure and order (module docstring). `proxy()` is the model
    to score with; `finish()` ends a rank's scoring. `forwards` / `dummies`: forwards run by this rank."""

    def __init__(self, model, dist, make_dummy):
        """`make_dummy(vision: bool) -> dict`: the keyword arguments of a small forward of that structure, on the
        model's device (built once each, when first needed)."""
        self.model, self.dist, self.make_dummy = model, dist, make_dummy
        backend = dist.get_backend()
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        self.forwards = self.dummies = 0
        self._dummies: dict[int, dict] = {}
        # modules whose state a forward rewrites and a later forward of the same rank reads (M-RoPE deltas)
        self._stateful = [m for m in model.modules() if hasattr(m, "rope_deltas")]

    def proxy(self):
        return _proxy_class(type(self.model))(self.model, self)

    def _needed(self, mine: int | None) -> list[int]:
        """The structures some rank needs now (all-reduce MAX of one flag per structure); [] when all finished."""
        with torch.inference_mode(False):
            flags = torch.zeros(2, dtype=torch.long, device=self.device)
            if mine is not None:
                flags[mine] = 1
            self.dist.all_reduce(flags, op=self.dist.ReduceOp.MAX)
        return [s for s in (VISION, TEXT) if flags[s]]

    def _run(self, args: tuple, kwargs: dict):
        """One forward without autograd, outside inference mode: FSDP2 and ZeRO-3 gather parameters into buffers
        they keep for training, and a buffer made an inference tensor here would fail the next training step
        ("Inplace update to inference tensor outside InferenceMode"). Inference tensors given (the scorer builds
        its inputs in inference mode) are copied into normal ones."""
        with torch.inference_mode(False), torch.no_grad():
            args = tuple(_normal(a) for a in args)
            kwargs = {k: _normal(v) for k, v in kwargs.items()}
            return self.model(*args, **kwargs)

    def _dummy(self, structure: int) -> None:
        if structure not in self._dummies:
            self._dummies[structure] = self.make_dummy(structure == VISION)
        saved = [m.rope_deltas for m in self._stateful]
        self._run((), self._dummies[structure])
        for m, value in zip(self._stateful, saved):
            m.rope_deltas = value
        self.dummies += 1

    def forward(self, *args, **kwargs):
        mine = VISION if runs_vision(kwargs) else TEXT
        out = None
        for structure in self._needed(mine):
            if structure == mine:
                out = self._run(args, kwargs)
                self.forwards += 1
            else:
                self._dummy(structure)
        return out

    def finish(self) -> None:
        """This rank has no forward left: answer the others' with dummies until every rank has finished."""
        while needed := self._needed(None):
            for structure in needed:
                self._dummy(structure)


def dummy_inputs(
    processor, placeholder: str, token_id: int, *, vision: bool, device, dtype, logits_to_keep: bool
) -> dict:
    """A small forward of either structure: one image and its placeholder (vision), or the one token `token_id`
    (text; any id but an image token's)."""
    from PIL import Image

    from radar_tasks.models import likelihood

    if vision:
        image = Image.new("RGB", (DUMMY_IMAGE_SIZE, DUMMY_IMAGE_SIZE), "white")
        inputs = dict(likelihood.encode(processor, likelihood.build_prompt("", 1, placeholder), [image]))
    else:
        inputs = {"input_ids": torch.tensor([[token_id]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
    inputs = likelihood.to_device(inputs, device, dtype)
    inputs["use_cache"] = False
    if logits_to_keep:
        inputs["logits_to_keep"] = 1
    return inputs
