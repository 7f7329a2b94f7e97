"""`radar_hf`'s model args: one table (`MODEL_ARGS`), one checker, and the value parsers.

lmms-eval hands every `--model_args` value over as a string, or as the int / float / bool its own parser made of
it (`true` -> True, `4` -> 4). `check_model_args` runs every value through its parser before any model loads;
an unknown name or a bad value is one line (`ArgumentError`) that lists the valid values. To add a model arg: one
`Arg(...)` line below and the keyword in `RadarHF.__init__` (a test keeps the two in step).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radar_tasks import prompts
from radar_tasks.data.images import CONVERSIONS
from radar_tasks.errors import ArgumentError

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
SCORES = ("logprob", "logit")
PROTOCOLS = ("paper",)
STYLE_ARGS = ("auto", *prompts.STYLES)
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
# `image_processor` model arg -> transformers' image-processor backend (models.likelihood.select_image_backend)
IMAGE_BACKENDS = {"fast": "torchvision", "pil": "pil"}
IMAGE_PROCESSORS = tuple(IMAGE_BACKENDS)
# the checkpoint folders of AutoModel*.from_pretrained, or a hub id `name` / `org/name`
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def as_bool(value) -> bool:
    """true/false/1/0/yes/no (any case), or a bool or 0/1; anything else is refused, never guessed."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOLEANS:
        return BOOLEANS[value.strip().lower()]
    raise ValueError(f"expected one of true, false, 1, 0, yes, no; got {value!r}")


def parse_batch_size(batch_size):
    """int >= 1, or "auto" (also lmms-eval's "auto:N")."""
    text = str(batch_size).strip().lower()
    if text.startswith("auto"):
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"batch_size must be an integer >= 1 or 'auto', got {batch_size!r}") from None
    if value < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or 'auto', got {batch_size!r}")
    return value


def positive_int(value) -> int:
    if isinstance(value, bool) or not re.fullmatch(r"\s*\d+\s*", str(value)) or int(value) < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def workers(value):
    """`auto`, or an integer >= 0 (models.pipeline.resolve_num_workers turns `auto` into a count)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not re.fullmatch(r"\s*\d+\s*", str(value)):
        raise ValueError(f"expected auto or an integer >= 0, got {value!r}")
    return int(value)


def choice(*values: str) -> Callable[[Any], str]:
    def parse(value) -> str:
        text = str(value).strip().lower()
        if text not in values:
            raise ValueError(f"expected one of {', '.join(values)}; got {value!r}")
        return text

    return parse


def pretrained_path(value) -> str:
    """A checkpoint folder (with its config.json), or a hub id; with HF_HUB_OFFLINE set, one in the hub cache."""
    text = str(value).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"the folder {text} holds no config.json: not a checkpoint")
        return text
    if path.exists():
        raise ValueError(f"{text} is a file, not a checkpoint folder")
    if not _HUB_ID.fullmatch(text) or text.startswith("."):
        raise ValueError(f"no such folder: {text}")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(text, "config.json"), str):
            raise ValueError(
                f"no such folder: {text}; as a hub id it is not in the local hub cache either (HF_HUB_OFFLINE is set)"
            )
    return text


def torch_device(value) -> str:
    text = str(value).strip().lower()
    if not re.fullmatch(r"cpu|mps|(cuda|xpu|npu)(:\d+)?", text):
        raise ValueError(f"expected cpu, cuda, cuda:N or mps; got {value!r}")
    if text.startswith("cuda"):
        import torch

        index = int(text.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"torch sees {torch.cuda.device_count()} CUDA device(s); use device=cpu on this machine")
    return text


def attention(value) -> str:
    from transformers import AttentionInterface

    names = ["eager", *[n for n in AttentionInterface._global_mapping if "|" not in n]]
    text = str(value).strip()
    if text not in names:
        raise ValueError(f"expected one of {', '.join(names)}; got {value!r}")
    return text


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
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"processor_kwargs: malformed JSON ({exc.msg})") from None
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


@dataclass(frozen=True)
class Arg:
    name: str
    parse: Callable[[Any], Any]  # raises ValueError saying what is wrong
    valid: str  # the valid values, as the error line lists them


_BOOL = "true, false, 1, 0, yes, no"
MODEL_ARGS: dict[str, Arg] = {
    a.name: a
    for a in (
        Arg("pretrained", pretrained_path, "a checkpoint folder or a hub id"),
        Arg("device", torch_device, "cpu, cuda, cuda:N, mps"),
        Arg("dtype", lambda v: choice(*DTYPE_NAMES)(str(v).strip().removeprefix("torch.")), ", ".join(DTYPE_NAMES)),
        Arg("batch_size", parse_batch_size, "an integer >= 1, or auto"),
        Arg("max_batch_size", positive_int, "an integer >= 1"),
        Arg("share_prefix", as_bool, _BOOL),
        Arg("trust_remote_code", as_bool, _BOOL),
        Arg("attn_implementation", attention, "eager, sdpa, flash_attention_2, ... (transformers' attention kernels)"),
        Arg("protocol", choice(*PROTOCOLS), ", ".join(PROTOCOLS)),
        Arg("prompt_style", choice(*STYLE_ARGS), ", ".join(STYLE_ARGS)),
        Arg("score", choice(*SCORES), ", ".join(SCORES)),
        Arg("processor_kwargs", parse_kwargs, "key:value;key:value, or a JSON object"),
        Arg("qwen_vl_utils_resize", as_bool, _BOOL),
        Arg("image_conversion", choice(*CONVERSIONS), ", ".join(CONVERSIONS)),
        Arg("llava_mmmu_one_distractor", as_bool, _BOOL),
        Arg("internvl_reverse_images", as_bool, _BOOL),
        Arg("mmmu_two_letters", as_bool, _BOOL),
        Arg("num_workers", workers, "auto, or an integer >= 0"),
        Arg("image_processor", choice(*IMAGE_PROCESSORS), ", ".join(IMAGE_PROCESSORS)),
    )
}
REQUIRED = ("pretrained",)
# lmms-eval's own CLI flags that reach the model (`create_from_arg_string`'s additional config), by model arg
CLI_FLAGS = {"batch_size": "--batch_size", "max_batch_size": "--max_batch_size", "device": "--device"}
CLI_DEFAULTS = {"batch_size": 1}  # lmms-eval's default for --batch_size: a model arg overrides it


def check_model_args(raw: Mapping[str, Any], cli: Mapping[str, Any] | None = None) -> dict:
    """Every model arg parsed (radar_hf's keyword arguments), from `--model_args` (`raw`) and lmms-eval's own flags
    (`cli`: batch_size, max_batch_size, device; None values are absent). A model arg wins over a flag left at its
    default; two different values are an error. Raises ArgumentError (one line)."""
    out = {}
    for name, value in raw.items():
        if name not in MODEL_ARGS:
            raise ArgumentError(f"radar_hf: unknown model arg {name!r}; valid: {', '.join(MODEL_ARGS)}")
        out[name] = _parse(MODEL_ARGS[name], value, f"model arg {name}={value!r}")
    for name, value in (cli or {}).items():
        if value is None or name not in CLI_FLAGS:
            continue
        flag = _parse(MODEL_ARGS[name], value, f"{CLI_FLAGS[name]} {value!r}")
        if name not in out:
            out[name] = flag
        elif flag != out[name] and flag != CLI_DEFAULTS.get(name):
            raise ArgumentError(
                f"radar_hf: {name} given twice, {CLI_FLAGS[name]} {value} and model arg {name}={raw[name]}: give one"
            )
    missing = [name for name in REQUIRED if name not in out]
    if missing:
        raise ArgumentError(f"radar_hf: model arg {missing[0]} is required (--model_args {missing[0]}=...)")
    return out


def _parse(arg: Arg, value, what: str):
    try:
        return arg.parse(value)
    except ValueError as exc:
        valid = "" if arg.valid in str(exc) else f" (valid: {arg.valid})"
        raise ArgumentError(f"radar_hf: {what}: {exc}{valid}") from None
