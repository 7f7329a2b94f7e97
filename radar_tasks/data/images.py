"""Opening M3-Bench images: the one place that decodes an image file and converts it to RGB.

`decode` reads a file completely (a full decode, so truncation shows); `to_rgb` converts any mode to the RGB every
wrapper expects; `load_rgb` is both, what `doc_to_visual` hands the wrappers.

How transparency becomes RGB (`conversion`):

| conversion | transparent pixels | used by |
|---|---|---|
| `white` (default) | composited onto white, whatever the mode (RGBA, LA, PA, P / L / RGB with a transparent colour) | every wrapper (`doc_to_visual`) |
| `qwen_vl_utils` | only mode `RGBA` is pasted onto white; every other mode is `convert("RGB")` (alpha dropped) | the Qwen2-VL script (qwen-vl-utils `to_rgb`) |
| `pil_convert` | `convert("RGB")`: alpha dropped, the hidden colour of transparent pixels shows | the InternVL and LLaVA scripts |

`white` is what a reader of a diagram sees; dropping alpha exposes whatever colour a transparent pixel happens to
hold (often black, so a transparent background turns black).
"""

from __future__ import annotations

import os

from PIL import Image

CONVERSIONS = ("white", "qwen_vl_utils", "pil_convert")
DEFAULT_CONVERSION = "white"
WHITE = (255, 255, 255)


def decode(path: str | os.PathLike) -> Image.Image:
    """The image of `path`, fully decoded (raises OSError / ValueError / SyntaxError for broken files)."""
    image = Image.open(path)
    try:
        image.load()  # PIL closes a file it opened itself once a single-frame image is loaded
    except BaseException:
        image.close()
        raise
    return image


def _onto_white(rgba: Image.Image) -> Image.Image:
    """`rgba` pasted onto a white canvas with its alpha channel as the mask (qwen-vl-utils' exact operation)."""
    canvas = Image.new("RGB", rgba.size, WHITE)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def to_rgb(image: Image.Image, conversion: str = DEFAULT_CONVERSION) -> Image.Image:
    """An RGB image (grayscale, palette, RGBA, LA and CMYK files exist in the data); see the module table."""
    if conversion == "white":
        if image.has_transparency_data:
            return _onto_white(image if image.mode == "RGBA" else image.convert("RGBA"))
        return image.convert("RGB")
    if conversion == "qwen_vl_utils":
        return _onto_white(image) if image.mode == "RGBA" else image.convert("RGB")
    if conversion == "pil_convert":
        return image.convert("RGB")
    raise ValueError(f"image conversion must be one of {', '.join(CONVERSIONS)}; got {conversion!r}")


def load_rgb(path: str | os.PathLike, conversion: str = DEFAULT_CONVERSION) -> Image.Image:
    return to_rgb(decode(path), conversion)
