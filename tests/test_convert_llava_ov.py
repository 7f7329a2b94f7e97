"""LLaVA-OneVision stage-1 projector checkpoints -> transformers LLaVA: the converted model scores like the original.

The source is synthetic but in the original layout: a tiny Qwen2 LM folder (save_pretrained + a byte-level BPE
tokenizer with Qwen's special tokens, no <image>), a full SiglipModel folder (as google/siglip-so400m-patch14-384 is)
with the real geometry (384 px, 14 px patches: 27 x 27 = 729 patches) but tiny widths, and `mm_projector.bin` with
LLaVA-NeXT's keys (`model.mm_projector.{0,2}.{weight,bias}`, bf16 as trained) next to a LLaVA-NeXT config.json.

The reference below is written from the LLaVA-NeXT code path, independently of the converter: pixels as its
SigLipImageProcessor (PIL bicubic resize to 384x384, /255, mean = std = 0.5), SigLIP features =
hidden_states[-2] of the *full* tower (LLaVA-NeXT deletes the last layer and takes the new last one; SigLIP has no
CLS), projector = Linear -> exact GELU -> Linear with the raw projector tensors, the prompt tokenised chunk by chunk
around "<image>" (tokenizer_image_token) with the 729 features spliced in, then the LLM on the embeddings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

IMAGE_SIZE, PATCH = 384, 14
N_PATCHES = (IMAGE_SIZE // PATCH) ** 2  # 729, as siglip-so400m-patch14-384
PROMPTS = [
    ("<image>\nWhat animal is this?\n", "A dog"),  # MMBench / MathVista placement, plain template
    ("<image> <image> Which plant is shown?\n", "a sunflower"),  # two images, Wiki placement
]


def _llm_tokenizer():
    from radar_tasks.demo.tiny_models import tiny_tokenizer

    # Qwen2's three special tokens, no <image> (LLaVA-NeXT never adds one: it splits the prompt on "<image>")
    return tiny_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def _build_source(root, vocab_size: int, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipConfig, SiglipModel

    tokenizer = _llm_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        llm = Qwen2ForCausalLM(
            Qwen2Config(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                vocab_size=vocab_size,
                tie_word_embeddings=True,
                max_position_embeddings=4096,
            )
        )
        siglip = SiglipModel(
            SiglipConfig(
                vision_config={
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 3,
                    "num_attention_heads": 2,
                    "image_size": IMAGE_SIZE,
                    "patch_size": PATCH,
                },
                text_config={
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "vocab_size": 64,
                    "bos_token_id": 1,
                    "eos_token_id": 2,
                    "pad_token_id": 0,
                },
            )
        )
        projector = {
            "model.mm_projector.0.weight": torch.randn(64, 32) * 0.3,
            "model.mm_projector.0.bias": torch.randn(64) * 0.1,
            "model.mm_projector.2.weight": torch.randn(64, 64) * 0.3,
            "model.mm_projector.2.bias": torch.randn(64) * 0.1,
        }
    llm.save_pretrained(root / "Qwen2-0.5B-Instruct")
    tokenizer.save_pretrained(root / "Qwen2-0.5B-Instruct")
    siglip.save_pretrained(root / "siglip-so400m-patch14-384")
    run = root / "llavanext-siglip-qwen2-mlp2x_gelu-pretrain_blip558k_plain"
    run.mkdir()
    torch.save({k: v.to(torch.bfloat16) for k, v in projector.items()}, run / "mm_projector.bin")
    config = {  # what LLaVA-NeXT's trainer.model.config.save_pretrained writes (LLM fields + mm_* fields)
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava_qwen",
        "hidden_size": 64,
        "vocab_size": vocab_size,
        "mm_hidden_size": 32,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "square",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_grid_pinpoints": None,
        "tokenizer_model_max_length": 8192,
        "tokenizer_padding_side": "right",
    }
    (run / "config.json").write_text(json.dumps(config))
    return {"projector": run, "llm": root / "Qwen2-0.5B-Instruct", "vision": root / "siglip-so400m-patch14-384"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    # vocab 448 > 400 tokens: spare embedding rows, as Qwen2 (151936 rows, 151646 tokens) -> no resize
    return _build_source(tmp_path_factory.mktemp("llava_src"), vocab_size=448)


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    from radar_tasks.convert.llava_ov_projector import convert_llava_ov_projector

    out = tmp_path_factory.mktemp("llava_hf") / "converted"
    return convert_llava_ov_projector(source["projector"], source["llm"], source["vision"], out, dtype="float32")


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in [(96, 64), (50, 120)]]


# ----------------------------------------------------------------------------------- the reference (original path)
def _siglip_pixels(image, pad: bool = False) -> torch.Tensor:
    """LLaVA-NeXT's SigLipImageProcessor (+ expand2square when image_aspect_ratio == "pad")."""
    from PIL import Image

    if pad:
        w, h = image.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (127, 127, 127))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    x = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC), dtype=np.float32) / 255.0
    return torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1).copy())


@torch.no_grad()
def reference_logits(source, prompt: str, images) -> tuple[torch.Tensor, list]:
    from transformers import AutoTokenizer, Qwen2ForCausalLM, SiglipVisionModel

    tower = SiglipVisionModel.from_pretrained(source["vision"], dtype=torch.float32).eval()
    proj = {k: v.float() for k, v in torch.load(source["projector"] / "mm_projector.bin").items()}
    llm = Qwen2ForCausalLM.from_pretrained(source["llm"], dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(source["llm"])

    pixels = torch.stack([_siglip_pixels(im) for im in images])
    feats = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # full tower, layer -2
    assert feats.shape[1] == N_PATCHES
    feats = F.linear(
        F.gelu(F.linear(feats, proj["model.mm_projector.0.weight"], proj["model.mm_projector.0.bias"])),
        proj["model.mm_projector.2.weight"],
        proj["model.mm_projector.2.bias"],
    )
    embed = llm.get_input_embeddings()
    pieces, layout = [], []
    for i, chunk in enumerate(prompt.split("<image>")):  # tokenizer_image_token: chunks tokenised separately
        if i:
            pieces.append(feats[i - 1])
            layout.append(("image", N_PATCHES))
        ids = tokenizer(chunk).input_ids
        if ids:
            pieces.append(embed(torch.tensor(ids)))
            layout.extend(("text", t) for t in ids)
    logits = llm(inputs_embeds=torch.cat(pieces)[None]).logits[0]
    return logits, layout


# --------------------------------------------------------------------------------------------------------- tests
def test_loads_with_auto_classes(converted):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(converted, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(converted)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert processor.image_token == "<image>" and processor.tokenizer.image_token == "<image>"
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>") == 400
    assert model.config.text_config.vocab_size == 448  # spare rows used, nothing resized
    assert model.config.vision_config.num_hidden_layers == 2  # last SigLIP layer dropped, as LLaVA-NeXT does
    assert not hasattr(model.model, "image_newline")
    record = json.loads((converted / "radar_conversion.json").read_text())
    assert record["tokens_per_image"] == N_PATCHES == 729


@pytest.mark.parametrize("prompt,answer", PROMPTS)
def test_logits_match_original_forward(converted, source, images, prompt, answer):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    n_images = prompt.count("<image>")
    imgs = images[:n_images]
    model = AutoModelForImageTextToText.from_pretrained(converted, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(converted, backend="pil")  # the original resizes with PIL
    text = prompt + answer
    enc = processor(text=[text], images=imgs, return_tensors="pt")
    ids = enc["input_ids"][0]
    image_id = model.config.image_token_id
    assert int((ids == image_id).sum()) == n_images * N_PATCHES  # exactly 729 tokens per image, no newline

    ref, layout = reference_logits(source, text, imgs)
    # same sequence: text ids equal the reference's chunk-wise tokenisation, image runs at the same places
    expected = []
    for kind, value in layout:
        expected += [image_id] * N_PATCHES if kind == "image" else [value]
    assert ids.tolist() == expected
    # pixels: the PIL backend reproduces LLaVA-NeXT's preprocessing
    want_px = torch.stack([_siglip_pixels(im) for im in imgs])
    assert torch.allclose(enc["pixel_values"], want_px, atol=1e-5)
    with torch.no_grad():
        got = model(**enc).logits[0]
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), float((got - ref).abs().max())


def test_projector_file_layout_and_resize(tmp_path, images):
    """An intermediate checkpoint given as the `.bin` file (config found in `<run>/checkpoint-N/`), and an LLM
    with no spare embedding row: the vocabulary grows by one zero row; the other logits still equal the original."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from radar_tasks.convert.llava_ov_projector import convert_llava_ov_projector

    src = _build_source(tmp_path / "src", vocab_size=400, seed=1)  # 400 = len(tokenizer): <image> needs a new row
    run = src["projector"]
    (run / "mm_projector").mkdir()
    (run / "mm_projector.bin").rename(run / "mm_projector" / "checkpoint-500.bin")
    (run / "checkpoint-500").mkdir()
    (run / "config.json").rename(run / "checkpoint-500" / "config.json")
    out = convert_llava_ov_projector(
        run / "mm_projector" / "checkpoint-500.bin", src["llm"], src["vision"], tmp_path / "out", dtype="float32"
    )
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(out, backend="pil")
    assert model.config.text_config.vocab_size == 401 and model.config.image_token_id == 400
    text = "<image> What is it? A cat"
    enc = processor(text=[text], images=images[:1], return_tensors="pt")
    src["projector"] = run / "mm_projector"
    (run / "mm_projector" / "mm_projector.bin").symlink_to(run / "mm_projector" / "checkpoint-500.bin")
    ref, _ = reference_logits(src, text, images[:1])
    with torch.no_grad():
        got = model(**enc).logits[0]
    assert torch.allclose(got[:, :400], ref, atol=1e-5, rtol=0)
    assert torch.all(got[:, 400] == 0)  # the added row is zero


def test_pad_aspect_preprocessing(tmp_path, images):
    """image_aspect_ratio="pad": expand2square with the mean colour (127) before the 384 px resize."""
    from radar_tasks.convert.llava_ov_projector import build_processor

    tokenizer = _llm_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    proc = build_processor(tokenizer, IMAGE_SIZE, PATCH, aspect="pad")
    proc.save_pretrained(tmp_path)
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(tmp_path, backend="pil")
    enc = proc(text=["<image>x"], images=images[1:], return_tensors="pt")
    assert torch.allclose(enc["pixel_values"][0], _siglip_pixels(images[1], pad=True), atol=1e-5)


def test_rejects_unsupported_projector(tmp_path, source):
    from radar_tasks.convert._common import ConversionError
    from radar_tasks.convert.llava_ov_projector import convert_llava_ov_projector

    bad = tmp_path / "proj"
    bad.mkdir()
    torch.save(
        {"model.mm_projector.0.weight": torch.zeros(64, 32), "model.mm_projector.0.bias": torch.zeros(64)},
        bad / "mm_projector.bin",
    )
    with pytest.raises(ConversionError, match="mlp2x_gelu"):
        convert_llava_ov_projector(bad, source["llm"], source["vision"], tmp_path / "out")


def test_cli(tmp_path, source):
    import argparse

    from radar_tasks.convert.cli import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "convert-llava-ov-projector",
            "--projector",
            str(source["projector"]),
            "--llm",
            str(source["llm"]),
            "--vision",
            str(source["vision"]),
            "--out",
            str(tmp_path / "o"),
            "--dtype",
            "bfloat16",
            "--image-aspect-ratio",
            "pad",
            "--trim-vocab",
        ]
    )
    assert args.fn(args) == 0
    record = json.loads((tmp_path / "o" / "radar_conversion.json").read_text())
    assert record["dtype"] == "bfloat16" and record["image_aspect_ratio"] == "pad"
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert config["text_config"]["vocab_size"] == record["vocab_size"] == 401  # 400 tokens + <image>
    bad = parser.parse_args(
        [
            "convert-llava-ov-projector",
            "--projector",
            str(tmp_path / "missing"),
            "--llm",
            "x",
            "--vision",
            "y",
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    assert bad.fn(bad) == 1  # a clear error, no traceback


def test_scores_with_radar_likelihood(converted, images):
    """The converted folder goes through radar_hf's loader and scorer like any hub checkpoint."""
    import math

    from radar_tasks.models.likelihood import load_model, score_continuations
    from radar_tasks.prompts import IMAGE_MARKER

    model, processor = load_model(str(converted), device="cpu", dtype="float32")
    scores = score_continuations(
        model, processor, IMAGE_MARKER + "\nWhat animal is this?\n", images[:1], ["A dog", "A cat"]
    )
    assert all(s.n_tokens > 0 and s.prefix_ok and math.isfinite(s.mean_logit) for s in scores)
