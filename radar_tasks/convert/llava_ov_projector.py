"""LLaVA-OneVision stage-1 projector checkpoints (LLaVA-NeXT code base) -> a transformers LLaVA checkpoint.

Source layout (what LLaVA-NeXT's `train.py` writes when only the projector is trained, `mm_tunable_parts=
"mm_mlp_adapter"`):

* `mm_projector.bin`: the projector alone, keys `model.mm_projector.{0,2}.{weight,bias}` for `mlp2x_gelu`
  (`nn.Sequential(Linear(vision -> llm), GELU(), Linear(llm -> llm))`); intermediate checkpoints are
  `<run>/mm_projector/checkpoint-N.bin` with the config in `<run>/checkpoint-N/config.json`;
* `config.json`: the LLM config plus `mm_vision_tower`, `mm_projector_type`, `mm_hidden_size`,
  `mm_vision_select_layer`, `mm_patch_merge_type`, `image_aspect_ratio`, `mm_use_im_start_end`, ...;
* the base LLM folder (Qwen2-0.5B-Instruct: weights + tokenizer) and the SigLIP folder (siglip-so400m-patch14-384).

What the original computes for one image (LLaVA-NeXT `SigLipVisionTower`, `prepare_inputs_labels_for_multimodal`):
resize to 384x384 (bicubic, mean = std = 0.5, no crop; `image_aspect_ratio="pad"` first pads to a square with the
mean colour), run SigLIP **with its last encoder layer deleted** and take the output of the (new) last layer before
the post-layernorm (= `hidden_states[-2]` of the full tower; `mm_vision_select_layer` is not read by the SigLIP
tower), all 27 x 27 = 729 patch features (SigLIP has no CLS), `mm_projector`, and splice the 729 vectors in place of
the `<image>` placeholder (`mm_patch_merge_type="flat"`: no newline token). The LLM then runs on the embeddings.

Target: transformers `LlavaForConditionalGeneration` (model_type `llava`), not `LlavaOnevisionForConditionalGeneration`:
`LlavaOnevisionModel.pack_image_features` always appends the learned `image_newline` vector to every image (730
tokens for a single-tile image, more with anyres) and no config value turns that off (`vision_aspect_ratio` only
caps the anyres grid, `image_grid_pinpoints=[[384, 384]]` still yields base + 1 tile), while a stage-1 checkpoint has
no trained `image_newline` at all. The LLaVA(-1.5) architecture in transformers is exactly the stage-1 forward:
vision tower, `hidden_states[vision_feature_layer]`, strategy `full` (no CLS to drop), 2-layer GELU projector
(`linear_1`, `linear_2`), masked scatter at the image tokens, LLM. Settings written:

* vision tower = the SigLIP vision model with the last layer dropped (as the original), `vision_feature_layer=-1`,
  `vision_use_head=False` (the pooling head is unused);
* `LlavaProcessor(patch_size=14, vision_feature_select_strategy="full", num_additional_image_tokens=0)` with a
  `LlavaImageProcessor` resizing to exactly 384x384 (no centre crop; `do_pad` for `image_aspect_ratio="pad"`):
  `<image>` expands to (384 // 14) ** 2 = 729 image tokens;
* tokenizer = the LLM's, with `<image>` added as a special token (named `image_token`). Qwen2 has spare embedding rows
  (vocab 151936 > 151646 tokens), so `<image>` takes id 151646 and no embedding is resized; the row is never read
  (replaced by image features). Only when the LLM has no spare row is the embedding grown by zero rows (logged: the
  extra vocabulary entry then enters the log-softmax, raw logits of all other tokens are unchanged);
* `trim_vocab=True` drops the LLM's padding rows beyond the tokenizer (+ `<image>`), as LLaVA-NeXT's
  `load_pretrained_model` does with `resize_token_embeddings(len(tokenizer))` (raw logits unchanged either way);
* chat template = LLaVA's `plain` conversation (each message's content followed by `\\n`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from radar_tasks.convert._common import (
    ConversionError,
    grow_rows,
    load_tensor_file,
    log,
    quiet_transformers,
    read_json,
    save_model,
)
from radar_tasks.models.likelihood import resolve_dtype

IMAGE_TOKEN = "<image>"
PROJECTOR_FILES = ("mm_projector.bin", "mm_projector.safetensors", "mm_projector.pt", "mm_projector.pth")
# The mean/std/size of LLaVA-NeXT's own SigLipImageProcessor (it ignores the tower folder's preprocessor config).
SIGLIP_MEAN = SIGLIP_STD = [0.5, 0.5, 0.5]
PLAIN_TEMPLATE = (
    "{% for message in messages %}{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}\n{% endfor %}"
)
_PROJ_KEY = re.compile(r"(?:^|\.)mm_projector\.(\d+)\.(weight|bias)$")
_LAYER_KEY = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")


# ------------------------------------------------------------------------------------------------ reading the source
def find_projector(projector, projector_config=None) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a projector folder or file.

    A folder must hold `mm_projector.bin` (or .safetensors); a file is taken as is, its config looked up next to it,
    then in the run folder (`<run>/mm_projector/checkpoint-N.bin` -> `<run>/config.json` is *not* used for an
    intermediate checkpoint when `<run>/checkpoint-N/config.json` exists).
    """
    path = Path(projector)
    if path.is_dir():
        found = [path / n for n in PROJECTOR_FILES if (path / n).is_file()]
        if not found:
            raise ConversionError(f"{path}: no {' / '.join(PROJECTOR_FILES)} in this folder")
        weights, candidates = found[0], [path / "config.json"]
    elif path.is_file():
        weights = path
        run = path.parent.parent
        candidates = [path.parent / "config.json", run / path.stem / "config.json", run / "config.json"]
    else:
        raise ConversionError(f"{path}: no such projector file or folder")
    if projector_config is not None:
        candidates = [Path(projector_config)]
        if not candidates[0].is_file():
            raise ConversionError(f"{projector_config}: no such config file")
    config = next((c for c in candidates if c.is_file()), None)
    return weights, config


def projector_linears(state: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The projector's Linear layers, in order, as (weight, bias); keys `[model.]mm_projector.<i>.<weight|bias>`."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    other = []
    for key, value in state.items():
        m = _PROJ_KEY.search(key)
        if m:
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            other.append(key)
    if other:
        # vision_resampler / embed_tokens (mm_use_im_start_end) weights: a setup this converter does not reproduce
        raise ConversionError(f"unexpected non-projector weights in the projector file: {other[:8]}")
    if not layers:
        raise ConversionError("no mm_projector.<i>.weight keys in the projector file")
    for i, parts in layers.items():
        if set(parts) != {"weight", "bias"}:
            raise ConversionError(f"mm_projector.{i} has {sorted(parts)}, expected weight and bias")
    return [(layers[i]["weight"], layers[i]["bias"]) for i in sorted(layers)]


def _check_source_config(cfg: dict, n_linears: int) -> None:
    ptype = cfg.get("mm_projector_type", "mlp2x_gelu" if n_linears == 2 else None)
    if ptype != "mlp2x_gelu" or n_linears != 2:
        raise ConversionError(
            f"projector type {ptype!r} with {n_linears} Linear layer(s): only mlp2x_gelu (Linear, GELU, Linear) maps "
            "onto transformers' LLaVA projector"
        )
    if cfg.get("mm_use_im_start_end"):
        raise ConversionError("mm_use_im_start_end=True (<im_start>/<im_end> around images) is not supported")
    merge = cfg.get("mm_patch_merge_type", "flat")
    if merge != "flat":
        log.warning(
            "mm_patch_merge_type=%r in the projector config: converted as 'flat' (729 tokens per image, no "
            "image_newline; a stage-1 checkpoint has no trained image_newline)",
            merge,
        )
    tower = str(cfg.get("mm_vision_tower", ""))
    if tower and "siglip" not in tower.lower():
        raise ConversionError(f"mm_vision_tower={tower!r}: only SigLIP towers are supported")


def _aspect_mode(cfg: dict, override: str | None) -> str:
    mode = override or cfg.get("image_aspect_ratio") or "square"
    if mode not in ("square", "pad"):
        log.warning("image_aspect_ratio=%r: converted as 'square' (one 384 px view, 729 tokens, no anyres)", mode)
        mode = "square"
    return mode


# ---------------------------------------------------------------------------------------------------- the processor
def build_processor(tokenizer, image_size: int, patch_size: int, aspect: str = "square"):
    """`LlavaProcessor`: `<image>` -> (image_size // patch_size) ** 2 tokens; exact resize to image_size (pad first
    to a mean-coloured square when `aspect == "pad"`, as LLaVA's `expand2square`)."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    size = {"height": image_size, "width": image_size}
    image_processor = LlavaImageProcessor(
        size=size,
        crop_size=size,
        do_center_crop=False,
        do_pad=aspect == "pad",
        resample=3,  # bicubic
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_STD,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
        image_token=IMAGE_TOKEN,
        chat_template=PLAIN_TEMPLATE,
    )


# ------------------------------------------------------------------------------------------------------ conversion
def convert_llava_ov_projector(
    projector,
    llm,
    vision,
    out,
    dtype="float16",
    image_aspect_ratio: str | None = None,
    projector_config=None,
    trim_vocab: bool = False,
) -> Path:
    """Write a transformers LLaVA checkpoint + processor to `out` from a LLaVA-NeXT stage-1 projector checkpoint.

    projector: folder with `mm_projector.bin` (+ `config.json`), or the `.bin` file itself;
    llm: the base LLM folder (weights + tokenizer); vision: the SigLIP folder (full SigLIP or vision-only);
    dtype: storage dtype (`float16` = what the RADAR LLaVA script runs in; `bfloat16`, `float32`);
    image_aspect_ratio: `square` / `pad` (default: the projector config's, `square` if absent or anyres);
    trim_vocab: drop the LLM's padding rows beyond the tokenizer (+ `<image>`), as LLaVA-NeXT's loader does with
    `resize_token_embeddings(len(tokenizer))`: raw logits are the same either way, log-softmax / NLL then sums over
    the original's vocabulary plus the one `<image>` entry.
    """
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        SiglipVisionModel,
    )

    torch_dtype = resolve_dtype(dtype)
    out = Path(out)
    weights_file, config_file = find_projector(projector, projector_config)
    src_cfg = read_json(config_file) if config_file else {}
    if not config_file:
        log.warning("no config.json found for %s: assuming mlp2x_gelu, square images, flat tokens", weights_file)
    linears = projector_linears(load_tensor_file(weights_file))
    _check_source_config(src_cfg, len(linears))
    aspect = _aspect_mode(src_cfg, image_aspect_ratio)

    # --- vision tower: SigLIP with the last encoder layer dropped, as LLaVA-NeXT's SigLipVisionTower does
    with quiet_transformers():  # a full SigLIP folder also holds the text tower: reported as unused keys
        vis_model = SiglipVisionModel.from_pretrained(vision, dtype=torch_dtype)
    vis_cfg = vis_model.config
    if vis_cfg.model_type != "siglip_vision_model":
        raise ConversionError(f"{vision}: a SigLIP tower is required, got model_type {vis_cfg.model_type!r}")
    n_layers = vis_cfg.num_hidden_layers
    vis_state = {}
    for key, value in vis_model.state_dict().items():
        m = _LAYER_KEY.search(key)
        if (m and int(m.group(1)) == n_layers - 1) or key.startswith("head.") or ".head." in key:
            continue
        vis_state["model.vision_tower." + key] = value
    vision_config = vis_cfg.to_dict()
    vision_config.update(num_hidden_layers=n_layers - 1, vision_use_head=False)
    del vis_model

    # --- language model and tokenizer
    # trust_remote_code=False: a converter never runs (nor asks to run) a repository's own code
    lm = AutoModelForCausalLM.from_pretrained(llm, dtype=torch_dtype, trust_remote_code=False)
    text_config = lm.config
    tokenizer = AutoTokenizer.from_pretrained(
        llm, trust_remote_code=False, extra_special_tokens={"image_token": IMAGE_TOKEN}
    )
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    base = getattr(lm, lm.base_model_prefix)
    lm_state = {"model.language_model." + k: v for k, v in base.state_dict().items()}
    embed_key = "model.language_model." + next(
        k for k, v in base.named_parameters() if v is base.get_input_embeddings().weight
    )
    tied = bool(getattr(text_config, "tie_word_embeddings", False))
    lm_head = lm.get_output_embeddings().weight.detach()
    lm_state["lm_head.weight"] = lm_state[embed_key] if tied else lm_head
    vocab = lm_state[embed_key].shape[0]
    if image_token_id >= vocab:
        grow = image_token_id + 1 - vocab
        log.warning(
            "the LLM embedding has no spare row for %s: growing the vocabulary %d -> %d with zero rows "
            "(raw logits of the other tokens are unchanged; log-softmax gains one entry)",
            IMAGE_TOKEN,
            vocab,
            vocab + grow,
        )
        for key in {embed_key, "lm_head.weight"}:
            lm_state[key] = grow_rows(lm_state[key], vocab + grow)
        if tied:
            lm_state["lm_head.weight"] = lm_state[embed_key]
    elif trim_vocab and vocab > len(tokenizer):
        # LLaVA-NeXT's load_pretrained_model calls resize_token_embeddings(len(tokenizer)), which drops the LLM's
        # padding rows (Qwen2-0.5B: 151936 -> 151646); keep those tokens + <image> so log-softmax matches closely
        log.info("trimming the vocabulary %d -> %d rows (len(tokenizer) incl. %s)", vocab, len(tokenizer), IMAGE_TOKEN)
        for key in {embed_key, "lm_head.weight"}:
            lm_state[key] = lm_state[key][: len(tokenizer)].clone()
        if tied:
            lm_state["lm_head.weight"] = lm_state[embed_key]
    text_config.vocab_size = lm_state[embed_key].shape[0]
    hidden = text_config.hidden_size
    del lm

    # --- projector: mm_projector.0 -> linear_1, mm_projector.2 -> linear_2
    (w1, b1), (w2, b2) = linears
    if tuple(w1.shape) != (hidden, vis_cfg.hidden_size) or tuple(w2.shape) != (hidden, hidden):
        raise ConversionError(
            f"projector shapes {tuple(w1.shape)}, {tuple(w2.shape)} do not fit vision width {vis_cfg.hidden_size} and "
            f"LLM width {hidden} (wrong --llm or --vision for this projector?)"
        )
    for name, want in (("mm_hidden_size", vis_cfg.hidden_size), ("hidden_size", hidden)):
        if name in src_cfg and src_cfg[name] != want:
            raise ConversionError(f"projector config {name}={src_cfg[name]} but the given model has {want}")
    proj_state = {
        "model.multi_modal_projector.linear_1.weight": w1,
        "model.multi_modal_projector.linear_1.bias": b1,
        "model.multi_modal_projector.linear_2.weight": w2,
        "model.multi_modal_projector.linear_2.bias": b2,
    }

    n_patches = (vis_cfg.image_size // vis_cfg.patch_size) ** 2
    config = LlavaConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config,
        image_token_index=image_token_id,
        image_seq_length=n_patches,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        multimodal_projector_bias=True,
        tie_word_embeddings=tied,
    )
    config.architectures = ["LlavaForConditionalGeneration"]
    out.mkdir(parents=True, exist_ok=True)
    save_model(LlavaForConditionalGeneration, config, {**vis_state, **lm_state, **proj_state}, out, torch_dtype)

    processor = build_processor(tokenizer, vis_cfg.image_size, vis_cfg.patch_size, aspect)
    processor.save_pretrained(out)
    record = {
        "converter": "radar_tasks.convert.llava_ov_projector",
        "projector": str(weights_file),
        "projector_config": str(config_file) if config_file else None,
        "llm": str(llm),
        "vision": str(vision),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "image_aspect_ratio": aspect,
        "vocab_size": text_config.vocab_size,
        "tokens_per_image": n_patches,
        "image_token_id": image_token_id,
        "vision_layers_kept": n_layers - 1,
        "source_mm_config": {k: v for k, v in src_cfg.items() if k.startswith(("mm_", "image_"))},
    }
    (out / "radar_conversion.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s: %d tokens per image, <image> = %d", out, n_patches, image_token_id)
    return out
