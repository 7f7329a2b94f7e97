"""Helpers shared by the converters: reading raw checkpoints, writing a transformers model folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("radar_tasks.convert")


class ConversionError(ValueError):
    """The source checkpoint is not in a layout the converter understands (message says what and where)."""


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """One `.safetensors` or torch pickle (`.bin` / `.pt` / `.pth`) file -> state dict (tensors only, CPU)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    # weights_only: a projector file is a plain {name: tensor} dict; never unpickle arbitrary objects
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: expected a {{name: tensor}} state dict, got {type(state).__name__}")
    return state


def load_checkpoint_folder(folder: Path) -> dict[str, torch.Tensor]:
    """All weights of a Hugging Face model folder (safetensors or .bin, sharded or not) as one state dict."""
    folder = Path(folder)
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            files = sorted(set(read_json(index)["weight_map"].values()))
            break
        if (folder / single).is_file():
            files = [single]
            break
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise ConversionError(f"{folder}: no model.safetensors / pytorch_model.bin (or their index) found")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_tensor_file(folder / name))
    return state


def save_model(model_cls, config, state_dict: dict[str, torch.Tensor], out: Path, dtype: torch.dtype):
    """Instantiate `model_cls(config)` without allocating weights, load `state_dict` strictly, save to `out`.

    Strict: every parameter of the target must be given and no extra key may be left over, so a mapping error can
    never pass silently as a randomly initialised weight.
    """
    config.dtype = dtype
    with torch.device("meta"):
        model = model_cls(config)
    target = model.state_dict()
    expected = set(target)
    given = set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise ConversionError(
            f"weights do not match {model_cls.__name__}: missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    for key, value in state_dict.items():
        want = target[key].shape
        if tuple(value.shape) != tuple(want):
            raise ConversionError(f"{key}: shape {tuple(value.shape)} but {model_cls.__name__} expects {tuple(want)}")
    model.load_state_dict({k: v.to(dtype) for k, v in state_dict.items()}, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise ConversionError(f"parameters left unset: {leftover[:8]}")
    model.save_pretrained(out)
    return model


class quiet_transformers:
    """Silence transformers' load reports (e.g. the unused text tower of a full SigLIP checkpoint) inside a block."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._level)
        return False


def grow_rows(weight: torch.Tensor, n_rows: int) -> torch.Tensor:
    """`weight` with `n_rows - len(weight)` zero rows appended (vocabulary growth for added special tokens)."""
    if n_rows <= weight.shape[0]:
        return weight
    return torch.cat([weight, weight.new_zeros(n_rows - weight.shape[0], *weight.shape[1:])])
