"""Which models share prefixes, and how: the one table to extend for a new architecture (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import inspect

# model_type -> (position scheme, keys zero-padded on dim 1 when prompts of one prefill batch differ there)
SUPPORT = {
    "qwen2_vl": ("mrope", ()),
    "qwen2_5_vl": ("mrope", ()),
    "llava": ("1d", ()),
    "llava_onevision": ("1d", ("pixel_values",)),  # anyres: (images, patches, 3, H, W); the model slices patches
    "internvl": ("1d", ()),
    "idefics3": ("1d", ("pixel_values", "pixel_attention_mask")),  # (batch, images, ...); all-zero images dropped
}


def forward_params(model) -> set:
    """The keyword names the model's `forward` takes."""
    return set(inspect.signature(type(model).forward).parameters)


def unsupported(model) -> str | None:
    """Why this model cannot share prefixes at all (the whole run goes one forward per candidate), or None."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    params = forward_params(model)
    if model_type not in SUPPORT:
        return f"model_type {model_type!r} is not in prefix_sharing.SUPPORT"
    if not ({"cache", "past_key_values"} & params) or "position_ids" not in params:
        return f"{type(model).__name__}.forward takes no cache / position_ids"
    if "sliding_attention" in (getattr(config.get_text_config(), "layer_types", None) or ()):
        return "the language model has sliding-window layers"
    return None
