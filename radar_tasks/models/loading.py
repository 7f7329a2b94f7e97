"""What radar_hf scores with: a model and its processor, loaded from a checkpoint or taken as they are in memory,
with the settings in effect (the model args, the protocol preset applied, the prompt style resolved for the model).

`LoadedModel` holds what lasts as long as the model: the settings, the device and dtype, the checkpoint facts
(model type, InternVL system message) and the model's control tokens. No lmms-eval here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from radar_tasks.models import control_tokens, likelihood, protocol, protocol_checks
from radar_tasks.models.args import ModelArgs


def model_type_of(pretrained: str, trust_remote_code: bool) -> str | None:
    """`config.model_type` of a checkpoint, from its config alone (the protocol preset is chosen before loading)."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(pretrained, trust_remote_code=trust_remote_code), "model_type", None)


@dataclass
class LoadedModel:
    """A model and its processor ready to score under `settings` (the model args in effect)."""

    model: Any
    processor: Any
    settings: ModelArgs
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(cls, args: ModelArgs, device: str | None = None) -> LoadedModel:
        """Load `args.pretrained` on `device` (default: the device arg, else CUDA when available, else CPU)."""
        settings = protocol.resolve_settings(args, lambda: model_type_of(args.pretrained, args.trust_remote_code))
        where = torch.device(device or settings.device or likelihood.default_device())
        dtype = likelihood.resolve_dtype(settings.dtype, where)
        model, processor = likelihood.load_model(
            settings.pretrained,
            where,
            dtype,
            settings.trust_remote_code,
            settings.attn_implementation,
            processor_kwargs=settings.processor_kwargs,
            image_processor=settings.image_processor,
        )
        return cls.ready(model, processor, settings, where, dtype)

    @classmethod
    def in_memory(cls, model, processor, args: ModelArgs) -> LoadedModel:
        """A model already in memory: no loading and no copy; it scores on its device in `args.dtype` (its own)."""
        settings = protocol.resolve_settings(args, lambda: getattr(model.config, "model_type", None))
        where = torch.device(str(model.device))
        return cls.ready(model, processor, settings, where, likelihood.resolve_dtype(settings.dtype, where))

    @classmethod
    def ready(cls, model, processor, settings: ModelArgs, device: torch.device, dtype: torch.dtype) -> LoadedModel:
        """After loading: the prompt style resolved for the model, the post-load checks and warnings run."""
        model_type = getattr(model.config, "model_type", None)
        settings = protocol_checks.check_loaded(settings, model_type, processor)
        return cls(model, processor, settings, device, dtype)

    @property
    def model_type(self) -> str | None:
        return getattr(self.model.config, "model_type", None)

    @property
    def system_message(self) -> str:
        return protocol.internvl_system_message(self.model.config)

    @functools.cached_property
    def control_tokens(self) -> tuple[str, ...]:
        return control_tokens.of_processor(self.processor)
