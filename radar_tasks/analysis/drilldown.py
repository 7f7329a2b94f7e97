"""The per-item drill-down of report.html, as data: every item of the runs' per-item logs with its question, its
candidates' probabilities at each run, whether it was answered correctly, the checkpoint from which it stays
answered correctly, and its images.

`item_data(runs, out)` reads the per-item logs through `Run.items()` (radar_tasks.results) and returns one JSON-able
dict (the page's `RADAR_ITEMS`):

* `runs`: the report's runs in report order (label, series, progress value); `series`: each series' runs in
  training order (`runs.series_of`);
* `items`: per item (keyed by task and id) `task`, `id`, `subset`, `category`, `ability`, `q` (the prompt as
  scored, image markers kept), `c` (candidates, correct first: index `gold`), `img` (indexes into `srcs`), and per
  run (None where the run lacks the item): `p` (each candidate's softmax probability of the logged scores, rounded
  to `PROB_DIGITS`; None when not scored), `ok` (1 correct, 0 not); per series `learned` (`learned_at`);
* `srcs`: the images, each once: downscaled JPEG thumbnails embedded as data URIs when the runs show at most
  `MAX_EMBEDDED_IMAGES` distinct images (at most `THUMB_SIDE` pixels a side), else links relative to the report's
  folder (they work while the report stays beside the data); `images` says which, and why.
"""

from __future__ import annotations

import base64
import io
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from radar_tasks.analysis.runs import Run, progress, series_of
from radar_tasks.metrics import sds

THUMB_SIDE = 128  # pixels, the longer side of an embedded thumbnail
THUMB_QUALITY = 70  # JPEG quality of an embedded thumbnail (a 128-pixel photo: 2-6 KB)
MAX_EMBEDDED_IMAGES = 500  # more distinct images than this: linked, not embedded (bounds the page: a few MB)
PROB_DIGITS = 4


def probabilities(record: dict) -> list[float] | None:
    """The softmax of an item's logged scores (one per candidate, correct first), or None when it was not scored."""
    scores = record.get("scores")
    if record.get("skipped") or not scores:
        return None
    try:
        return sds.softmax([float(s) for s in scores])
    except (sds.NonFiniteScoreError, TypeError, ValueError):
        return None


def learned_at(correct: Sequence[bool | None]) -> int | None:
    """The first position from which the item is answered correctly at every later position that has it (None
    entries: runs without the item, passed over); None when it is not answered correctly at the last one."""
    known = [i for i, ok in enumerate(correct) if ok is not None]
    if not known or not correct[known[-1]]:
        return None
    first = known[-1]
    for i in reversed(known):
        if not correct[i]:
            break
        first = i
    return first


def thumbnail(path: str) -> str | None:
    """A JPEG data URI of the image at `path`, at most THUMB_SIDE pixels a side (transparency onto white); None
    when it cannot be read."""
    from radar_tasks.data import images

    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_SIDE, THUMB_SIDE))  # JPEG: decode at a reduced scale (fast for large photos)
            im.thumbnail((THUMB_SIDE, THUMB_SIDE))
            rgb = images.to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _link(path: str, out: Path) -> str:
    try:
        rel = os.path.relpath(path, out)
    except ValueError:  # another drive (Windows): an absolute file URI
        return Path(path).as_uri()
    return urllib.parse.quote(Path(rel).as_posix())


def _round(values: list[float] | None) -> list[float] | None:
    return None if values is None else [round(v, PROB_DIGITS) for v in values]


def item_data(runs: Sequence[Run], out: str | os.PathLike) -> dict:
    """The drill-down of `runs` (module docstring); `out`: the report's folder (image links are relative to it)."""
    out = Path(out).absolute()
    index = {r.label: i for i, r in enumerate(runs)}
    series = []
    for name, members in series_of(runs).items():
        xs, _, xlabel = progress(members)
        series.append({"name": name, "runs": [index[r.label] for r in members], "x": xs, "xlabel": xlabel})
    items: dict[tuple[str, str], dict] = {}
    for i, run in enumerate(runs):
        for rec in run.items() if run.has_logs else ():
            key = (rec["task"], str(rec["id"]))
            item = items.get(key)
            if item is None:
                candidates = rec.get("candidates") or [f"#{k + 1}" for k in range(len(rec.get("scores") or []))]
                item = items[key] = {
                    "task": rec["task"],
                    "id": str(rec["id"]),
                    "subset": rec.get("subset") or "",
                    "category": rec.get("category") or "",
                    "ability": rec.get("ability") or "",
                    "q": rec.get("prompt") or "",
                    "c": [str(c) for c in candidates],
                    "gold": int(rec.get("gold") or 0),
                    "paths": list(rec.get("images") or []),
                    "p": [None] * len(runs),
                    "ok": [None] * len(runs),
                }
            probs = probabilities(rec)
            item["p"][i] = _round(probs) if probs is not None and len(probs) == len(item["c"]) else None
            item["ok"][i] = int(bool(rec.get("correct")))
    for item in items.values():
        item["learned"] = [learned_at([item["ok"][i] for i in s["runs"]]) for s in series]
        item["learned"] = [None if k is None else s["runs"][k] for k, s in zip(item["learned"], series)]

    paths = list(dict.fromkeys(p for item in items.values() for p in item["paths"]))
    present = [p for p in paths if os.path.isfile(p)]
    embed = len(present) <= MAX_EMBEDDED_IMAGES
    srcs: list[str | None] = []
    position = {}
    for p in paths:
        position[p] = len(srcs)
        if not os.path.isfile(p):
            srcs.append(None)
        else:
            srcs.append(thumbnail(p) if embed else _link(p, out))
    for item in items.values():
        item["img"] = [position[p] for p in item.pop("paths")]
    missing = len(paths) - len(present)
    if not paths:
        note = "the per-item logs name no images"
    elif embed:
        note = f"{len(present)} image(s) embedded as thumbnails of at most {THUMB_SIDE} px"
    else:
        note = (
            f"{len(present)} images linked relative to this page, not embedded (more than {MAX_EMBEDDED_IMAGES}): "
            "they show while the report stays where it was written, beside the data"
        )
    if missing:
        note += f"; {missing} image file(s) no longer found where the runs read them"
    return {
        "runs": [{"label": r.label, "series": r.series} for r in runs],
        "series": series,
        "items": list(items.values()),
        "srcs": srcs,
        "images": {"mode": "embedded" if embed else "linked", "count": len(present), "note": note},
    }
