"""`radar-tasks convert-llava-ov-projector` and `radar-tasks convert-internvl` (wired in by radar_tasks.cli)."""

from __future__ import annotations

import argparse
import logging
import sys

# = radar_tasks.models.likelihood.DTYPES (not imported: the parser is built without torch)
DTYPE_NAMES = ("float16", "bfloat16", "float32")

LLAVA_EPILOG = """\
Writes a transformers LlavaForConditionalGeneration folder (model_type "llava": SigLIP tower without its last
layer, mlp2x_gelu projector, the LLM) + LlavaProcessor: 729 <image> tokens per 384 px image, no anyres, no
image_newline, plain chat template. Load it with radar_hf like any checkpoint (pretrained=OUT,dtype=float16).

example:
  radar-tasks convert-llava-ov-projector \\
      --projector projectors/llavanext-google_siglip-so400m-patch14-384-Qwen_Qwen2-0.5B-Instruct-mlp2x_gelu \\
      --llm Qwen2-0.5B-Instruct --vision siglip-so400m-patch14-384 --out llava-ov-0.5b-stage1-hf
"""

INTERNVL_EPILOG = """\
Writes a transformers InternVLForConditionalGeneration folder + InternVLProcessor (448 px tiles, 1..3 tiles by
closest aspect ratio + thumbnail, 256 <IMG_CONTEXT> tokens per tile inside <img>...</img>, the internvl2_5
ChatML template with its system message). No remote code is needed to load it.

example:
  radar-tasks convert-internvl --src InternVL3_5-1B-Pretrained --out InternVL3_5-1B-Pretrained-hf
"""


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _convert_llava(args) -> int:
    from radar_tasks.convert._common import ConversionError
    from radar_tasks.convert.llava_ov_projector import convert_llava_ov_projector

    _setup_logging()
    try:
        out = convert_llava_ov_projector(
            args.projector,
            args.llm,
            args.vision,
            args.out,
            dtype=args.dtype,
            image_aspect_ratio=args.image_aspect_ratio,
            projector_config=args.projector_config,
            trim_vocab=args.trim_vocab,
        )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def _convert_internvl(args) -> int:
    from radar_tasks.convert._common import ConversionError
    from radar_tasks.convert.internvl import convert_internvl

    _setup_logging()
    try:
        out = convert_internvl(
            args.src,
            args.out,
            dtype=args.dtype,
            min_tiles=args.min_tiles,
            max_tiles=args.max_tiles,
            system_message=args.system_message,
        )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


def add_parsers(subparsers) -> None:
    """Add `convert-llava-ov-projector` and `convert-internvl` to an argparse subparsers object (`fn` = handler)."""
    p = subparsers.add_parser(
        "convert-llava-ov-projector",
        help="LLaVA-OneVision stage-1 projector checkpoint (mm_projector.bin) -> transformers LLaVA folder",
        description="Convert a LLaVA-NeXT/OneVision projector-only checkpoint plus its base LLM and SigLIP tower "
        "into one folder that AutoModelForImageTextToText and AutoProcessor load.",
        epilog=LLAVA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--projector",
        required=True,
        help="folder with mm_projector.bin (+ config.json), or the .bin file itself "
        "(e.g. <run>/mm_projector/checkpoint-N.bin)",
    )
    p.add_argument("--llm", required=True, help="base LLM folder (weights + tokenizer), e.g. Qwen2-0.5B-Instruct")
    p.add_argument("--vision", required=True, help="SigLIP folder, e.g. siglip-so400m-patch14-384")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--dtype",
        default="float16",
        choices=DTYPE_NAMES,
        help="storage dtype (default float16, what the RADAR LLaVA script runs in)",
    )
    p.add_argument(
        "--image-aspect-ratio",
        choices=("square", "pad"),
        help="image preprocessing (default: the projector config's; square if absent or anyres)",
    )
    p.add_argument("--projector-config", help="the run's config.json, when not found next to the projector")
    p.add_argument(
        "--trim-vocab",
        action="store_true",
        help="drop the LLM's padding embedding rows beyond the tokenizer, as LLaVA-NeXT's loader does "
        "(changes log-softmax/NLL only, not raw logits)",
    )
    p.set_defaults(fn=_convert_llava)

    p = subparsers.add_parser(
        "convert-internvl",
        help="InternVL remote-code checkpoint (InternVLChatModel, e.g. InternVL3.5-Pretrained) -> transformers",
        description="Convert an original InternVL folder (vision_model.*, mlp1.*, language_model.*) into "
        "transformers' native InternVL format, with a processor doing RADAR's tiling.",
        epilog=INTERNVL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--src", required=True, help="original InternVL folder (config.json, safetensors, tokenizer)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--dtype",
        default="bfloat16",
        choices=DTYPE_NAMES,
        help="storage dtype (default bfloat16, as released and as the RADAR InternVL script runs)",
    )
    p.add_argument("--min-tiles", type=int, default=1, help="fewest 448 px tiles per image (default 1)")
    p.add_argument("--max-tiles", type=int, default=3, help="most 448 px tiles per image (default 3, RADAR)")
    p.add_argument("--system-message", help="chat template system message (default: the config template's)")
    p.set_defaults(fn=_convert_internvl)
