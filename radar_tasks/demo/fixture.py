"""A miniature M3-Bench root in the released layout (docs/REFERENCE.md), for tests.

`make_fixture(out_dir, seed=0)` writes `out_dir` as the `M3-Bench/` root folder itself. Only PIL, json and the
standard library are used; no network. The same seed gives the same bytes (same Pillow/libjpeg build); the build
takes well under a second. Everything is first written to a hidden temporary sibling folder that is renamed to
`out_dir` at the end, so a crash never leaves a half-written fixture; a non-empty `out_dir` is refused.

What it covers (the structure is the same for every seed; the seed only changes the drawn content):

* ``general_visual_question_answering/``: all 20 MMBench L3 categories, 2 items each (40), files
  ``MMBench_<category>_2_pretrained_mllm_eval.json``, images ``images/<category>/<q_id>.jpg``; some images
  are grayscale JPEGs ('L'), some are wide (96x64) instead of 64x64.
* ``multiple_discipline_reasoning/``: all 30 MMMU-Pro subjects, 2 items each (60), files
  ``MMMU_Pro_<Subject>_2_pretrained_mllm_eval.json``, images ``images/<Subject>/<q_id>_image_<k>.png``
  (q_ids like ``test_Art_Theory_1``). Every item has ``ori_options`` (a Python-list repr string). Kinds:
  one ``<image 1>`` placeholder; two placeholders ``<image 1> ... <image 2>``; image options with a question
  placeholder (question ``<image 1>``, options ``<image 2>``/``<image 3>``, one distractor); image options
  without any question placeholder (options ``<image 1>``.. ``<image 3|4>``); one Physics item whose options
  contain apostrophes ("Ohm's law"). PNGs in RGB, palette ('P') and RGBA (transparent white background) modes.
* ``mathematical_reasoning/MathVista_5_pretrained_mllm_eval.json``: 5 dot-counting / arithmetic items, ids
  "1".."5", ``images/<id>.jpg``; one question holds a newline (MathVista's "Hint: ...\\nQuestion: ..." style),
  one image is grayscale.
* ``physical_reasoning/SeePhys_6_pretrained_mllm_eval.json``: 6 items with ``img_num`` 1, 1, 2, 3, 12, 13
  (the 12 is the last scored size, the 13 is skipped by the reference); all images ``images/<id>_<i>.png``
  exist, including all 13 of the skipped item; RGB, 'L', 'P' and 'RGBA' PNGs.
* ``Wiki_{animal,plant,attraction,celebrity}_identification/Wiki_<kind>_identification_4_pretrained_mllm_eval.json``:
  4 items each; ``Q<n>--0`` and ``Q<n>--1`` share ``images/Q<n>.jpg``; one id has no ``--`` at all; a non-ASCII
  answer ("Sagrada Família"); multi-word answers.
* ``spatial_reasoning/spatial_reasoning_5_pretrained_mllm_eval.json``: 5 two-shape relation items;
  ``205--0``/``205--1`` share ``images/205.jpg``; ``206--0--b`` has two ``--`` (image ``images/206.jpg``:
  the base is the part before the *first* ``--``); ``207`` has none.
* Across items the number of distractors takes every value 1..4; answers never repeat among distractors.

Content is semi-meaningful and learnable: solid shapes of named colours on a white background, dots to count,
two shapes in a spatial relation, and "Wiki" entities that are each drawn with a fixed (colour, shape) signature
(`WIKI_ENTITIES`). The vocabulary (`COLORS`, `SHAPES`, `POSITIONS`, `RELATIONS`, `COUNTS`, `WIKI_ENTITIES`,
the question strings `Q_*`) and the drawing function `draw_scene` are public so that synthetic pretraining data
can use the same style.

Command line: ``python -m radar_tasks.demo.fixture OUT_DIR [--seed N]``.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

from radar_tasks.staging import replacing

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary (public: synthetic pretraining data should use the same words and drawing style)

BACKGROUND = (255, 255, 255)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (130, 40, 170),
    "orange": (245, 130, 20),
    "brown": (120, 70, 30),
    "black": (20, 20, 20),
    "pink": (245, 120, 180),
}
SHAPES = ("circle", "square", "triangle", "diamond")
POSITIONS = ("left", "right", "top", "bottom")  # where a single shape sits in the image
RELATIONS = ("to the left", "to the right", "above", "below")  # first shape relative to the second one
COUNTS = tuple(str(n) for n in range(1, 10))  # dots per image: 1..9
WIKI_KINDS = ("animal", "plant", "attraction", "celebrity")
# Each entity is always drawn as the same (colour, shape): a learnable "identity".
WIKI_ENTITIES: dict[str, dict[str, tuple[str, str]]] = {
    "animal": {
        "cat": ("orange", "circle"),
        "dog": ("brown", "square"),
        "frog": ("green", "triangle"),
        "flamingo": ("pink", "diamond"),
        "crow": ("black", "circle"),
    },
    "plant": {
        "sunflower": ("yellow", "circle"),
        "rose": ("red", "diamond"),
        "fern": ("green", "triangle"),
        "lavender": ("purple", "square"),
        "oak tree": ("brown", "triangle"),
    },
    "attraction": {
        "Eiffel Tower": ("black", "triangle"),
        "Sagrada Família": ("orange", "diamond"),
        "Machu Picchu": ("green", "square"),
        "Taj Mahal": ("pink", "circle"),
        "Great Wall of China": ("brown", "square"),
    },
    "celebrity": {
        "Ada Lovelace": ("purple", "circle"),
        "Marie Curie": ("blue", "square"),
        "Nikola Tesla": ("yellow", "triangle"),
        "Alan Turing": ("red", "square"),
        "Frida Kahlo": ("pink", "triangle"),
    },
}

Q_COLOR = "What colour is the shape?"
Q_SHAPE = "What shape is shown?"
Q_COUNT = "How many dots are there?"
Q_POSITION = "Where is the shape in the image?"
Q_RELATION = "Where is the {c1} {s1} relative to the {c2} {s2}?"
Q_WIKI_NAME = "Which {kind} is this?"
Q_WIKI_COLOR = "What colour is the {kind} in the picture?"

# The released layout, typed here from the release and deliberately NOT imported from radar_tasks.taxonomy: the
# fixture is the tests' independent oracle of file and folder names, so a wrong edit of taxonomy.py fails them.
MMBENCH_CATEGORIES = (
    "image_style",
    "image_scene",
    "image_emotion",
    "image_quality",
    "image_topic",
    "object_localization",
    "attribute_recognition",
    "celebrity_recognition",
    "ocr",
    "spatial_relationship",
    "attribute_comparison",
    "action_recognition",
    "physical_property_reasoning",
    "function_reasoning",
    "identity_reasoning",
    "social_relation",
    "physical_relation",
    "nature_relation",
    "future_prediction",
    "structuralized_imagetext_understanding",
)
MMMU_PRO_SUBJECTS = (
    "Accounting",
    "Agriculture",
    "Architecture_and_Engineering",
    "Art",
    "Art_Theory",
    "Basic_Medical_Science",
    "Biology",
    "Chemistry",
    "Clinical_Medicine",
    "Computer_Science",
    "Design",
    "Diagnostics_and_Laboratory_Medicine",
    "Economics",
    "Electronics",
    "Energy_and_Power",
    "Finance",
    "Geography",
    "History",
    "Literature",
    "Manage",
    "Marketing",
    "Materials",
    "Math",
    "Mechanical_Engineering",
    "Music",
    "Pharmacy",
    "Physics",
    "Psychology",
    "Public_Health",
    "Sociology",
)
FOLDERS = {
    "mmbench": "general_visual_question_answering",
    "mmmu_pro": "multiple_discipline_reasoning",
    "mathvista": "mathematical_reasoning",
    "seephys": "physical_reasoning",
    "spatial": "spatial_reasoning",
    **{f"wiki_{k}": f"Wiki_{k}_identification" for k in WIKI_KINDS},
}
SUFFIX = "_pretrained_mllm_eval.json"

SIZE = (64, 64)
WIDE = (96, 64)
TALL = (64, 96)

# ---------------------------------------------------------------------------------------------------------------
# Drawing


def _polygon(shape: str, box: tuple[int, int, int, int]) -> list[tuple[int, int]] | None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    return None


def draw_scene(
    size: tuple[int, int], shapes: list[tuple[str, str, tuple[int, int, int, int]]], mode: str = "RGB"
) -> Image.Image:
    """Shapes `(shape, colour name, box)` on a white background, in `mode` 'RGB', 'L', 'P' or 'RGBA'.

    'L' is the grayscale conversion of the RGB drawing, 'P' an adaptive 16-colour palette of it, and 'RGBA' has a
    transparent background whose colour channels are white (so `.convert("RGB")` gives the RGB drawing).
    """
    rgba = mode == "RGBA"
    img = Image.new("RGBA" if rgba else "RGB", size, BACKGROUND + (0,) if rgba else BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape, colour, box in shapes:
        fill = COLORS[colour] + (255,) if rgba else COLORS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        elif shape in ("triangle", "diamond"):
            draw.polygon(_polygon(shape, box), fill=fill)
        else:
            raise ValueError(f"unknown shape {shape!r}")
    if mode in ("RGB", "RGBA"):
        return img
    if mode == "L":
        return img.convert("L")
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    raise ValueError(f"unsupported image mode {mode!r}")


def _box_at(position: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Box of a single shape placed at `position` ('left', 'right', 'top', 'bottom', 'center')."""
    w, h = size
    s = min(w, h) * 3 // 8
    cx, cy = {
        "left": (w // 5, h // 2),
        "right": (w - w // 5, h // 2),
        "top": (w // 2, h // 5),
        "bottom": (w // 2, h - h // 5),
        "center": (w // 2, h // 2),
    }[position]
    return (cx - s // 2, cy - s // 2, cx + s // 2, cy + s // 2)


def _dots(rng: random.Random, n: int, size: tuple[int, int], colours: list[str]) -> list:
    """n small circles in distinct cells of a 3x3 grid (n <= 9), colours cycling over `colours`."""
    w, h = size
    cells = rng.sample(range(9), n)
    r = max(3, min(w, h) // 12)
    out = []
    for i, cell in enumerate(sorted(cells)):
        cx = (cell % 3) * w // 3 + w // 6 + rng.randint(-2, 2)
        cy = (cell // 3) * h // 3 + h // 6 + rng.randint(-2, 2)
        out.append(("circle", colours[i % len(colours)], (cx - r, cy - r, cx + r, cy + r)))
    return out


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        if img.mode not in ("RGB", "L"):
            raise ValueError(f"JPEG cannot hold mode {img.mode}")
        img.save(buf, format="JPEG", quality=90)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Items


class _Builder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.files: dict[str, bytes] = {}  # posix path relative to the root -> bytes
        self._n_distract = 0  # cycles the number of distractors over 1..4

    def image(self, rel: str, img: Image.Image) -> None:
        if rel in self.files:
            raise AssertionError(f"fixture bug: {rel} written twice")
        self.files[rel] = _encode(img, "JPEG" if rel.endswith(".jpg") else "PNG")

    def json(self, rel: str, items: dict[str, dict]) -> None:
        self.files[rel] = (json.dumps(items, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def distract(self, pool, answer: str, n: int | None = None) -> list[str]:
        """`n` (default: the next of 1, 2, 3, 4, capped by the pool) distractors from `pool`, answer excluded."""
        others = [p for p in pool if p != answer]
        if n is None:
            n = 1 + self._n_distract % 4
            self._n_distract += 1
        return self.rng.sample(others, min(n, len(others)))

    def single_shape(self, kind: str, size, mode: str) -> tuple[str, str, Image.Image]:
        """(question, answer, image) for the single-image kinds 'color', 'shape', 'count', 'position'."""
        rng = self.rng
        colour, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        if kind == "count":
            n = rng.randint(1, 9)
            return Q_COUNT, str(n), draw_scene(size, _dots(rng, n, size, [colour]), mode)
        position = rng.choice(POSITIONS) if kind == "position" else "center"
        img = draw_scene(size, [(shape, colour, _box_at(position, size))], mode)
        answer = {"color": colour, "shape": shape, "position": position}[kind]
        return {"color": Q_COLOR, "shape": Q_SHAPE, "position": Q_POSITION}[kind], answer, img


_POOLS = {"color": tuple(COLORS), "shape": SHAPES, "count": COUNTS, "position": POSITIONS}
_MMBENCH_KINDS = ("color", "shape", "count", "position")


def _mmbench(b: _Builder) -> None:
    folder = FOLDERS["mmbench"]
    qid = 1000
    for ci, category in enumerate(MMBENCH_CATEGORIES):
        kind = _MMBENCH_KINDS[ci % 4]
        items = {}
        for j in range(2):
            qid += 1
            # a grayscale JPEG for the second item of every non-colour category; some wide images
            mode = "L" if (kind != "color" and j == 1) else "RGB"
            size = WIDE if (ci % 3 == 2 and j == 0) else SIZE
            question, answer, img = b.single_shape(kind, size, mode)
            b.image(f"{folder}/images/{category}/{qid}.jpg", img)
            items[str(qid)] = {"question": question, "answer": answer, "distraction": b.distract(_POOLS[kind], answer)}
        b.json(f"{folder}/MMBench_{category}_{len(items)}{SUFFIX}", items)


def _mmmu_pro(b: _Builder) -> None:
    folder = FOLDERS["mmmu_pro"]
    rng = b.rng
    modes = ("RGB", "P", "RGB", "RGBA")
    patterns = ("one", "two", "one", "img_opts_q", "two", "img_opts")  # cycled over the 60 items
    for si, subject in enumerate(MMMU_PRO_SUBJECTS):
        items = {}
        for j in range(2):
            g = 2 * si + j
            qid = f"test_{subject}_{j + 1}"
            pattern = "law" if (subject == "Physics" and j == 0) else patterns[g % len(patterns)]
            mode = modes[g % len(modes)]

            def img_path(k: int, subject=subject, qid=qid) -> str:
                return f"{folder}/images/{subject}/{qid}_image_{k}.png"

            if pattern == "one":
                question, answer, img = b.single_shape(("color", "shape")[g % 2], SIZE, mode)
                question = f"{question[:-1]} in <image 1>?"
                b.image(img_path(1), img)
                distractors = b.distract(_POOLS[("color", "shape")[g % 2]], answer)
            elif pattern == "two":
                n1, n2 = rng.randint(1, 4), rng.randint(1, 5)
                colour = rng.choice(list(COLORS))
                b.image(img_path(1), draw_scene(SIZE, _dots(rng, n1, SIZE, [colour]), mode))
                b.image(img_path(2), draw_scene(TALL, _dots(rng, n2, TALL, [colour]), "RGB"))
                question = "How many dots are there in <image 1> and <image 2> together?"
                answer = str(n1 + n2)
                distractors = b.distract(COUNTS, answer)
            elif pattern in ("img_opts_q", "img_opts"):
                # options are images: the correct option shows the named (colour, shape), the others do not
                colour, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
                first = 1
                if pattern == "img_opts_q":
                    b.image(img_path(1), draw_scene(SIZE, [(shape, colour, _box_at("center", SIZE))], mode))
                    question = "<image 1> shows a shape. Which option shows a shape of the same colour?"
                    first, n_opts = 2, 2
                else:
                    question = f"Which option shows a {colour} {shape}?"
                    n_opts = 3 + g % 2
                ks = list(range(first, first + n_opts))
                correct = rng.choice(ks)
                for k in ks:
                    if k == correct:
                        c, s = colour, (shape if pattern == "img_opts" else rng.choice(SHAPES))
                    else:
                        c = rng.choice([x for x in COLORS if x != colour])
                        s = rng.choice(SHAPES)
                    b.image(img_path(k), draw_scene(SIZE, [(s, c, _box_at("center", SIZE))], "RGB"))
                answer = f"<image {correct}>"
                distractors = [f"<image {k}>" for k in ks if k != correct]
            elif pattern == "law":
                b.image(
                    img_path(1),
                    draw_scene(
                        WIDE,
                        [("square", "black", _box_at("left", WIDE)), ("circle", "red", _box_at("right", WIDE))],
                        mode,
                    ),
                )
                question = "The circuit in <image 1> has V = I R. Which law is this?"
                answer = "Ohm's law"
                distractors = ["Hooke's law", "Newton's second law", "Faraday's law"]
            else:  # pragma: no cover
                raise AssertionError(pattern)
            options = [answer, *distractors]
            if not pattern.startswith("img_opts"):
                rng.shuffle(options)  # the original order does not put the answer first
            else:
                options.sort(key=lambda o: int(o.split()[1][:-1]))
            items[qid] = {
                "question": question,
                "answer": answer,
                "distraction": distractors,
                "ori_options": repr(options),
            }
        b.json(f"{folder}/MMMU_Pro_{subject}_{len(items)}{SUFFIX}", items)


def _mathvista(b: _Builder) -> None:
    folder = FOLDERS["mathvista"]
    rng = b.rng
    items = {}
    for i in range(1, 6):
        qid = str(i)
        size = (WIDE, SIZE, TALL, SIZE, SIZE)[i - 1]
        mode = "L" if i == 4 else "RGB"
        if i in (1, 3):  # two colours, add them up
            n1, n2 = rng.randint(1, 4), rng.randint(1, 4)
            c1, c2 = rng.sample([c for c in COLORS if c != "black"], 2)
            shapes = _dots(rng, n1 + n2, size, [c1] * n1 + [c2] * n2)
            question = f"How many {c1} dots and {c2} dots are there in total?"
            answer = str(n1 + n2)
        elif i == 2:  # hint + question on two lines
            n = rng.randint(2, 9)
            shapes = _dots(rng, n, size, ["black"])
            question = (
                "Hint: Please answer the question and provide the final answer at the end.\n"
                "Question: How many dots are left if one dot is removed?"
            )
            answer = str(n - 1)
        else:
            n = rng.randint(1, 9)
            shapes = _dots(rng, n, size, [rng.choice(list(COLORS))])
            question, answer = Q_COUNT, str(n)
        b.image(f"{folder}/images/{qid}.jpg", draw_scene(size, shapes, mode))
        items[qid] = {"question": question, "answer": answer, "distraction": b.distract(COUNTS, answer)}
    b.json(f"{folder}/MathVista_{len(items)}{SUFFIX}", items)


def _seephys(b: _Builder) -> None:
    folder = FOLDERS["seephys"]
    rng = b.rng
    items = {}
    img_nums = (1, 1, 2, 3, 12, 13)
    modes = ("RGB", "L", "P", "RGBA")
    for idx, img_num in enumerate(img_nums):
        qid = str(101 + idx)
        colour = rng.choice(list(COLORS))
        total = 0
        for i in range(img_num):
            n = rng.randint(1, 3) if img_num > 3 else rng.randint(1, 5)
            total += n
            mode = modes[(idx + i) % len(modes)]
            b.image(f"{folder}/images/{qid}_{i}.png", draw_scene(SIZE, _dots(rng, n, SIZE, [colour]), mode))
        if img_num == 1:
            question = f"{Q_COUNT[:-1]} in the diagram?"
        else:
            question = f"Each of the {img_num} diagrams shows some dots. How many dots are there in all diagrams?"
        answer = str(total)
        pool = [str(n) for n in range(max(1, total - 4), total + 5)]
        items[qid] = {
            "question": question,
            "answer": answer,
            "distraction": b.distract(pool, answer),
            "img_num": img_num,
        }
    b.json(f"{folder}/SeePhys_{len(items)}{SUFFIX}", items)


def _wiki(b: _Builder, kind: str) -> None:
    folder = FOLDERS[f"wiki_{kind}"]
    rng = b.rng
    entities = WIKI_ENTITIES[kind]
    names = rng.sample(sorted(entities), 3)
    if kind == "attraction" and "Sagrada Família" not in names:
        names[0] = "Sagrada Família"  # keep a non-ASCII answer in every seed
    bases = [f"Q{n}" for n in rng.sample(range(100, 100000), 3)]
    items = {}
    for e, (name, base) in enumerate(zip(names, bases)):
        colour, shape = entities[name]
        size = TALL if e == 1 else SIZE
        b.image(f"{folder}/images/{base}.jpg", draw_scene(size, [(shape, colour, _box_at("center", size))]))
        name_item = {
            "question": Q_WIKI_NAME.format(kind=kind),
            "answer": name,
            "distraction": b.distract(sorted(entities), name),
        }
        if e == 0:  # two records share one image
            items[f"{base}--0"] = name_item
            items[f"{base}--1"] = {
                "question": Q_WIKI_COLOR.format(kind=kind),
                "answer": colour,
                "distraction": b.distract(tuple(COLORS), colour),
            }
        elif e == 1:
            items[base] = name_item  # no "--" at all
        else:
            items[f"{base}--0"] = name_item
    b.json(f"{folder}/Wiki_{kind}_identification_{len(items)}{SUFFIX}", items)


def _relation_boxes(relation: str, size) -> tuple[tuple, tuple]:
    a, b = {
        "to the left": ("left", "right"),
        "to the right": ("right", "left"),
        "above": ("top", "bottom"),
        "below": ("bottom", "top"),
    }[relation]
    return _box_at(a, size), _box_at(b, size)


_INVERSE = {"to the left": "to the right", "to the right": "to the left", "above": "below", "below": "above"}


def _spatial(b: _Builder) -> None:
    folder = FOLDERS["spatial"]
    rng = b.rng
    items = {}
    plan = [("205", ["205--0", "205--1"]), ("206", ["206--0--b"]), ("207", ["207"]), ("208", ["208--3"])]
    for base, qids in plan:
        c1, c2 = rng.sample(list(COLORS), 2)
        s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
        relation = rng.choice(RELATIONS)
        size = WIDE if relation in ("to the left", "to the right") else TALL
        box1, box2 = _relation_boxes(relation, size)
        b.image(f"{folder}/images/{base}.jpg", draw_scene(size, [(s1, c1, box1), (s2, c2, box2)]))
        for k, qid in enumerate(qids):
            if k == 0:
                q, answer = Q_RELATION.format(c1=c1, s1=s1, c2=c2, s2=s2), relation
            else:  # the same image, asked the other way round
                q, answer = Q_RELATION.format(c1=c2, s1=s2, c2=c1, s2=s1), _INVERSE[relation]
            items[qid] = {"question": q, "answer": answer, "distraction": b.distract(RELATIONS, answer)}
    b.json(f"{folder}/spatial_reasoning_{len(items)}{SUFFIX}", items)


def build_files(seed: int = 0) -> dict[str, bytes]:
    """All fixture files in memory: posix path relative to the root -> bytes."""
    b = _Builder(seed)
    _mmbench(b)
    _mmmu_pro(b)
    _mathvista(b)
    _seephys(b)
    for kind in WIKI_KINDS:
        _wiki(b, kind)
    _spatial(b)
    return b.files


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_fixture(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a miniature M3-Bench root at `out_dir` (the folder itself is the root) and return its absolute path.

    Refuses (ValueError) when `out_dir` exists and is not an empty folder.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError(f"make_fixture: {out} exists and is not a folder")
        if any(out.iterdir()):
            raise ValueError(f"make_fixture: refusing to write into non-empty folder {out}")
    files = build_files(seed)
    with replacing(out) as staging:
        for rel, data in files.items():
            _write_file(staging / rel, data)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m radar_tasks.demo.fixture", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = make_fixture(args.out_dir, args.seed)
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
