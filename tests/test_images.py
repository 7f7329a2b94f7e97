"""Image decoding (radar_tasks/data/images.py): strict whatever PIL's global flag says, bombs refused, 16-bit
and float images converted by their value range."""

from __future__ import annotations

import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from radar_tasks.data import images


def _png_header(width: int, height: int) -> bytes:
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IEND", b"")  # no pixel data at all


@pytest.fixture
def lenient_pil(monkeypatch):
    """PIL as lmms-eval leaves it for the whole process."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)


def test_truncated_files_are_errors_even_when_pil_accepts_them(tmp_path, lenient_pil):
    rng = np.random.default_rng(0)
    for fmt in ("JPEG", "PNG"):
        path = tmp_path / f"a.{fmt.lower()}"
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path, fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        Image.open(path).load()  # what lmms-eval's setting lets through
        with pytest.raises(OSError):
            images.decode(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the process-wide setting is left as it was


def test_header_only_and_oversized_images(tmp_path, lenient_pil, monkeypatch):
    big = tmp_path / "big.png"
    big.write_bytes(_png_header(12000, 12000))
    with pytest.raises(images.ImageTooLarge, match=r"12000x12000 = 144,000,000 pixels, above the limit"):
        images.decode(big)
    small = tmp_path / "small.png"
    small.write_bytes(_png_header(300, 300))
    with pytest.raises(OSError):
        images.decode(small)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (100, 100)).save(ok)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "9999")
    with pytest.raises(images.ImageTooLarge, match="above the limit of 9,999"):
        images.decode(ok)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "10000")
    assert images.decode(ok).size == (100, 100)


def test_strict_decoding_in_threads_restores_the_flag(tmp_path, lenient_pil):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (64, 64), "blue").save(path)
    errors = []

    def work():
        try:
            for _ in range(20):
                images.load_rgb(path)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_sixteen_bit_and_float_images_keep_their_contrast(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    opened = images.decode(path)
    assert opened.mode.startswith("I;16")
    assert opened.convert("RGB").getextrema()[0] == (0, 255)  # PIL clips: all but the darkest pixels are white
    assert np.mean(np.asarray(opened.convert("RGB"))) > 250
    rgb = np.asarray(images.to_rgb(opened))
    assert rgb.shape == (64, 64, 3) and abs(rgb.mean() - 127.5) < 2  # the ramp stays a ramp
    as_i = Image.fromarray(ramp.astype(np.int32), "I")
    assert abs(np.asarray(images.to_rgb(as_i)).mean() - 127.5) < 2
    small_i = Image.fromarray(np.full((8, 8), 200, np.int32), "I")
    assert np.asarray(images.to_rgb(small_i)).max() == 200  # 8-bit data in an I image is kept
    unit = Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "F")
    assert np.asarray(images.to_rgb(unit)).max() == 255
    odd = Image.fromarray(np.linspace(-5, 5, 64, dtype=np.float32).reshape(8, 8), "F")
    values = np.asarray(images.to_rgb(odd))
    assert values.min() == 0 and values.max() == 255
