"""Tiny random-weight multimodal checkpoints for tests, built offline in about a second.

`build_tiny_model(out_dir, arch)` writes a folder that loads exactly like a hub checkpoint:
`AutoModelForImageTextToText.from_pretrained(out_dir)` and `AutoProcessor.from_pretrained(out_dir)`.
The architecture, processor and image-processor classes are the real transformers ones; only the sizes are tiny
(64-wide, 2-layer language model, 32 px vision tiles) and the tokenizer is a byte-level BPE trained here on a few
sentences, with the special tokens of each family. Weights are random (seeded), so scores are meaningless but the
code paths (image-token expansion, position ids, masking) are the real ones.
"""

from __future__ import annotations

from pathlib import Path

TINY_ARCHS = ("qwen2_vl", "qwen2_5_vl", "llava_onevision", "internvl", "idefics3", "llava")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is shown in the image? Answer: a cat sitting on a red sofa.",
    "Which animal is this? A dog, a bird, a horse or a tiger.",
    "The plant in the picture is a sunflower, a rose or an oak tree.",
    "Please select the correct option: A. B. C. D.",
    "What is the value of x in the equation 2x + 3 = 11? The answer is 4.",
    "Describe the scene: people walking in a park near the river at sunset.",
    "Hint: the force acts on the block; the velocity of the ball is 3 m/s.",
]

_VOCAB_SIZE = 400  # byte alphabet (256) + merges + special tokens

# Language model and vision tower sizes shared by all archs: small enough for ~0.1 s forwards on a CPU.
_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
_VIS = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}

# Jinja chat templates, shortened versions of each family's own (enough for apply_chat_template to work).
_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}IMAGE{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _chatml(image_text: str, system: str = "") -> str:
    """ChatML with `image_text` per image item and, if given, a default system message (Qwen2-VL, InternVL)."""
    default_system = (
        f"{{% if messages[0]['role'] != 'system' %}}<|im_start|>system\n{system}<|im_end|>\n{{% endif %}}"
        if system
        else ""
    )
    return default_system + _CHATML.replace("IMAGE", image_text)


_ROLE_TEMPLATE = (  # Idefics3 / LLaVA-1.5 style "User: ... Assistant:" templates
    "{{ BOS }}{% for message in messages %}{{ message['role'] | capitalize }}{{ SEP }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ EOT }}{% endfor %}"
    "{% if add_generation_prompt %}Assistant{{ SEP }}{% endif %}"
)


def _role_template(bos: str, sep: str, eot: str) -> str:
    return _ROLE_TEMPLATE.replace("BOS", repr(bos)).replace("SEP", repr(sep)).replace("EOT", repr(eot))


def tiny_tokenizer(specials: list[str], bos: str | None = None, named: dict | None = None, **kwargs):
    """Byte-level BPE trained on `_CORPUS`; `specials` get the first ids (never split); BOS prepended if given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    if bos is not None:  # Llama-family tokenizers prepend BOS; this path exercises that in the scorer
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if named:  # named special tokens become attributes (tokenizer.image_token, ...), as in the real configs
        kwargs["extra_special_tokens"] = named
    if bos is not None:
        kwargs["bos_token"] = bos
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _text_cfg(tokenizer, **extra) -> dict:
    return dict(_TEXT, vocab_size=len(tokenizer), **extra)


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


# --------------------------------------------------------------------------------------------- per-family builders
# Each returns (config, processor); the model class is resolved by AutoModelForImageTextToText from the config.


def _qwen2_vl(version: str):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = tiny_tokenizer(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    image_id, video_id, vstart, vend = _ids(
        tokenizer, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    )
    # 28 px = one merged 2x2 block of 14 px patches: 4..16 visual tokens per image
    pixels = {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28}
    vision = {"depth": 2, "num_heads": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    ids = {
        "image_token_id": image_id,
        "video_token_id": video_id,
        "vision_start_token_id": vstart,
        "vision_end_token_id": vend,
    }
    # M-RoPE: the (temporal, height, width) sections must sum to head_dim / 2 = 64 / 4 / 2
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    text = _text_cfg(tokenizer, rope_parameters=rope, bos_token_id=None, eos_token_id=_ids(tokenizer, "<|im_end|>")[0])
    if version == "2":
        config = Qwen2VLConfig(
            text_config=text, vision_config=dict(vision, embed_dim=32, hidden_size=64, mlp_ratio=2), **ids
        )
        proc_cls = Qwen2VLProcessor
    else:
        config = Qwen2_5_VLConfig(
            text_config=text,
            vision_config=dict(
                vision,
                hidden_size=32,
                intermediate_size=64,
                out_hidden_size=64,
                window_size=56,
                fullatt_block_indexes=[1],
            ),
            **ids,
        )
        proc_cls = Qwen2_5_VLProcessor
    template = _chatml("<|vision_start|><|image_pad|><|vision_end|>", system="You are a helpful assistant.")
    processor = proc_cls(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer,
        chat_template=template,
    )
    return config, processor


def _llava_onevision():
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    tokenizer = tiny_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        named={"image_token": "<image>", "video_token": "<video>"},
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    # SigLIP-like tower: 32 px tiles of 8 px patches = 16 tokens per tile (no CLS, "full" selection);
    # anyres grid of up to 2x2 tiles, as LLaVA-OV's (much larger) grid.
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    config = LlavaOnevisionConfig(
        text_config=dict(_text_cfg(tokenizer), model_type="qwen2"),
        vision_config=dict(_VIS, model_type="siglip_vision_model", image_size=32, patch_size=8),
        image_token_index=_ids(tokenizer, "<image>")[0],
        video_token_index=_ids(tokenizer, "<video>")[0],
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    size = {"height": 32, "width": 32}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=_chatml("<image>"),
    )
    return config, processor


def _internvl():
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLProcessor, InternVLVideoProcessor

    named = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tokenizer = tiny_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *named.values()],
        named=named,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    # 32 px tiles, 8 px patches, pixel-shuffle 0.5: 4 <IMG_CONTEXT> tokens per tile; 1..4 tiles + thumbnail
    config = InternVLConfig(
        text_config=dict(_text_cfg(tokenizer), model_type="qwen2"),
        vision_config=dict(_VIS, image_size=32, patch_size=8),
        image_token_id=_ids(tokenizer, "<IMG_CONTEXT>")[0],
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    size = {"height": 32, "width": 32}
    imagenet = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, max_patches=4, **imagenet),
        video_processor=InternVLVideoProcessor(size=size, **imagenet),
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=_chatml("<IMG_CONTEXT>\n", system="You are a helpful assistant."),
    )
    return config, processor


def _idefics3():
    from transformers import Idefics3Config, Idefics3ImageProcessor, Idefics3Processor

    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tokenizer = tiny_tokenizer(
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<fake_token_around_image>",
            "<image>",
            "<end_of_utterance>",
            "<global-img>",
            *rows,
        ],
        bos="<|begin_of_text|>",
        eos_token="<end_of_utterance>",
        pad_token="<|end_of_text|>",
    )
    # 32 px crops of 8 px patches, pixel-shuffle x2: 4 <image> tokens per crop; images split into up to 2x2 crops
    config = Idefics3Config(
        text_config=dict(_text_cfg(tokenizer), model_type="llama"),
        vision_config=dict(_VIS, image_size=32, patch_size=8),
        image_token_id=_ids(tokenizer, "<image>")[0],
        scale_factor=2,
    )
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}),
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=_role_template("<|begin_of_text|>", ":", "<end_of_utterance>\n"),
    )
    return config, processor


def _llava():
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor

    tokenizer = tiny_tokenizer(
        ["<unk>", "<s>", "</s>", "<image>", "<pad>"], bos="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    # CLIP-like tower: 32 px, 8 px patches = 16 patch tokens (+ CLS dropped by the "default" selection)
    config = LlavaConfig(
        text_config=dict(_text_cfg(tokenizer), model_type="llama"),
        vision_config=dict(_VIS, model_type="clip_vision_model", image_size=32, patch_size=8, projection_dim=32),
        image_token_index=_ids(tokenizer, "<image>")[0],
        image_seq_length=16,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_role_template("", ": ", " "),
    )
    return config, processor


_BUILDERS = {
    "qwen2_vl": lambda: _qwen2_vl("2"),
    "qwen2_5_vl": lambda: _qwen2_vl("2.5"),
    "llava_onevision": _llava_onevision,
    "internvl": _internvl,
    "idefics3": _idefics3,
    "llava": _llava,
}


def tiny_config_and_processor(arch: str):
    """`(config, processor)` of the tiny `arch` (one of TINY_ARCHS), in memory: the tiny sizes, the trained tokenizer,
    the family's token ids and chat template (benchmarks build real sizes around the tokenizer)."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny arch {arch!r}; known: {', '.join(TINY_ARCHS)}")
    return _BUILDERS[arch]()


def build_tiny_model(out_dir, arch: str, seed: int = 0) -> Path:
    """Write a tiny random-weight checkpoint of `arch` (one of TINY_ARCHS) and its processor to `out_dir`."""
    config, processor = tiny_config_and_processor(arch)
    return save_random_checkpoint(config, processor, out_dir, seed)


def save_random_checkpoint(config, processor, out_dir, seed: int = 0) -> Path:
    """Initialise a model from `config` with a seeded generator and save it with `processor` to `out_dir`."""
    import torch
    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    # fork_rng: seeding must not leak into the caller's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
