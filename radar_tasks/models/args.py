"""Parsing `radar_hf`'s model args: lmms-eval hands every `--model_args` value over as a string."""

from __future__ import annotations

import json


def as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def parse_batch_size(batch_size):
    """int >= 1, or "auto" (also lmms-eval's "auto:N")."""
    if isinstance(batch_size, str):
        text = batch_size.strip().lower()
        if text.startswith("auto"):
            return "auto"
        batch_size = int(text)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1 or 'auto', got {batch_size!r}")
    return int(batch_size)


def parse_kwargs(value) -> dict:
    """`processor_kwargs` from a model_arg: a dict, a JSON object, or `key:value;key:value`.

    The `;`/`:` form survives lmms-eval's (and lm-eval's) comma split of --model_args. Values: int, float,
    true/false, none, else string; a dotted key sets a nested dict (`size.height:448;size.width:448`).
    """
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    text = str(value).strip()
    if text.startswith("{"):
        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError(f"processor_kwargs: expected a JSON object, got {text!r}")
        return parsed
    out: dict = {}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, raw = item.partition(":")
        if not sep or not key.strip():
            raise ValueError(f"processor_kwargs: expected key:value pairs separated by ';', got {item!r}")
        target, parts = out, key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = _scalar(raw.strip())
    return out


def _scalar(raw: str):
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def merge_kwargs(base: dict, override: dict) -> dict:
    """`override` on top of `base`, nested dicts merged key by key (`size.longest_edge:...` keeps the preset's
    `size.shortest_edge`)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_kwargs(out[key], value)
        else:
            out[key] = value
    return out
