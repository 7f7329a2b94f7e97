"""Rendering an item's prompt from a Jinja template (the templates themselves live in the task YAMLs).

Template variables: every record column, plus
- `image`: the image marker (one per image) that `radar_hf` swaps for the model's own image tokens,
- `n_images`: the number of images of the item,
- `inline(text)`: `text` with each MMMU-Pro `<image k>` reference replaced by the marker (images inline).
Skipped items (too many images) render with no marker and no image.
"""

from __future__ import annotations

import functools
import re

import jinja2

IMAGE_MARKER = "<image>"
_IMAGE_REF = re.compile(r"<image \d+>")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render(template: str, doc: dict) -> str:
    marker = "" if doc.get("skipped") else IMAGE_MARKER
    n_images = 0 if doc.get("skipped") else len(doc["images"])
    return _compile(template).render(
        **doc, image=marker, n_images=n_images, inline=lambda text: _IMAGE_REF.sub(lambda _: marker, text)
    )
