"""How transparency becomes RGB (radar_tasks.data.images.to_rgb): the default for every wrapper, and each script's.

Expected pixels are computed here from the alpha-blend formula, not with the package's code.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from radar_tasks.data import images
from radar_tasks.tasks.hooks import doc_to_visual

RED = (200, 30, 30)


def rgba_with_black_border(alpha_inside: int = 255) -> Image.Image:
    """8x8: a transparent black border (RGBA 0,0,0,0), a red inside of the given alpha."""
    a = np.zeros((8, 8, 4), np.uint8)
    a[2:6, 2:6] = (*RED, alpha_inside)
    return Image.fromarray(a, "RGBA")


def blend(colour, alpha):  # onto white
    return tuple(c * alpha / 255 + 255 * (1 - alpha / 255) for c in colour)


def roundtrip(image: Image.Image, fmt: str = "PNG") -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out


def transparent_modes() -> dict[str, Image.Image]:
    """The same picture (transparent black border, opaque inside) in every mode that carries transparency."""
    rgba = rgba_with_black_border()
    la = rgba.convert("LA")
    pal = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.info["transparency"] = pal.getpixel((0, 0))  # the border's palette index is transparent (tRNS)
    rgb = rgba.convert("RGB")
    rgb.info["transparency"] = (0, 0, 0)
    grey = rgba.convert("L")
    grey.info["transparency"] = 0
    return {
        "RGBA": rgba,
        "LA": roundtrip(la),
        "P": roundtrip(pal),
        "RGB+tRNS": roundtrip(rgb),
        "L+tRNS": roundtrip(grey),
        "PA": rgba.convert("PA"),
    }


@pytest.mark.parametrize("kind", sorted(transparent_modes()))
def test_default_composites_every_transparency_onto_white(kind):
    image = transparent_modes()[kind]
    assert image.has_transparency_data
    out = images.to_rgb(image)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)  # the border: white, not black
    inside = image.convert("RGB").getpixel((3, 3))
    assert out.getpixel((3, 3)) == inside


def test_partial_alpha_is_blended():
    out = np.asarray(images.to_rgb(rgba_with_black_border(alpha_inside=100)), dtype=float)
    assert np.abs(out[3, 3] - np.array(blend(RED, 100))).max() <= 1.0
    assert (out[0, 0] == 255).all()


@pytest.mark.parametrize("kind", sorted(transparent_modes()))
def test_qwen_vl_utils_pastes_only_rgba(kind):
    image = transparent_modes()[kind]
    out = images.to_rgb(image, "qwen_vl_utils")
    border = (255, 255, 255) if kind == "RGBA" else image.convert("RGB").getpixel((0, 0))
    assert out.getpixel((0, 0)) == border
    if kind != "RGBA":
        assert out.getpixel((0, 0)) == (0, 0, 0)  # the hidden colour shows


@pytest.mark.parametrize("kind", sorted(transparent_modes()))
def test_pil_convert_drops_alpha(kind):
    image = transparent_modes()[kind]
    assert images.to_rgb(image, "pil_convert").tobytes() == image.convert("RGB").tobytes()
    assert images.to_rgb(image, "pil_convert").getpixel((0, 0)) == (0, 0, 0)


@pytest.mark.parametrize("conversion", images.CONVERSIONS)
def test_opaque_modes_convert_alike(conversion):
    rgb = rgba_with_black_border().convert("RGB")
    for image in (rgb, rgb.convert("L"), rgb.convert("P"), roundtrip(rgb.convert("CMYK"), "JPEG")):
        assert not image.has_transparency_data
        assert images.to_rgb(image, conversion).tobytes() == image.convert("RGB").tobytes(), image.mode


def test_unknown_conversion_fails():
    with pytest.raises(ValueError, match="image conversion must be one of"):
        images.to_rgb(rgba_with_black_border(), "black")


def test_doc_to_visual_gives_every_wrapper_white_backgrounds(tmp_path):
    path = tmp_path / "q_image_1.png"
    rgba_with_black_border().save(path)
    [image] = doc_to_visual({"skipped": False, "images": [str(path)]})
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
    assert images.load_rgb(path, "pil_convert").getpixel((0, 0)) == (0, 0, 0)
