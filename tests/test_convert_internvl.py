"""InternVL remote-code checkpoints -> transformers InternVL: same logits as the original forward, same tiling.

The source is synthetic, in the original `InternVLChatModel` layout (OpenGVLab's modeling_internvl_chat.py /
modeling_intern_vit.py): `vision_model.*` InternViT keys (fused `attn.qkv`, `ls1`/`ls2`, `norm1`/`norm2`,
`class_embedding`, `position_embedding`), `mlp1.{0,1,3}`, `language_model.model.*` + `language_model.lm_head.weight`
of a Qwen3 LLM (as InternVL3.5), bf16, sharded safetensors with an index, a config.json with `vision_config` /
`llm_config` / `template` / `ps_version` ..., and a tokenizer holding <img>, </img>, <IMG_CONTEXT> (no <video>).
Real geometry (448 px tiles, 14 px patches, pixel shuffle 0.5 -> 256 tokens per tile), tiny widths.

The reference is a plain-torch InternVLChatModel forward written here from the original code (InternViT blocks,
CLS dropped, pixel shuffle v2, mlp1, `<img><IMG_CONTEXT>*256*n</img>` prompt expansion, LLM on the embeddings) and
InternVL's own `dynamic_preprocess` + `build_transform` for the pixels, independent of the converter.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

TILE, PATCH, RATIO = 448, 14, 0.5
TOKENS_PER_TILE = int((TILE // PATCH) ** 2 * RATIO**2)  # 256
V_HID, V_FF, V_LAYERS, V_HEADS = 32, 64, 2, 2
T_HID = 64
SYSTEM = "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
]


def _original_state_dict(seed: int) -> tuple[dict, dict]:
    """(state dict in the InternVLChatModel layout, llm_config) with random weights."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    llm_config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": T_HID,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": 448,
        "tie_word_embeddings": False,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 2,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
        # remote-code leftovers that real configs carry
        "_name_or_path": "Qwen/Qwen3-0.6B",
        "attn_implementation": "flash_attention_2",
        "_attn_implementation_autoset": True,
    }
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.2, mean=0.0):
        return torch.randn(*shape, generator=g) * std + mean

    sd = {
        "vision_model.embeddings.class_embedding": rnd(1, 1, V_HID),
        "vision_model.embeddings.patch_embedding.weight": rnd(V_HID, 3, PATCH, PATCH, std=0.05),
        "vision_model.embeddings.patch_embedding.bias": rnd(V_HID, std=0.05),
        "vision_model.embeddings.position_embedding": rnd(1, (TILE // PATCH) ** 2 + 1, V_HID),
    }
    for i in range(V_LAYERS):
        p = f"vision_model.encoder.layers.{i}."
        sd.update(
            {
                p + "attn.qkv.weight": rnd(3 * V_HID, V_HID),
                p + "attn.qkv.bias": rnd(3 * V_HID, std=0.05),
                p + "attn.proj.weight": rnd(V_HID, V_HID),
                p + "attn.proj.bias": rnd(V_HID, std=0.05),
                p + "mlp.fc1.weight": rnd(V_FF, V_HID),
                p + "mlp.fc1.bias": rnd(V_FF, std=0.05),
                p + "mlp.fc2.weight": rnd(V_HID, V_FF),
                p + "mlp.fc2.bias": rnd(V_HID, std=0.05),
                p + "norm1.weight": rnd(V_HID, std=0.1, mean=1),
                p + "norm1.bias": rnd(V_HID, std=0.05),
                p + "norm2.weight": rnd(V_HID, std=0.1, mean=1),
                p + "norm2.bias": rnd(V_HID, std=0.05),
                p + "ls1": rnd(V_HID, std=0.1, mean=0.5),
                p + "ls2": rnd(V_HID, std=0.1, mean=0.5),
            }
        )
    ps = V_HID * int(1 / RATIO) ** 2
    sd.update(
        {
            "mlp1.0.weight": rnd(ps, std=0.1, mean=1),
            "mlp1.0.bias": rnd(ps, std=0.05),
            "mlp1.1.weight": rnd(T_HID, ps, std=0.1),
            "mlp1.1.bias": rnd(T_HID, std=0.05),
            "mlp1.3.weight": rnd(T_HID, T_HID),
            "mlp1.3.bias": rnd(T_HID, std=0.05),
        }
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = {
            k: v
            for k, v in llm_config.items()
            if not k.startswith("_") and k not in ("attn_implementation", "torch_dtype")
        }
        llm = Qwen3ForCausalLM(Qwen3Config(**cfg))
    sd.update({"language_model." + k: v for k, v in llm.state_dict().items()})
    return sd, llm_config


def build_source(root, select_layer: int = -1, seed: int = 0):
    from safetensors.torch import save_file

    from radar_tasks.demo.tiny_models import tiny_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    sd, llm_config = _original_state_dict(seed)
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}  # released weights are bf16
    keys = sorted(sd)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, part in shards.items():
        save_file({k: sd[k] for k in part}, str(root / name), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    vision_config = {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "hidden_size": V_HID,
        "intermediate_size": V_FF,
        "num_hidden_layers": V_LAYERS,
        "num_attention_heads": V_HEADS,
        "image_size": TILE,
        "patch_size": PATCH,
        "num_channels": 3,
        "qkv_bias": True,
        "qk_normalization": False,
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "initializer_factor": 0.1,
        "initializer_range": 1e-10,
        "use_flash_attn": True,
    }
    config = {
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "auto_map": {
            "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
            "AutoModel": "modeling_internvl_chat.InternVLChatModel",
        },
        "downsample_ratio": RATIO,
        "dynamic_image_size": True,
        "force_image_size": TILE,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "ps_version": "v2",
        "select_layer": select_layer,
        "template": "internvl2_5",
        "use_thumbnail": True,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "pad2square": False,
        "torch_dtype": "bfloat16",
        "vision_config": vision_config,
        "llm_config": llm_config,
    }
    (root / "config.json").write_text(json.dumps(config))
    tiny_tokenizer(SPECIALS, eos_token="<|im_end|>", pad_token="<|endoftext|>").save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return build_source(tmp_path_factory.mktemp("internvl_src") / "InternVL3_5-1B-Pretrained")


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    from radar_tasks.convert.internvl import convert_internvl

    return convert_internvl(source, tmp_path_factory.mktemp("internvl_hf") / "converted", dtype="float32")


def _pil_processor(folder):
    """The converted processor with the PIL image backend (the original resizes with PIL). AutoProcessor's
    `backend="pil"` cannot be used: the video processor has no PIL backend."""
    from transformers import AutoImageProcessor, AutoProcessor

    pil = AutoImageProcessor.from_pretrained(folder, backend="pil")
    return AutoProcessor.from_pretrained(folder, image_processor=pil)


def _noise(w, h, seed=0):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


# --------------------------------------------------------------- the reference: InternVL's own preprocessing + model
def _closest_grid(aspect, ratios, width, height, size):
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for r in ratios:
        diff = abs(aspect - r[0] / r[1])
        if diff < best_diff:
            best_diff, best = diff, r
        elif diff == best_diff and area > 0.5 * size * size * r[0] * r[1]:
            best = r
    return best


def dynamic_preprocess(image, min_num=1, max_num=3, size=TILE):
    """InternVL's tiling: grid with the closest aspect ratio, crops, + thumbnail when more than one tile."""
    w, h = image.size
    ratios = sorted(
        {
            (i, j)
            for n in range(min_num, max_num + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if min_num <= i * j <= max_num
        },
        key=lambda r: r[0] * r[1],
    )
    cols, rows = _closest_grid(w / h, ratios, w, h, size)
    resized = image.resize((size * cols, size * rows))  # PIL default: bicubic
    tiles = [
        resized.crop(((k % cols) * size, (k // cols) * size, (k % cols + 1) * size, (k // cols + 1) * size))
        for k in range(cols * rows)
    ]
    if len(tiles) != 1:
        tiles.append(image.resize((size, size)))
    return tiles


def internvl_pixels(image, max_num=3) -> torch.Tensor:
    """dynamic_preprocess + build_transform (RGB, 448 resize = identity on tiles, ToTensor, ImageNet Normalize)."""
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    arrays = [
        ((np.asarray(t.convert("RGB"), np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
        for t in dynamic_preprocess(image, max_num=max_num)
    ]
    return torch.from_numpy(np.stack(arrays))


def _sd(source) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(source.glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(str(f)).items()})
    return out


def intern_vit(sd, pixels, select_layer=-1):
    """InternVisionModel forward (layer_norm variant, naive attention); returns hidden_states[select_layer]."""
    p = "vision_model."
    x = F.conv2d(
        pixels, sd[p + "embeddings.patch_embedding.weight"], sd[p + "embeddings.patch_embedding.bias"], stride=PATCH
    )
    b, _, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2)
    pos = sd[p + "embeddings.position_embedding"]
    n = TILE // PATCH
    grid = pos[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
    grid = grid.reshape(1, -1, gh * gw).permute(0, 2, 1)
    x = torch.cat([sd[p + "embeddings.class_embedding"].expand(b, 1, -1), x], dim=1)
    x = x + torch.cat([pos[:, :1], grid], dim=1)
    states = [x]
    hd = V_HID // V_HEADS
    for i in range(V_LAYERS):
        q = f"{p}encoder.layers.{i}."
        h = F.layer_norm(x, (V_HID,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"])
        qkv = qkv.reshape(b, -1, 3, V_HEADS, hd).permute(2, 0, 3, 1, 4)
        att = ((qkv[0] * hd**-0.5) @ qkv[1].transpose(-2, -1)).softmax(-1) @ qkv[2]
        att = F.linear(att.transpose(1, 2).reshape(b, -1, V_HID), sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"])
        x = x + att * sd[q + "ls1"]
        h = F.layer_norm(x, (V_HID,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], eps=1e-6)
        h = F.linear(
            F.gelu(F.linear(h, sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"])),
            sd[q + "mlp.fc2.weight"],
            sd[q + "mlp.fc2.bias"],
        )
        x = x + h * sd[q + "ls2"]
        states.append(x)
    return states[select_layer]


def extract_feature(sd, pixels, select_layer=-1):
    """InternVLChatModel.extract_feature: ViT, drop CLS, pixel shuffle v2, mlp1."""
    x = intern_vit(sd, pixels, select_layer)[:, 1:]
    side = math.isqrt(x.shape[1])
    x = x.reshape(x.shape[0], side, side, -1)
    n, w, h, c = x.shape
    x = x.view(n, w, int(h * RATIO), int(c / RATIO)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * RATIO), int(w * RATIO), int(c / RATIO**2)).permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, -1, x.shape[-1])
    x = F.layer_norm(x, (x.shape[-1],), sd["mlp1.0.weight"], sd["mlp1.0.bias"], eps=1e-5)
    x = F.linear(F.gelu(F.linear(x, sd["mlp1.1.weight"], sd["mlp1.1.bias"])), sd["mlp1.3.weight"], sd["mlp1.3.bias"])
    return x


@torch.no_grad()
def reference_logits(source, query: str, images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, input_ids, pixel_values) of the original chat-style forward: each <image> -> <img> + 256*n
    <IMG_CONTEXT> + </img>, embeddings at <IMG_CONTEXT> replaced by the ViT features, then the LLM."""
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    sd = _sd(source)
    cfg = json.loads((source / "config.json").read_text())
    lc = {
        k: v
        for k, v in cfg["llm_config"].items()
        if not k.startswith("_") and k not in ("attn_implementation", "torch_dtype")
    }
    llm = Qwen3ForCausalLM(Qwen3Config(**lc)).eval()
    llm.load_state_dict({k[len("language_model.") :]: v for k, v in sd.items() if k.startswith("language_model.")})
    tokenizer = AutoTokenizer.from_pretrained(source)
    pixels = [internvl_pixels(im) for im in images]
    for px in pixels:
        query = query.replace("<image>", "<img>" + "<IMG_CONTEXT>" * TOKENS_PER_TILE * len(px) + "</img>", 1)
    ids = torch.tensor(tokenizer(query).input_ids)
    all_px = torch.cat(pixels)
    feats = extract_feature(sd, all_px, cfg["select_layer"]).reshape(-1, T_HID)
    emb = llm.get_input_embeddings()(ids).clone()
    sel = ids == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    emb[sel] = feats
    return llm(inputs_embeds=emb[None]).logits[0], ids, all_px


# ------------------------------------------------------------------------------------------------------------ tests
def test_loads_with_auto_classes(converted):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(converted, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(converted)
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    assert type(processor).__name__ == "InternVLProcessor"
    assert type(model.model.language_model).__name__ == "Qwen3Model"
    assert processor.image_token == "<IMG_CONTEXT>" and processor.image_seq_length == TOKENS_PER_TILE == 256
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.model.language_model.embed_tokens.weight.data_ptr()
    ip = processor.image_processor
    assert (ip.crop_to_patches, ip.min_patches, ip.max_patches) == (True, 1, 3)
    assert (ip.size.height, ip.size.width) == (TILE, TILE)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n<IMG_CONTEXT>\nQ<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    ("size", "tiles"),
    [
        ((448, 448), 1),
        ((300, 200), 1),  # aspect tie 1:1 vs 2:1, small image: stays one tile
        ((600, 400), 3),  # the same tie, area > half of 2 tiles: 2x1 + thumbnail
        ((500, 300), 3),
        ((1400, 400), 4),
        ((400, 1300), 4),
        ((1000, 1000), 1),  # max 3 tiles: no 2x2
    ],
)
def test_tiling_matches_dynamic_preprocess(converted, size, tiles):
    from transformers import AutoProcessor

    image = _noise(*size, seed=size[0])
    processor = _pil_processor(converted)
    enc = processor(text=["<IMG_CONTEXT>x"], images=[image], return_tensors="pt")
    want = internvl_pixels(image)
    assert want.shape[0] == tiles and enc["pixel_values"].shape == want.shape
    assert torch.allclose(enc["pixel_values"], want, atol=1e-5)
    n_ctx = int((enc["input_ids"] == processor.image_token_id).sum())
    assert n_ctx == TOKENS_PER_TILE * tiles
    # the default (torchvision) backend picks the same grid; pixels differ only by its resize kernel
    fast = AutoProcessor.from_pretrained(converted)(text=["<IMG_CONTEXT>x"], images=[image], return_tensors="pt")
    assert fast["pixel_values"].shape == want.shape


def test_logits_match_original_forward(converted, source):
    from transformers import AutoModelForImageTextToText

    images = [_noise(600, 400, seed=1), _noise(300, 200, seed=2)]  # 3 tiles (2x1 + thumbnail), 1 tile
    model = AutoModelForImageTextToText.from_pretrained(converted, dtype=torch.float32).eval()
    processor = _pil_processor(converted)
    head = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    tail = "Which animal is this?<|im_end|>\n<|im_start|>assistant\nA dog"
    ref, ref_ids, ref_px = reference_logits(source, head + "<image>\n<image>\n" + tail, images)
    enc = processor(text=[head + "<IMG_CONTEXT>\n<IMG_CONTEXT>\n" + tail], images=images, return_tensors="pt")
    assert enc["input_ids"][0].tolist() == ref_ids.tolist()
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 4 * TOKENS_PER_TILE
    assert torch.allclose(enc["pixel_values"], ref_px, atol=1e-5)
    with torch.no_grad():
        got = model(**enc).logits[0]
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), float((got - ref).abs().max())


def test_select_layer_and_tied_embeddings(tmp_path):
    """select_layer=-2 picks the same ViT layer as the original; a tied LLM stays tied."""
    from transformers import AutoModelForImageTextToText

    from radar_tasks.convert.internvl import convert_internvl

    src = build_source(tmp_path / "src", select_layer=-2, seed=3)
    cfg = json.loads((src / "config.json").read_text())
    cfg["llm_config"]["tie_word_embeddings"] = True
    (src / "config.json").write_text(json.dumps(cfg))
    out = convert_internvl(src, tmp_path / "out", dtype="float32")
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    assert model.config.vision_feature_layer == -2 and model.config.tie_word_embeddings
    assert torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)
    px = internvl_pixels(_noise(448, 448))
    with torch.no_grad():
        got = model.model.get_image_features(pixel_values=px, return_dict=True).pooler_output
    want = extract_feature(_sd(src), px, select_layer=-2)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), float((got - want).abs().max())


def test_rejects_v1_pixel_shuffle(tmp_path, source):
    from radar_tasks.convert._common import ConversionError
    from radar_tasks.convert.internvl import convert_internvl

    cfg = json.loads((source / "config.json").read_text())
    cfg["ps_version"] = "v1"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="ps_version"):
        convert_internvl(bad, tmp_path / "out")


def test_cli(tmp_path, source):
    import argparse

    from radar_tasks.convert.cli import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "convert-internvl",
            "--src",
            str(source),
            "--out",
            str(tmp_path / "o"),
            "--max-tiles",
            "6",
            "--system-message",
            "You are a helpful assistant.",
        ]
    )
    assert args.fn(args) == 0
    record = json.loads((tmp_path / "o" / "radar_conversion.json").read_text())
    assert record["dtype"] == "bfloat16" and record["max_tiles"] == 6
    assert record["system_message"] == "You are a helpful assistant."


def test_scores_with_radar_likelihood(converted):
    """The converted folder goes through radar_hf's loader and scorer like any hub checkpoint."""
    import math

    from radar_tasks.models.likelihood import load_model, score_continuations
    from radar_tasks.prompts import IMAGE_MARKER

    model, processor = load_model(str(converted), device="cpu", dtype="float32")
    context = (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{IMAGE_MARKER}\nWhich animal is this?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    scores = score_continuations(model, processor, context, [_noise(300, 200)], ["A dog", "A cat"])
    assert all(s.n_tokens > 0 and s.prefix_ok and math.isfinite(s.mean_logit) for s in scores)


def test_never_asks_to_run_remote_code_and_keeps_the_system_message(tmp_path, source, monkeypatch):
    """Released InternVL configs carry an `auto_map`: without trust_remote_code=False, transformers asks "Do you
    wish to run the custom code?" (and waits). The converted config keeps the system message (the source config's
    when it has one, as the original model reads it)."""
    import shutil

    from radar_tasks.convert.internvl import convert_internvl

    assert "auto_map" in json.loads((source / "config.json").read_text())
    asked = []
    monkeypatch.setattr("builtins.input", lambda *a, **k: asked.append(a) or "n")
    out = convert_internvl(source, tmp_path / "default", dtype="float32")
    assert not asked
    assert json.loads((out / "config.json").read_text())["system_message"] == SYSTEM
    own = tmp_path / "src-own-system"
    shutil.copytree(source, own)
    cfg = json.loads((own / "config.json").read_text())
    (own / "config.json").write_text(json.dumps(dict(cfg, system_message="You are InternVL.")))
    out = convert_internvl(own, tmp_path / "own", dtype="float32")
    assert json.loads((out / "config.json").read_text())["system_message"] == "You are InternVL." and not asked
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).system_message == "You are InternVL."
