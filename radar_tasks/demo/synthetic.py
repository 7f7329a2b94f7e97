"""Synthetic pretraining data for `demo --series`: image-question-answer examples in the fixture's style.

The examples use the fixture's vocabulary, question strings and drawing function (`fixture.draw_scene`), so the
benchmark items are in-distribution, but never its images: every training canvas has a size the fixture never
uses (`TRAIN_SIDES`; the fixture draws 64x64, 96x64 and 64x96), and positions, sizes and dot radii are jittered,
so a checkpoint can only score above chance by having learned the visual concept. The prompt is the one
`radar_hf` scores for the subset the example imitates (`radar_tasks.prompts`), then " " + answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from radar_tasks import prompts
from radar_tasks.demo import fixture

# Canvas sides of training images: never the fixture's (64 and 96), but the same visual-token grid after the
# Qwen2-VL processor's resize to multiples of 28 px (60..68 -> 56 px, 88..94 -> 84 px).
TRAIN_SIDES = (60, 62, 66, 68)
TRAIN_LONG_SIDES = (88, 90, 92, 94)


@dataclass
class Example:
    """One training sequence: `prompt` (one image marker per image) + " " + `answer`."""

    kind: str
    prompt: str
    images: list
    answer: str


def _canvas(rng: random.Random, shape: str | None = None) -> tuple[int, int]:
    """(width, height) of a training image: 'square', 'wide' or 'tall' (None: square half of the time)."""
    shape = shape or rng.choice(("square", "square", "wide", "tall"))
    short, long_ = rng.choice(TRAIN_SIDES), rng.choice(TRAIN_LONG_SIDES)
    return {"square": (short, rng.choice(TRAIN_SIDES)), "wide": (long_, short), "tall": (short, long_)}[shape]


def _box(rng: random.Random, size, cx: float, cy: float, scale: float) -> tuple[int, int, int, int]:
    """A square box of side `scale` x the short side, centred near (cx, cy) (fractions of the canvas)."""
    w, h = size
    s = int(min(w, h) * scale)
    x = int(cx * w) + rng.randint(-3, 3)
    y = int(cy * h) + rng.randint(-3, 3)
    x0 = min(max(0, x - s // 2), w - s - 1)
    y0 = min(max(0, y - s // 2), h - s - 1)
    return (x0, y0, x0 + s, y0 + s)


# where the fixture puts a single shape ('left', ...) or the two shapes of a relation, as canvas fractions
_CENTRES = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8)}
_RELATION_SIDES = {
    "to the left": ("left", "right"),
    "to the right": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}


def _anywhere(rng: random.Random, size) -> tuple[int, int, int, int]:
    return _box(rng, size, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.28, 0.45))


def _dots(rng: random.Random, n: int, size, colours: Sequence[str]) -> list:
    """n dots in distinct cells of a 3x3 grid (the fixture's counting style), jittered offsets and radius."""
    w, h = size
    r = max(3, min(w, h) // 12 + rng.randint(-1, 1))
    out = []
    for i, cell in enumerate(sorted(rng.sample(range(9), n))):
        cx = (cell % 3) * w // 3 + w // 6 + rng.randint(-3, 3)
        cy = (cell // 3) * h // 3 + h // 6 + rng.randint(-3, 3)
        out.append(("circle", colours[i % len(colours)], (cx - r, cy - r, cx + r, cy + r)))
    return out


def _prompt(subset: str, question: str, n_images: int = 1) -> str:
    """The prompt radar_hf scores for an item of `subset` with `n_images` images (the tasks' raw layout)."""
    return prompts.user_text({"subset": subset, "question": question, "images": [""] * n_images}, "raw")


def _either_separator(rng: random.Random) -> str:
    # kinds whose fixture questions sit in subsets of both separators (MMBench and MathVista put a newline between
    # image and question, the others a space): a subset of each, drawn at random
    return rng.choice(("mmbench", "spatial"))


def _mode(rng: random.Random, colour_matters: bool) -> str:
    # the fixture has grayscale images wherever colour is not asked about
    return "RGB" if colour_matters or rng.random() < 0.7 else "L"


def _single(rng: random.Random, kind: str):
    colour, shape = rng.choice(list(fixture.COLORS)), rng.choice(fixture.SHAPES)
    size = _canvas(rng)
    position = rng.choice(fixture.POSITIONS) if kind == "position" else None
    box = _box(rng, size, *_CENTRES[position], rng.uniform(0.28, 0.4)) if position else _anywhere(rng, size)
    img = fixture.draw_scene(size, [(shape, colour, box)], _mode(rng, kind == "color"))
    question, answer = {
        "color": (fixture.Q_COLOR, colour),
        "shape": (fixture.Q_SHAPE, shape),
        "position": (fixture.Q_POSITION, position),
    }[kind]
    return _prompt(_either_separator(rng), question), [img], answer


def _wiki(rng: random.Random, _kind: str):
    kind = rng.choice(fixture.WIKI_KINDS)
    name = rng.choice(sorted(fixture.WIKI_ENTITIES[kind]))
    colour, shape = fixture.WIKI_ENTITIES[kind][name]
    size = _canvas(rng)
    img = fixture.draw_scene(size, [(shape, colour, _anywhere(rng, size))])
    if rng.random() < 0.75:
        return _prompt(f"wiki_{kind}", fixture.Q_WIKI_NAME.format(kind=kind)), [img], name
    return _prompt(f"wiki_{kind}", fixture.Q_WIKI_COLOR.format(kind=kind)), [img], colour


def _count(rng: random.Random, _kind: str):
    n = rng.randint(1, 9)
    size = _canvas(rng)
    img = fixture.draw_scene(size, _dots(rng, n, size, [rng.choice(list(fixture.COLORS))]), _mode(rng, False))
    question = fixture.Q_COUNT if rng.random() < 0.7 else f"{fixture.Q_COUNT[:-1]} in the diagram?"
    return _prompt(_either_separator(rng), question), [img], str(n)


def _sum(rng: random.Random, _kind: str):
    n1, n2 = rng.randint(1, 4), rng.randint(1, 4)
    c1, c2 = rng.sample([c for c in fixture.COLORS if c != "black"], 2)
    size = _canvas(rng)
    img = fixture.draw_scene(size, _dots(rng, n1 + n2, size, [c1] * n1 + [c2] * n2))
    question = f"How many {c1} dots and {c2} dots are there in total?"
    return _prompt(_either_separator(rng), question), [img], str(n1 + n2)


def _relation(rng: random.Random, _kind: str):
    c1, c2 = rng.sample(list(fixture.COLORS), 2)
    s1, s2 = rng.choice(fixture.SHAPES), rng.choice(fixture.SHAPES)
    relation = rng.choice(fixture.RELATIONS)
    first, second = _RELATION_SIDES[relation]
    size = _canvas(rng, rng.choice(("square", "wide" if first in ("left", "right") else "tall")))
    scale = rng.uniform(0.28, 0.38)
    shapes = [(s1, c1, _box(rng, size, *_CENTRES[first], scale)), (s2, c2, _box(rng, size, *_CENTRES[second], scale))]
    img = fixture.draw_scene(size, shapes)
    return _prompt("spatial", fixture.Q_RELATION.format(c1=c1, s1=s1, c2=c2, s2=s2)), [img], relation


def _multi(rng: random.Random, _kind: str):
    k = rng.randint(2, 3)
    colour = rng.choice(list(fixture.COLORS))
    images, total = [], 0
    for _ in range(k):
        n = rng.randint(1, 5)
        total += n
        size = _canvas(rng, rng.choice(("square", "tall")))
        images.append(fixture.draw_scene(size, _dots(rng, n, size, [colour]), _mode(rng, False)))
    question = f"Each of the {k} diagrams shows some dots. How many dots are there in all diagrams?"
    return _prompt("seephys", question, k), images, str(total)


@dataclass(frozen=True)
class Kind:
    make: object  # (rng, kind) -> (prompt, images, answer)
    weight: float  # share of the training mixture
    ability: str  # the ability of the fixture items it teaches
    teaches: str  # which fixture items


# The mixture gives both abilities the same weight (6 + 6): any gap between the curves comes from difficulty.
EXAMPLE_KINDS: dict[str, Kind] = {
    "color": Kind(_single, 1.5, "perception", "MMBench colour questions, Wiki colour questions"),
    "shape": Kind(_single, 1.5, "perception", "MMBench shape questions"),
    "position": Kind(_single, 1.0, "perception", "MMBench position questions"),
    "wiki": Kind(_wiki, 2.0, "perception", "Wiki animal / plant / attraction / celebrity identification"),
    "count": Kind(_count, 2.5, "reasoning", "MMBench counting questions, MathVista and SeePhys single counts"),
    "sum": Kind(_sum, 1.5, "reasoning", "MathVista two-colour sums"),
    "relation": Kind(_relation, 1.5, "reasoning", "spatial reasoning (relation of two shapes)"),
    "multi": Kind(_multi, 0.5, "reasoning", "SeePhys multi-image sums"),
}


def make_example(rng: random.Random, kind: str | None = None, weights: Mapping[str, float] | None = None) -> Example:
    """A freshly drawn example of `kind`, or of a kind drawn from `weights` (default: EXAMPLE_KINDS' weights)."""
    if kind is None:
        weights = weights or {k: v.weight for k, v in EXAMPLE_KINDS.items()}
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    prompt, images, answer = EXAMPLE_KINDS[kind].make(rng, kind)
    return Example(kind, prompt, images, answer)
