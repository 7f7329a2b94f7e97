"""`image_processor` model arg: transformers' torchvision backend (`fast`, the default) or its PIL backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from radar_tasks.models import likelihood


@pytest.mark.parametrize("arch", ["qwen2_vl", "internvl"])
def test_fast_is_the_default_and_pil_is_chosen_with_the_same_kwargs(tiny_checkpoint, arch):
    folder = tiny_checkpoint(arch)
    kwargs = {"max_pixels": 56448} if arch == "qwen2_vl" else None
    processors = {
        c: likelihood.load_model(folder, "cpu", "float32", processor_kwargs=kwargs, image_processor=c)[1]
        for c in ("fast", "pil")
    }
    _, default = likelihood.load_model(folder, "cpu", "float32", processor_kwargs=kwargs)
    assert default.image_processor.backend == processors["fast"].image_processor.backend == "torchvision"
    assert processors["pil"].image_processor.backend == "pil"
    if kwargs:  # the processor kwargs reach the PIL image processor too
        assert processors["pil"].image_processor.size["longest_edge"] == 56448
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (301, 457, 3), dtype=np.uint8))
    fast, pil = (
        processors[c].image_processor(images=[image], return_tensors="pt")["pixel_values"] for c in ("fast", "pil")
    )
    assert fast.shape == pil.shape and not torch.equal(fast, pil)  # a different resampling implementation
    assert float((fast - pil).abs().max()) < 0.1  # ~2 of 255 grey levels at most (normalised units)


def test_an_unknown_image_processor_fails_before_loading():
    with pytest.raises(ValueError, match="image_processor must be one of fast, pil"):
        likelihood.load_model("/no/such/checkpoint", "cpu", "float32", image_processor="opencv")
