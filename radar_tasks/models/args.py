"""`radar_hf`'s model args: one declaration (`ModelArgs`), from which come their parsing and checking, the wrapper's
typed settings, the protocol presets' switches (`protocol.SWITCH_DEFAULTS`) and the docs table (`args_doc`).

Each field of `ModelArgs` is one model arg: its name, type, default, parser (which says what is wrong with a value),
valid values as the error line lists them, and a one-line doc. lmms-eval hands every `--model_args` value over as
a string, or as the int / float / bool its own parser made of it (`true` -> True, `4` -> 4): `check_model_args`
runs each through its parser before any model loads; `ModelArgs.of` does the same for Python keyword arguments
(`RadarHF(...)`, `radar_tasks.evaluate(...)`). An unknown name or a bad value is one line (`ArgumentError`) that
lists the valid values. To add a model arg: one `arg(...)` field below (then `python -m radar_tasks.models.args_doc`
rewrites the docs table).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radar_tasks import prompts
from radar_tasks.data.images import CONVERSIONS, DEFAULT_CONVERSION
from radar_tasks.errors import ArgumentError

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
SCORES = ("logprob", "logit")
PROTOCOLS = ("paper",)
STYLE_ARGS = ("auto", *prompts.STYLES)
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
# `image_processor` model arg -> transformers' image-processor backend (models.likelihood.select_image_backend)
IMAGE_BACKENDS = {"fast": "torchvision", "pil": "pil"}
IMAGE_PROCESSORS = tuple(IMAGE_BACKENDS)
# `images` model arg: what the model sees of a question's images (models.questions.QuestionMaker)
IMAGE_MODES = ("keep", "none", "blank")
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


def dtype_name(value) -> str:
    """A dtype name (`torch.` prefix allowed: `str(model.dtype)`)."""
    return choice(*DTYPE_NAMES)(str(value).strip().removeprefix("torch."))


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


# --------------------------------------------------------------------------------------------------- the declaration
@dataclass(frozen=True)
class Arg:
    """What one model arg is, beside its name, type and default (the `ModelArgs` field that holds it)."""

    parse: Callable[[Any], Any]  # raises ValueError saying what is wrong
    valid: str  # the valid values, as the error line (and the docs table) lists them
    doc: str  # one line: what it does (the docs table)
    shown_default: str | None = None  # the docs table's default, where the value alone does not say it
    switch: bool = False  # a protocol preset's switch: a quirk the preset turns on, which the arg turns off or on
    cli_flag: str | None = None  # lmms-eval's own flag that reaches it (`create_from_arg_string`'s additional config)
    name: str = ""  # filled from the field
    default: Any = None  # filled from the field
    required: bool = False  # filled from the field


def arg(parse, valid: str, doc: str, *, default: Any = dataclasses.MISSING, factory=dataclasses.MISSING, **more):
    """A `ModelArgs` field: its `default` or default `factory` (neither: required), and what `Arg` holds."""
    return field(default=default, default_factory=factory, metadata={"arg": Arg(parse, valid, doc, **more)})


_BOOL = "true, false, 1, 0, yes, no"


@dataclass(frozen=True, kw_only=True)
class ModelArgs:
    """Every model arg of `radar_hf`, typed, in the order of the docs table and of the error line's valid names.

    A value set by a protocol preset (`protocol.resolve_settings`) defaults here to its value without protocol; the
    names given explicitly are in `given` (they win over the preset)."""

    pretrained: str = arg(
        pretrained_path,
        "a checkpoint folder or a hub id",
        "local folder or hub id of an `AutoModelForImageTextToText` checkpoint with its `AutoProcessor`",
        shown_default="(required)",
    )
    device: str | None = arg(
        torch_device,
        "cpu, cuda, cuda:N, mps",
        "where the model scores; a data-parallel process uses its own device",
        default=None,
        shown_default="`cuda` if available, else `cpu`",
        cli_flag="--device",
    )
    dtype: str = arg(
        dtype_name,
        ", ".join(DTYPE_NAMES),
        "the weights' dtype; `auto`: bfloat16 on CUDA, float32 elsewhere",
        default="auto",
    )
    batch_size: int | str = arg(
        parse_batch_size,
        "an integer >= 1, or auto",
        "questions per batch, or `auto` (from a token budget); given as a model arg and as the flag, the model arg "
        "wins over the flag's default, two different values are an error",
        default=1,
        cli_flag="--batch_size",
    )
    max_batch_size: int | None = arg(
        positive_int,
        "an integer >= 1",
        "at most this many questions per batch",
        default=None,
        cli_flag="--max_batch_size",
    )
    share_prefix: bool = arg(
        as_bool,
        _BOOL,
        "one prefill per question, all candidates on its KV cache; `false`: one forward per candidate (the reference)",
        default=True,
    )
    trust_remote_code: bool = arg(
        as_bool, _BOOL, "passed to `from_pretrained`: run the checkpoint's own code", default=False
    )
    attn_implementation: str | None = arg(
        attention,
        "eager, sdpa, flash_attention_2, ... (transformers' attention kernels)",
        "the attention kernel, e.g. `sdpa`, `eager`",
        default=None,
        shown_default="transformers' default",
    )
    protocol: str | None = arg(
        choice(*PROTOCOLS),
        ", ".join(PROTOCOLS),
        "`paper`: the family's reference script in everything deterministic: its prompt style, `score=logit`, "
        "dtype, processor settings, the Qwen2-VL script's first resize, its image conversion, the two scored "
        "letters and its quirks (what it sets: the default column; any explicit arg wins)",
        default=None,
    )
    prompt_style: str = arg(
        choice(*STYLE_ARGS),
        ", ".join(STYLE_ARGS),
        '`raw`: the task YAML\'s prompt + `" " + choice`; `auto`: by `config.model_type` (below); a family style '
        "rebuilds the prompt from the M3-Bench record as the reference script does; `chat`: the processor's chat "
        "template (instruct checkpoints); docs that are not M3-Bench records fall back to `raw`",
        default="raw",
    )
    score: str = arg(
        choice(*SCORES),
        ", ".join(SCORES),
        "`logprob`: mean token log-likelihood of the candidate; `logit`: its mean raw logit (the paper), returned "
        "as the loss `-mean_logit`, so that the SDS (softmax over -loss) is the paper's softmax over mean logits",
        default="logprob",
    )
    processor_kwargs: Mapping[str, Any] = arg(
        parse_kwargs,
        "key:value;key:value, or a JSON object",
        "passed to `AutoProcessor.from_pretrained` (dotted keys nest), merged key by key over the preset's",
        factory=dict,
        shown_default="none",
    )
    qwen_vl_utils_resize: bool = arg(
        as_bool,
        _BOOL,
        "the Qwen2-VL script's qwen-vl-utils resize before the processor's own",
        default=False,
        switch=True,
    )
    image_conversion: str = arg(
        choice(*CONVERSIONS),
        ", ".join(CONVERSIONS),
        "how images become RGB: `white`: any transparency onto white; `qwen_vl_utils` (qwen-vl-utils `to_rgb`): "
        'only mode RGBA is pasted onto white, every other mode `convert("RGB")`; `pil_convert`: '
        '`convert("RGB")`, alpha dropped',
        default=DEFAULT_CONVERSION,
        switch=True,
    )
    llava_mmmu_one_distractor: bool = arg(
        as_bool,
        _BOOL,
        "the LLaVA script's quirk: MMMU-Pro text-option items keep the answer and one distractor (seeded per item)",
        default=False,
        switch=True,
    )
    internvl_reverse_images: bool = arg(
        as_bool,
        _BOOL,
        "the InternVL script's quirk: several images before the question get their `<img>` blocks in reverse order",
        default=False,
        switch=True,
    )
    mmmu_two_letters: bool = arg(
        as_bool,
        _BOOL,
        "score exactly `A`/`B` of an MMMU-Pro options block, as the three scripts do (the other letters are dropped)",
        default=False,
        switch=True,
    )
    num_workers: int | str = arg(
        workers,
        "auto, or an integer >= 0",
        "background processes that prepare the next questions (images, processor, candidate ids) while the model "
        "scores; `auto`: on an accelerator, the CPUs this process may use (affinity, cgroup quota), shared among the "
        "data-parallel processes of the machine, less one for the process driving the model, at least 1 and at most "
        "8 (`pipeline.AUTO_MAX_WORKERS`); on a CPU device 0 (the forwards use every core); `0`: everything in the "
        "main process, in turn",
        default="auto",
    )
    image_processor: str = arg(
        choice(*IMAGE_PROCESSORS),
        ", ".join(IMAGE_PROCESSORS),
        "`fast`: transformers' torchvision image processor, where the model has one; `pil`: its PIL backend",
        default="fast",
    )
    images: str = arg(
        choice(*IMAGE_MODES),
        ", ".join(IMAGE_MODES),
        "what the model sees of the images (an ablation, docs/analysis.md): `keep` them; `none`: the same question "
        "without images, the prompt the style writes for zero images (no marker; MMMU-Pro's `<image k>` references "
        "dropped); `blank`: each image replaced by a mid-grey one (128, 128, 128) of its size, so the same visual "
        "tokens",
        default="keep",
    )
    # not a model arg: the names given explicitly (`of`), which win over a protocol preset
    given: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def of(cls, given: Mapping[str, Any], **checked) -> ModelArgs:
        """The model args of Python keyword arguments (`RadarHF(...)`): each value through its parser (the one-line
        errors of `check_model_args`); None is not given (the default). An unknown name is a TypeError, as in any
        call. `checked`: values taken as they are (already checked, or a model in memory's name)."""
        values = {}
        for name, value in given.items():
            if name not in MODEL_ARGS:
                raise TypeError(f"radar_hf: unknown model arg {name!r}; valid: {', '.join(MODEL_ARGS)}")
            if value is not None:
                values[name] = _parse(MODEL_ARGS[name], value, f"model arg {name}={value!r}")
        values.update(checked)
        return cls(**values, given=frozenset(values))


def _declared(spec: dataclasses.Field) -> Arg:
    required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
    default = None if required else spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
    return dataclasses.replace(spec.metadata["arg"], name=spec.name, default=default, required=required)


MODEL_ARGS: dict[str, Arg] = {f.name: _declared(f) for f in dataclasses.fields(ModelArgs) if "arg" in f.metadata}
REQUIRED = tuple(name for name, a in MODEL_ARGS.items() if a.required)
# lmms-eval's own CLI flags that reach the model (`create_from_arg_string`'s additional config), by model arg
CLI_FLAGS = {name: a.cli_flag for name, a in MODEL_ARGS.items() if a.cli_flag}
CLI_DEFAULTS = {"batch_size": 1}  # lmms-eval's default for --batch_size: a model arg overrides it


def keyword_signature(*leading: inspect.Parameter) -> inspect.Signature:
    """`leading` parameters, then every model arg as a keyword with its default (`RadarHF.__init__`'s signature)."""
    keywords = [
        inspect.Parameter(
            a.name, inspect.Parameter.KEYWORD_ONLY, default=inspect.Parameter.empty if a.required else a.default
        )
        for a in MODEL_ARGS.values()
    ]
    return inspect.Signature([*leading, *keywords])


def check_model_args(raw: Mapping[str, Any], cli: Mapping[str, Any] | None = None) -> dict:
    """The model args given, parsed (`RadarHF`'s keyword arguments), from `--model_args` (`raw`) and lmms-eval's own
    flags (`cli`: batch_size, max_batch_size, device; None values are absent). A model arg wins over a flag left at its
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


def _parse(spec: Arg, value, what: str):
    try:
        return spec.parse(value)
    except ValueError as exc:
        valid = "" if spec.valid in str(exc) else f" (valid: {spec.valid})"
        raise ArgumentError(f"radar_hf: {what}: {exc}{valid}") from None
