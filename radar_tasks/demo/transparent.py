"""Transparent images for a miniature M3-Bench: where the image conversions of the reference scripts part ways.

`add_transparency(root)` rewrites every PNG of the MMMU-Pro and SeePhys folders of a fixture root (those subsets
ship PNGs) in place: a transparent black border (RGBA 0,0,0,0: what dropping alpha turns black and compositing
turns white), a half-transparent ring inside it, the drawing opaque in the middle. The mode cycles over `MODES`:
RGBA, LA, P with a transparent palette index, and CMYK (JPEG data under the `.png` name, as scraped data holds).
Used by the reference-procedure tests and `benchmarks/paper_deviations.py`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

FOLDERS = ("multiple_discipline_reasoning", "physical_reasoning")
MODES = ("RGBA", "RGBA", "LA", "P", "RGBA", "CMYK")
BORDER = 8  # px of fully transparent black
RING = 4  # px of alpha 128 inside it


def transparent(image: Image.Image, mode: str) -> bytes:
    """The file bytes of `image` with the border and ring above, in `mode`."""
    rgba = np.dstack([np.asarray(image.convert("RGB")), np.full(image.size[::-1], 255, np.uint8)])
    h, w = rgba.shape[:2]
    inner = np.zeros((h, w), bool)
    inner[BORDER : h - BORDER, BORDER : w - BORDER] = True
    core = np.zeros((h, w), bool)
    core[BORDER + RING : h - BORDER - RING, BORDER + RING : w - BORDER - RING] = True
    rgba[~inner] = 0
    rgba[inner & ~core, 3] = 128
    out = Image.fromarray(rgba, "RGBA")
    buf = io.BytesIO()
    if mode == "RGBA":
        out.save(buf, format="PNG")
    elif mode == "LA":
        out.convert("LA").save(buf, format="PNG")
    elif mode == "P":  # the border's palette index is the transparent one (tRNS)
        pal = out.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        pal.save(buf, format="PNG", transparency=pal.getpixel((0, 0)))
    elif mode == "CMYK":  # no alpha at all: the black border stays black in every conversion
        out.convert("RGB").convert("CMYK").save(buf, format="JPEG", quality=95)
    else:
        raise ValueError(f"unsupported mode {mode!r}")
    return buf.getvalue()


def add_transparency(root: str | Path, modes: tuple[str, ...] = MODES) -> dict[str, str]:
    """Rewrite the MMMU-Pro and SeePhys PNGs under `root` (sorted, modes cycled); returns {relative path: mode}."""
    root = Path(root)
    written = {}
    paths = sorted(p for folder in FOLDERS for p in (root / folder / "images").rglob("*.png"))
    for i, path in enumerate(paths):
        mode = modes[i % len(modes)]
        with Image.open(path) as image:
            data = transparent(image, mode)
        path.write_bytes(data)
        written[str(path.relative_to(root))] = mode
    return written
