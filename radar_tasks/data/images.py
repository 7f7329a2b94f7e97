"""Opening M3-Bench images: the one place that decodes an image file and converts it to RGB.

`decode` reads a file completely and strictly: a truncated or header-only file is an error whatever
`PIL.ImageFile.LOAD_TRUNCATED_IMAGES` says (lmms-eval sets it to True for the whole process), and an image above
`max_pixels()` is refused before its pixels are decoded (decompression bombs). `to_rgb` converts any mode to the RGB
every wrapper expects, high-bit-depth modes by their value range (`by_value_range`); `load_rgb` is both, what
`doc_to_visual` hands the wrappers. `sources` gives what `decode` opens for each image of a record: its paths,
or the embedded files of an exported record.

How transparency becomes RGB (`conversion`):

- `white` (default; every wrapper, `doc_to_visual`): transparent pixels composited onto white, whatever the mode
  (RGBA, LA, PA, P / L / RGB with a transparent colour);
- `qwen_vl_utils` (the Qwen2-VL script, qwen-vl-utils `to_rgb`): only mode `RGBA` is pasted onto white; every
  other mode is `convert("RGB")` (alpha dropped);
- `pil_convert` (the InternVL and LLaVA scripts): `convert("RGB")`: alpha dropped, the hidden colour of
  transparent pixels shows.

`white` is what a reader of a diagram sees; dropping alpha exposes whatever colour a transparent pixel happens to
hold (often black, so a transparent background turns black).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings

import numpy as np
from PIL import Image, ImageFile

CONVERSIONS = ("white", "qwen_vl_utils", "pil_convert")
DEFAULT_CONVERSION = "white"
WHITE = (255, 255, 255)
MAX_PIXELS_ENV = "RADAR_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default warning threshold (about 9,459 x 9,459)


class ImageTooLarge(ValueError):
    """More pixels than `max_pixels()`: refused before decoding."""


def max_pixels() -> int:
    """The decompression-bomb limit: $RADAR_MAX_IMAGE_PIXELS, else DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r} is not an integer") from None


# Strict loading must not depend on the process-wide flag, yet threads decode concurrently (lmms-eval's
# process_results pool, preprocessing workers): while any of our decodes runs the flag is off, and it is restored
# when the last one ends. Another library's decode in that window is only stricter.
_flag_lock = threading.Lock()
_strict_users = 0
_saved_flag = False


@contextlib.contextmanager
def _truncated_images_refused():
    global _strict_users, _saved_flag
    with _flag_lock:
        if _strict_users == 0:
            _saved_flag = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _strict_users += 1
    try:
        yield
    finally:
        with _flag_lock:
            _strict_users -= 1
            if _strict_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_flag


# The column of an exported record holding its image files (datasets' undecoded Image: {"bytes", "path"}); its
# `images` then holds their names under the release root (radar_tasks.tasks.exported_hooks.process_docs).
IMAGE_DATA = "image_data"
# The column of the exported dataset holding those names (its `images` column holds the embedded files).
IMAGE_FILES = "image_files"


def sources(record: dict) -> list:
    """What `decode` opens for each image of a record, in order: the file bytes of an exported record, else its
    paths; so both decode the same way."""
    if IMAGE_DATA in record:
        return [io.BytesIO(entry["bytes"]) for entry in record[IMAGE_DATA]]
    return list(record["images"])


def decode(path: str | os.PathLike) -> Image.Image:
    """The image of `path`, fully decoded. Raises ImageTooLarge above `max_pixels()`, and OSError / ValueError /
    SyntaxError for broken, truncated or header-only files."""
    with warnings.catch_warnings():  # PIL's own warning would come before the clearer error below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    try:
        width, height = image.size
        limit = max_pixels()
        if width * height > limit:
            raise ImageTooLarge(
                f"{width}x{height} = {width * height:,} pixels, above the limit of {limit:,} "
                f"(set {MAX_PIXELS_ENV} to raise it)"
            )
        with _truncated_images_refused():
            image.load()  # PIL closes a file it opened itself once a single-frame image is loaded
        if getattr(image, "_ended", False):  # JPEG padded with an end marker: only with the flag on
            raise OSError("image file is truncated")
    except BaseException:
        image.close()
        raise
    return image


def by_value_range(image: Image.Image) -> Image.Image:
    """High-bit-depth single-channel images (`I;16*`, `I`, `F`) as 8-bit `L`, scaled by their value range instead
    of clipped at 255 (PIL's `convert` turns most of a 16-bit image white). `I;16*`: the 16-bit range. `I` and `F`:
    data already within 0..255 is kept, 0..65535 (integers) is a 16-bit range, floats within 0..1 are scaled by
    255; anything else is stretched from its minimum to its maximum. Other modes are returned as they are."""
    mode = image.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return image
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif low >= 0 and high <= 1 and mode == "F":
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _onto_white(rgba: Image.Image) -> Image.Image:
    """`rgba` pasted onto a white canvas with its alpha channel as the mask (qwen-vl-utils' exact operation)."""
    canvas = Image.new("RGB", rgba.size, WHITE)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def to_rgb(image: Image.Image, conversion: str = DEFAULT_CONVERSION) -> Image.Image:
    """An RGB image (grayscale, palette, RGBA, LA, CMYK and 16-bit files exist in the data); see the module table."""
    image = by_value_range(image)
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
