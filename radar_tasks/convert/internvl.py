"""InternVL remote-code checkpoints (`InternVLChatModel`: InternVL2.5 / 3 / 3.5, `-Pretrained` included) ->
transformers' native `InternVLForConditionalGeneration` + `InternVLProcessor`.

transformers 5 ships the InternVL model but not its conversion script (`convert_internvl_weights_to_hf.py` is not in
the wheel), so the mapping is written here. Source layout (OpenGVLab `modeling_internvl_chat.py`,
`modeling_intern_vit.py`, `configuration_internvl_chat.py`):

| original                                              | transformers                                             |
|-------------------------------------------------------|----------------------------------------------------------|
| `vision_model.embeddings.class_embedding`             | `model.vision_tower.embeddings.cls_token`                |
| `vision_model.embeddings.patch_embedding.*`           | `...embeddings.patch_embeddings.projection.*`            |
| `vision_model.embeddings.position_embedding`          | `model.vision_tower.embeddings.position_embeddings`      |
| `vision_model.encoder.layers.i.attn.qkv.*` (fused)    | `...encoder.layer.i.attention.{q,k,v}_proj.*` (split)    |
| `vision_model.encoder.layers.i.attn.proj.*`           | `...encoder.layer.i.attention.projection_layer.*`        |
| `vision_model.encoder.layers.i.attn.{q,k}_norm.*`     | `...encoder.layer.i.attention.{q,k}_norm.*`              |
| `vision_model.encoder.layers.i.norm1/norm2.*`         | `...encoder.layer.i.layernorm_before/layernorm_after.*`  |
| `vision_model.encoder.layers.i.ls1/ls2`               | `...encoder.layer.i.lambda_1/lambda_2`                   |
| `vision_model.encoder.layers.i.mlp.fc{1,2}.*`         | `...encoder.layer.i.mlp.fc{1,2}.*`                       |
| `mlp1.0` (LayerNorm), `mlp1.1`, `mlp1.3` (Linear)     | `model.multi_modal_projector.{layer_norm,linear_1,linear_2}` |
| `language_model.model.*`, `language_model.lm_head.*`  | `model.language_model.*`, `lm_head.*`                    |

Config: `vision_config` (InternVisionConfig: `qkv_bias` -> `attention_bias`, `qk_normalization` -> `use_qk_norm`,
`norm_type`, `dropout` -> `projection_dropout`, no final norm -> `use_mean_pooling=True`), `llm_config` (a Qwen2 /
Qwen3 / Llama config; InternLM2 LLMs are not supported), `select_layer` -> `vision_feature_layer`, CLS always dropped
(`vision_feature_select_strategy="default"`), `downsample_ratio`, `ps_version` must be `v2` (transformers' pixel shuffle
is v2), tied embeddings follow `llm_config.tie_word_embeddings` as the original config does.

Processor: the tokenizer of the source folder with its `<img>`, `</img>`, `<IMG_CONTEXT>` tokens named
(`start_image_token`, `end_image_token`, `context_image_token`; `<video>` added if missing), a `GotOcr2ImageProcessor`
doing InternVL's `dynamic_preprocess` (448 px tiles, grid with the closest aspect ratio among min..max tiles, the same
tie-break on area, a 448 px thumbnail when more than one tile, bicubic, ImageNet mean/std), and
`image_seq_length = (448 // 14) ** 2 * 0.5 ** 2 = 256` `<IMG_CONTEXT>` tokens per tile, wrapped in `<img>...</img>`.
RADAR's protocol uses 1..3 tiles (`min_tiles`, `max_tiles`), not the checkpoint's `max_dynamic_patch`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from radar_tasks.convert._common import (
    ConversionError,
    grow_rows,
    load_checkpoint_folder,
    log,
    read_json,
    save_model,
)
from radar_tasks.models.likelihood import resolve_dtype

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
SPECIAL_TOKENS = {  # tokenizer attribute name -> token, as transformers' InternVLProcessor reads them
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
# System messages of the original conversation templates (internvl/conversation.py), by `config.template`.
TEMPLATE_SYSTEM = {
    "internvl2_5": (
        "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
    ),
}
# Dense LLMs whose transformers key layout equals the original's. MoE LLMs (InternVL3.5-30B-A3B / 241B-A28B /
# 20B-A4B) are stored per expert but transformers 5 fuses experts on load: not handled here (a clear error).
_LLM_TYPES = {"Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}
_DROP_LLM_KEYS = {
    "_name_or_path",
    "auto_map",
    "attn_implementation",
    "_attn_implementation_autoset",
    "use_flash_attn",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_bfloat16",
}
_VISION_RULES = [  # applied in order to the part of a vision key after "vision_model."
    (re.compile(r"^embeddings\.class_embedding$"), "embeddings.cls_token"),
    (re.compile(r"^embeddings\.position_embedding$"), "embeddings.position_embeddings"),
    (re.compile(r"^embeddings\.patch_embedding\.(weight|bias)$"), r"embeddings.patch_embeddings.projection.\1"),
    (
        re.compile(r"^encoder\.layers\.(\d+)\.attn\.proj\.(weight|bias)$"),
        r"encoder.layer.\1.attention.projection_layer.\2",
    ),
    (
        re.compile(r"^encoder\.layers\.(\d+)\.attn\.(q_norm|k_norm)\.(weight|bias)$"),
        r"encoder.layer.\1.attention.\2.\3",
    ),
    (re.compile(r"^encoder\.layers\.(\d+)\.norm1\.(weight|bias)$"), r"encoder.layer.\1.layernorm_before.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.norm2\.(weight|bias)$"), r"encoder.layer.\1.layernorm_after.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.ls1$"), r"encoder.layer.\1.lambda_1"),
    (re.compile(r"^encoder\.layers\.(\d+)\.ls2$"), r"encoder.layer.\1.lambda_2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$"), r"encoder.layer.\1.mlp.\2.\3"),
]
_QKV = re.compile(r"^encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)$")
_PROJECTOR = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}


# -------------------------------------------------------------------------------------------------------- configs
def vision_config_from_original(vc: dict) -> dict:
    """InternVisionConfig fields -> InternVLVisionConfig kwargs."""
    norm_type = vc.get("norm_type", "rms_norm")  # InternViT-6B: rms_norm; InternViT-300M: layer_norm
    out = {
        "hidden_size": vc["hidden_size"],
        "num_hidden_layers": vc["num_hidden_layers"],
        "num_attention_heads": vc["num_attention_heads"],
        "intermediate_size": vc["intermediate_size"],
        "hidden_act": vc.get("hidden_act", "gelu"),
        "layer_norm_eps": vc.get("layer_norm_eps", 1e-6),
        "image_size": vc.get("image_size", 448),
        "patch_size": vc.get("patch_size", 14),
        "num_channels": vc.get("num_channels", 3),
        "attention_bias": vc.get("qkv_bias", False),
        "use_qk_norm": vc.get("qk_normalization", False),
        "norm_type": norm_type,
        "attention_dropout": vc.get("attention_dropout", 0.0),
        "projection_dropout": vc.get("dropout", 0.0),
        "use_absolute_position_embeddings": True,
        "use_mean_pooling": True,  # no final norm, as InternViT
        "layer_scale_init_value": vc.get("initializer_factor", 0.1),
    }
    if out["use_qk_norm"] and out["layer_norm_eps"] != 1e-6:
        log.warning(
            "qk_normalization with layer_norm_eps=%s: transformers' q/k RMSNorm uses eps 1e-6", out["layer_norm_eps"]
        )
    return out


def text_config_from_original(lc: dict):
    from transformers import AutoConfig

    arch = (lc.get("architectures") or [None])[0]
    model_type = lc.get("model_type") or _LLM_TYPES.get(arch)
    if arch not in _LLM_TYPES or model_type not in _LLM_TYPES.values():
        raise ConversionError(
            f"llm_config architecture {arch!r} (model_type {model_type!r}) is not supported; "
            f"supported: {', '.join(_LLM_TYPES)}"
        )
    kwargs = {k: v for k, v in lc.items() if k not in _DROP_LLM_KEYS and k != "model_type"}
    return AutoConfig.for_model(model_type, **kwargs)


# -------------------------------------------------------------------------------------------------------- weights
def convert_state_dict(original: dict[str, torch.Tensor], vision_hidden: int) -> dict[str, torch.Tensor]:
    """Original InternVLChatModel keys -> InternVLForConditionalGeneration keys (fused qkv split into q, k, v)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in original.items():
        if key.startswith("vision_model."):
            rest = key[len("vision_model.") :]
            m = _QKV.match(rest)
            if m:
                layer, kind = m.groups()
                if value.shape[0] != 3 * vision_hidden:
                    raise ConversionError(f"{key}: {tuple(value.shape)}, expected first dim {3 * vision_hidden}")
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.split(vision_hidden, dim=0)):
                    out[f"model.vision_tower.encoder.layer.{layer}.attention.{name}.{kind}"] = part.clone()
                continue
            for pattern, repl in _VISION_RULES:
                if pattern.match(rest):
                    out["model.vision_tower." + pattern.sub(repl, rest)] = value
                    break
            else:
                unknown.append(key)
        elif key.startswith("mlp1."):
            idx, _, param = key[len("mlp1.") :].partition(".")
            if idx not in _PROJECTOR:
                unknown.append(key)
                continue
            out[f"model.multi_modal_projector.{_PROJECTOR[idx]}.{param}"] = value
        elif key.startswith("language_model.model."):
            out["model.language_model." + key[len("language_model.model.") :]] = value
        elif key == "language_model.lm_head.weight":
            out["lm_head.weight"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"keys with no known counterpart: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


# ------------------------------------------------------------------------------------------------------ processor
def chat_template(system_message: str | None) -> str:
    """ChatML as InternVL's MPT-style templates render it; one image = `<IMG_CONTEXT>\\n` before the text."""
    system = ""
    if system_message:
        system = (
            "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
            + system_message.replace("'", "\\'").join(["{{ '", "' }}"])
            + "<|im_end|>\n{% endif %}"
        )
    return system + (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}<IMG_CONTEXT>\n"
        "{% elif c['type'] == 'video' %}<video>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def build_processor(
    tokenizer,
    image_size: int,
    image_seq_length: int,
    min_tiles: int = 1,
    max_tiles: int = 3,
    system_message: str | None = None,
):
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    size = {"height": image_size, "width": image_size}
    common = {
        "size": size,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "resample": 3,
    }  # bicubic
    return InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            crop_to_patches=True, min_patches=min_tiles, max_patches=max_tiles, **common
        ),
        video_processor=InternVLVideoProcessor(**common),
        tokenizer=tokenizer,
        image_seq_length=image_seq_length,
        chat_template=chat_template(system_message),
    )


def _tokenizer(src: Path):
    from transformers import AutoTokenizer

    # trust_remote_code=False: the source config's `auto_map` (every released InternVL) would otherwise make
    # transformers ask whether to run the repository's code (and wait for an answer); the tokenizer needs none.
    plain = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    before = {}
    for name, token in SPECIAL_TOKENS.items():
        tid = plain.convert_tokens_to_ids(token)
        if tid is None or tid == plain.unk_token_id:
            if name != "video_token":
                raise ConversionError(f"{src}: the tokenizer has no {token} token (not an InternVL tokenizer?)")
        else:
            before[token] = tid
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False, extra_special_tokens=dict(SPECIAL_TOKENS))
    for token, tid in before.items():
        if tokenizer.convert_tokens_to_ids(token) != tid:
            raise ConversionError(f"naming {token} changed its id {tid} -> {tokenizer.convert_tokens_to_ids(token)}")
    return tokenizer


# ----------------------------------------------------------------------------------------------------- conversion
def convert_internvl(
    src, out, dtype="bfloat16", min_tiles: int = 1, max_tiles: int = 3, system_message: str | None = None
) -> Path:
    """Write a transformers InternVL checkpoint + processor to `out` from an original InternVL folder `src`.

    dtype: storage dtype (`bfloat16` = the released weights and what the RADAR script runs in; `float32`, `float16`);
    min_tiles / max_tiles: the dynamic tiling range (RADAR: 1..3; a thumbnail is added when > 1 tile);
    system_message: the chat template's default system message, also written to the converted config (default: the
    source config's `system_message`, else that of its `template`).
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    src, out = Path(src), Path(out)
    torch_dtype = resolve_dtype(dtype)
    cfg = read_json(src / "config.json")
    if "vision_config" not in cfg or "llm_config" not in cfg:
        raise ConversionError(f"{src}/config.json has no vision_config / llm_config: not an InternVLChatModel folder")
    archs = cfg.get("architectures") or []
    if archs and "InternVLChatModel" not in archs:
        log.warning("%s: architectures %s, expected InternVLChatModel", src, archs)
    if cfg.get("ps_version", "v1") != "v2":
        raise ConversionError(
            f"ps_version={cfg.get('ps_version', 'v1')!r}: only v2 pixel shuffle maps onto transformers"
        )
    if not cfg.get("use_thumbnail", True):
        raise ConversionError("use_thumbnail=False: transformers' tiling always adds the thumbnail (> 1 tile)")
    if not 1 <= min_tiles <= max_tiles:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles, got {min_tiles}, {max_tiles}")

    vision_kwargs = vision_config_from_original(cfg["vision_config"])
    text_config = text_config_from_original(cfg["llm_config"])
    tile = cfg.get("force_image_size") or vision_kwargs["image_size"]
    if tile != vision_kwargs["image_size"]:
        log.warning(
            "force_image_size=%s differs from the ViT's image_size=%s: position embeddings are interpolated "
            "(bicubic) at run time, as in the original",
            tile,
            vision_kwargs["image_size"],
        )
    ratio = float(cfg.get("downsample_ratio", 0.5))
    image_seq_length = int((tile // vision_kwargs["patch_size"]) ** 2 * ratio**2)
    tied = bool(cfg["llm_config"].get("tie_word_embeddings", getattr(text_config, "tie_word_embeddings", False)))
    text_config.tie_word_embeddings = tied

    tokenizer = _tokenizer(src)
    image_token_id = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["context_image_token"])

    state = convert_state_dict(load_checkpoint_folder(src), vision_kwargs["hidden_size"])
    embed_key = "model.language_model.embed_tokens.weight"
    if embed_key not in state:
        raise ConversionError(f"no language_model.model.embed_tokens.weight in {src}")
    if tied:
        if "lm_head.weight" in state and not torch.equal(state["lm_head.weight"], state[embed_key]):
            log.warning(
                "tie_word_embeddings=True: the stored lm_head differs from the embedding and is ignored, "
                "as the original model ties them on load"
            )
        state["lm_head.weight"] = state[embed_key]
    elif "lm_head.weight" not in state:
        raise ConversionError("tie_word_embeddings=False but no language_model.lm_head.weight in the checkpoint")
    vocab = state[embed_key].shape[0]
    need = max(len(tokenizer), vocab)
    if need > vocab:  # an added <video> (or a tokenizer longer than the embedding): zero rows, never read as input
        log.warning("growing the vocabulary %d -> %d with zero rows for added special tokens", vocab, need)
        for key in {embed_key, "lm_head.weight"}:
            state[key] = grow_rows(state[key], need)
        if tied:
            state["lm_head.weight"] = state[embed_key]
    text_config.vocab_size = state[embed_key].shape[0]

    template = cfg.get("template")
    if system_message is None:  # as the original model: the config's (even empty), else the template's
        has_own = isinstance(cfg.get("system_message"), str)
        system_message = cfg["system_message"] if has_own else TEMPLATE_SYSTEM.get(template)
        if template and template not in TEMPLATE_SYSTEM and not has_own:
            log.warning("template %r: no known system message; the chat template has none", template)
    # kept in the config as the original model keeps it (radar_hf's internvl style reads it from there)
    extra = {"system_message": system_message} if system_message is not None else {}
    config = InternVLConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_kwargs,
        image_token_id=image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=ratio,
        projector_hidden_act="gelu",
        vision_feature_layer=int(cfg.get("select_layer", -1)),
        vision_feature_select_strategy="default",
        tie_word_embeddings=tied,
        **extra,
    )
    config.architectures = ["InternVLForConditionalGeneration"]
    out.mkdir(parents=True, exist_ok=True)
    save_model(InternVLForConditionalGeneration, config, state, out, torch_dtype)

    processor = build_processor(tokenizer, tile, image_seq_length, min_tiles, max_tiles, system_message)
    processor.save_pretrained(out)
    record = {
        "converter": "radar_tasks.convert.internvl",
        "src": str(src),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "tile_size": tile,
        "min_tiles": min_tiles,
        "max_tiles": max_tiles,
        "tokens_per_tile": image_seq_length,
        "image_token_id": image_token_id,
        "template": template,
        "system_message": system_message,
        "select_layer": int(cfg.get("select_layer", -1)),
        "llm": type(text_config).__name__,
        "tie_word_embeddings": tied,
    }
    (out / "radar_conversion.json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    log.info("wrote %s: %d tokens per %d px tile, %d..%d tiles", out, image_seq_length, tile, min_tiles, max_tiles)
    return out
