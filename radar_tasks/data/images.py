"""Opening M3-Bench images: the one place that decodes an image file and converts it to RGB.

`decode` reads a file completely (a full decode, so truncation shows); `to_rgb` converts any mode to the RGB every
wrapper expects; `load_rgb` is both, what `doc_to_visual` hands the wrappers.
"""

from __future__ import annotations

import os

from PIL import Image


def decode(path: str | os.PathLike) -> Image.Image:
    """The image of `path`, fully decoded (raises OSError / ValueError / SyntaxError for broken files)."""
    image = Image.open(path)
    try:
        image.load()  # PIL closes a file it opened itself once a single-frame image is loaded
    except BaseException:
        image.close()
        raise
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image (grayscale, palette and RGBA files exist in the data)."""
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    return to_rgb(decode(path))
