"""A full-size synthetic M3-Bench in the released layout, for benchmarks: the released per-file counts, realistic
image sizes and formats, random content (no meaning: speed and memory only).

    python benchmarks/synthetic_m3bench.py OUT [--items 14904] [--seed 0]

`OUT` becomes the M3-Bench root (the folder that holds `general_visual_question_answering/`, ...); it must not
exist or be empty, and is written through a temporary sibling renamed at the end. Never write it into the repository.

Counts (14,904 items in all). Known from the release (docs/REFERENCE.md): the 20 MMBench categories (1,164), MMMU-Pro
1,730 in all, MathVista 1,000, Wiki animal 2,000. Assumed where the release is not documented here: MMMU-Pro spread
evenly over its 30 subjects (57-58 each), SeePhys 2,000 (the SeePhys benchmark's size), Wiki plant / attraction /
celebrity 2,000 each (as Wiki animal), spatial reasoning the rest (1,010). `--items N` scales every file (at
least one item each).

Images, by subset: MMBench JPEGs of 512x384 to 1024x768; MMMU-Pro PNG diagrams of 600x400 to 1200x800 (RGB, RGBA,
palette), one per `<image k>` (1, sometimes 2, some items with image options); MathVista JPEGs of 640x480 to
1024x768; SeePhys PNGs of 600x400 to 800x600, `img_num` mostly 1 (a few 2-3, and 0.2% with 13: skipped); Wiki photos
1600x1200 (JPEG quality 90, photo-like: smooth colour fields, edges and sensor noise); spatial JPEGs of 640x480.
Every decode costs what a distinct file of that size and kind costs, but the bytes come from a pool of distinct
images per kind and size (hard links, a copy where links fail): a full set takes about a minute and ~1 GB.
Candidates: MMBench 1-3 distractors, MMMU-Pro 9 (the 10-option standard set), others 3.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from radar_tasks.staging import replacing
from radar_tasks.taxonomy import MMMU_PRO_SUBJECTS, SUBSETS_BY_NAME

FULL_SIZE = 14904
SUFFIX = "_pretrained_mllm_eval.json"
MMBENCH = {  # docs/REFERENCE.md
    "image_style": 53,
    "image_scene": 104,
    "image_emotion": 50,
    "image_quality": 53,
    "image_topic": 36,
    "object_localization": 81,
    "attribute_recognition": 74,
    "celebrity_recognition": 99,
    "ocr": 39,
    "spatial_relationship": 45,
    "attribute_comparison": 44,
    "action_recognition": 54,
    "physical_property_reasoning": 75,
    "function_reasoning": 79,
    "identity_reasoning": 45,
    "social_relation": 43,
    "physical_relation": 24,
    "nature_relation": 48,
    "future_prediction": 40,
    "structuralized_imagetext_understanding": 78,
}
MMMU_PRO_TOTAL, MATHVISTA, SEEPHYS, WIKI = 1730, 1000, 2000, 2000
WIKI_KINDS = ("animal", "plant", "attraction", "celebrity")
SPATIAL = FULL_SIZE - sum(MMBENCH.values()) - MMMU_PRO_TOTAL - MATHVISTA - SEEPHYS - WIKI * len(WIKI_KINDS)
WIKI_SIZE = (1600, 1200)
POOL = 24  # distinct images per (kind, size)

WORDS = """
    the a of in on which what is shown image picture figure value shape colour left right above below near
    object person animal plant building river tree car table book number line angle circle square triangle
    force mass velocity energy current voltage price market cost rate cell protein species country century
    painting style music note chart graph table equation answer option most likely best describes
""".split()


def file_counts(items: int = FULL_SIZE) -> dict[str, int]:
    """Released json path (relative to the root) -> number of items, scaled to `items` in all."""
    folder = {name: spec.folder for name, spec in SUBSETS_BY_NAME.items()}
    counts = {f"{folder['mmbench']}/MMBench_{c}_{{n}}{SUFFIX}": n for c, n in MMBENCH.items()}
    per_subject, extra = divmod(MMMU_PRO_TOTAL, len(MMMU_PRO_SUBJECTS))
    for i, subject in enumerate(MMMU_PRO_SUBJECTS):
        counts[f"{folder['mmmu_pro']}/MMMU_Pro_{subject}_{{n}}{SUFFIX}"] = per_subject + (i < extra)
    counts[f"{folder['mathvista']}/MathVista_{{n}}{SUFFIX}"] = MATHVISTA
    counts[f"{folder['seephys']}/SeePhys_{{n}}{SUFFIX}"] = SEEPHYS
    for kind in WIKI_KINDS:
        counts[f"{folder['wiki_' + kind]}/Wiki_{kind}_identification_{{n}}{SUFFIX}"] = WIKI
    counts[f"{folder['spatial']}/spatial_reasoning_{{n}}{SUFFIX}"] = SPATIAL
    scale = items / FULL_SIZE
    return {path.format(n=m): m for path, n in counts.items() for m in [max(1, round(n * scale))]}


# ------------------------------------------------------------------------------------------------------ images
def photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Photo-like RGB: smooth colour fields, a few hard edges, sensor noise (JPEG sizes and decode times of photos)."""
    w, h = size
    field = Image.fromarray(rng.integers(0, 256, (h // 48 + 2, w // 48 + 2, 3), dtype=np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    draw = ImageDraw.Draw(field)
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(h // 20, h // 4))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.asarray(field, dtype=np.int16) + rng.integers(-10, 11, (h, w, 3), dtype=np.int16)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def diagram(rng: np.random.Generator, size: tuple[int, int], mode: str) -> Image.Image:
    """A PNG-style diagram: lines, boxes and strokes on white, in `mode` RGB, RGBA (transparent background) or P."""
    w, h = size
    img = Image.new("RGBA", size, (255, 255, 255, 0 if mode == "RGBA" else 255))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(-w // 3, w // 3)), y0 + int(rng.integers(-h // 3, h // 3))
        colour = tuple(int(v) for v in rng.integers(0, 200, 3)) + (255,)
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 4)))
        else:
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=colour, width=2)
    for _ in range(15):  # text-like strokes
        x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 12))
        draw.text((x, y), " ".join(rng.choice(WORDS, 2)), fill=(0, 0, 0, 255))
    if mode == "RGBA":
        return img
    rgb = img.convert("RGB")
    return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64) if mode == "P" else rgb


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


class Pool:
    """Distinct image files per (kind, size), written once into `folder`; `link(dst, kind, size, key)` puts one at
    `dst` (hard link, or a copy)."""

    def __init__(self, folder: Path, seed: int):
        self.folder, self.seed, self.made = folder, seed, {}

    def _files(self, kind: str, size: tuple[int, int]) -> list[Path]:
        key = (kind, size)
        if key not in self.made:
            rng = np.random.default_rng([self.seed, len(self.made)])
            files = []
            for i in range(POOL):
                if kind == "photo":
                    data, ext = encode(photo(rng, size), "JPEG"), "jpg"
                else:  # diagram_<mode>
                    data, ext = encode(diagram(rng, size, kind.split("_")[1]), "PNG"), "png"
                path = self.folder / f"{kind}_{size[0]}x{size[1]}_{i}.{ext}"
                path.write_bytes(data)
                files.append(path)
            self.made[key] = files
        return self.made[key]

    def link(self, dst: Path, kind: str, size: tuple[int, int], key: int) -> None:
        files = self._files(kind, size)
        src = files[key % len(files)]
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)


# ------------------------------------------------------------------------------------------------------- items
def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def candidates(rng: random.Random, n: int, words: tuple[int, int] = (1, 4)) -> list[str]:
    """n distinct short answers."""
    out: list[str] = []
    while len(out) < n:
        c = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
        if c not in out:
            out.append(c)
    return out


def write_items(root: Path, rel: str, n: int, pool: Pool, rng: random.Random) -> None:
    folder, name = rel.split("/")
    images = root / folder / "images"
    items: dict[str, dict] = {}
    category = re.sub(r"_\d+" + SUFFIX + "$", "", name).split("_", 1 if name.startswith("MMBench_") else 2)[-1]
    if name.startswith("MMBench_"):
        sizes = [(1024, 768), (800, 600), (640, 480), (512, 384), (512, 512)]
        for i in range(n):
            qid = str(rng.randrange(10**6, 10**7))
            while qid in items:
                qid = str(rng.randrange(10**6, 10**7))
            pool.link(images / category / f"{qid}.jpg", "photo", sizes[i % len(sizes)], i)
            answer, *others = candidates(rng, 1 + rng.randint(1, 3))
            items[qid] = {"question": sentence(rng, rng.randint(8, 25)) + "?", "answer": answer, "distraction": others}
    elif name.startswith("MMMU_Pro_"):
        subject = category
        sizes = [(1200, 800), (800, 600), (600, 400)]
        modes = ["RGB"] * 7 + ["RGBA"] * 2 + ["P"]
        for i in range(n):
            qid = f"test_{subject}_{i + 1}"
            options = candidates(rng, 10, (1, 6))
            question = f"{sentence(rng, rng.randint(10, 40))} <image 1>?"
            refs = [1]
            if i % 10 == 3:  # two images in the question
                question = f"{sentence(rng, 12)} <image 1> and <image 2>. {sentence(rng, 10)}?"
                refs = [1, 2]
            elif i % 20 == 7:  # image options: the candidates scored are letters
                options = [f"<image {k}>" for k in (2, 3, 4, 5)]
                refs = [1, 2, 3, 4, 5]
            for k in refs:
                pool.link(
                    images / subject / f"{qid}_image_{k}.png",
                    f"diagram_{modes[(i + k) % len(modes)]}",
                    sizes[(i + k) % len(sizes)],
                    i * 7 + k,
                )
            answer, *others = options
            shuffled = options[:]
            rng.shuffle(shuffled)
            items[qid] = {"question": question, "answer": answer, "distraction": others, "ori_options": repr(shuffled)}
    elif name.startswith("SeePhys_"):
        sizes = [(800, 600), (600, 400)]
        for i in range(n):
            qid = str(1000 + i)
            img_num = 13 if i % 500 == 250 else 3 if i % 50 == 10 else 2 if i % 12 == 5 else 1
            for k in range(img_num):
                pool.link(
                    images / f"{qid}_{k}.png",
                    f"diagram_{('RGB', 'RGBA', 'P', 'RGB')[(i + k) % 4]}",
                    sizes[(i + k) % 2],
                    i * 13 + k,
                )
            answer, *others = candidates(rng, 4, (1, 5))
            items[qid] = {
                "question": sentence(rng, rng.randint(20, 60)) + "?",
                "answer": answer,
                "distraction": others,
                "img_num": img_num,
            }
    else:  # MathVista, Wiki, spatial: `images/<base>.jpg`, the base is the id before the first `--`
        if name.startswith("MathVista_"):
            sizes, words = [(1024, 768), (640, 480), (800, 800)], (25, 45)
        elif name.startswith("Wiki_"):
            sizes, words = [WIKI_SIZE], (6, 10)
        else:
            sizes, words = [(640, 480)], (10, 20)
        shared = not name.startswith("MathVista_")  # Wiki and spatial records may share an image: `123--0`, `123--1`
        i = 0
        while len(items) < n:
            base = f"Q{100000 + i}" if name.startswith("Wiki_") else str(1 + i)
            pool.link(images / f"{base}.jpg", "photo", sizes[i % len(sizes)], i)
            for k in range(2 if shared and i % 5 == 0 else 1):
                if len(items) < n:
                    answer, *others = candidates(rng, 4, (1, 3))
                    items[f"{base}--{k}" if shared else base] = {
                        "question": sentence(rng, rng.randint(*words)) + "?",
                        "answer": answer,
                        "distraction": others,
                    }
            i += 1
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(out: str | os.PathLike, items: int = FULL_SIZE, seed: int = 0) -> Path:
    """Write the synthetic M3-Bench root at `out` (refused when it exists and is not empty); returns its path."""
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder")
    with replacing(out) as staging:
        pool_dir = staging / ".pool"
        pool_dir.mkdir()
        pool, rng = Pool(pool_dir, seed), random.Random(seed)
        for rel, n in file_counts(items).items():
            write_items(staging, rel, n, pool, rng)
        shutil.rmtree(pool_dir)  # the links keep the bytes
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the M3-Bench root to write (outside the repository)")
    parser.add_argument("--items", type=int, default=FULL_SIZE, help=f"items in all (default {FULL_SIZE})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(generate(args.out, args.items, args.seed))


if __name__ == "__main__":
    main()
