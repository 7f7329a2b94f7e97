"""Reading the released M3-Bench folder layout: the only place that knows file names, json fields and image rules.

`load_category` turns one category's json file(s) into a `datasets.Dataset` of normalized records
(docs/ARCHITECTURE.md), validated and cached by `datasets` after the first read. `check_root` collects every
problem of a whole root for `radar-tasks check-data`.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from radar_tasks import prompts, taxonomy
from radar_tasks.data import images as images_io
from radar_tasks.errors import CategoryFileMissing, M3BenchError

ENV_VAR = "RADAR_M3BENCH_DIR"
# Bump when the record layout or its derivation changes: part of the datasets cache fingerprint.
RECORD_VERSION = 3


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The M3-Bench root: `root`, else $RADAR_M3BENCH_DIR."""
    if root is None:
        root = os.environ.get(ENV_VAR)
        if not root:
            raise M3BenchError(f"{ENV_VAR} is not set: point it at the M3-Bench folder (the one holding "
                               "general_visual_question_answering/, Wiki_animal_identification/, ...)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise M3BenchError(f"M3-Bench root {path} is not a folder (from {ENV_VAR} or the command line)")
    return path


def subset_files(root: Path, subset: str) -> tuple[dict[str, list[Path]], list[Path]]:
    """Json files of a subset by category, and the json files whose name matches no known category."""
    spec = taxonomy.SUBSETS_BY_NAME[subset]
    folder = root / spec.folder
    if not folder.is_dir():
        raise M3BenchError(f"subset folder {spec.folder}/ is missing under {root} (needed by radar_{subset})")
    known = set(taxonomy.categories(subset))
    by_category: dict[str, list[Path]] = {}
    unknown: list[Path] = []
    for path in sorted(folder.glob("*.json")):  # the reference globs unsorted; sorted for determinism
        category = taxonomy.category_of_file(subset, path.stem)
        if category in known:
            by_category.setdefault(category, []).append(path)
        else:
            unknown.append(path)
    return by_category, unknown


def _no_duplicate_keys(rel: str):
    def hook(pairs):
        counts = Counter(k for k, _ in pairs)
        dup = next((k for k, n in counts.items() if n > 1), None)
        if dup is not None:
            raise M3BenchError("duplicate id in the json object", rel, dup)
        return dict(pairs)

    return hook


def read_json(path: Path, root: Path) -> dict:
    rel = str(path.relative_to(root))
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys(rel))
    except UnicodeDecodeError as exc:
        raise M3BenchError(f"not UTF-8 text ({exc.reason})", rel) from None
    except json.JSONDecodeError as exc:
        raise M3BenchError(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", rel) from None
    if not isinstance(data, dict):
        raise M3BenchError(f"expected a JSON object q_id -> item, got {type(data).__name__}", rel)
    return data


@dataclass
class _Draw:
    """Deterministic per-item draw: the same item gets the same option order in every run and file order."""

    seed: int = 0

    def correct_first(self, key: str) -> bool:
        return random.Random(f"{self.seed}:{key}").random() > 0.5


def image_paths(root: Path, subset: str, category: str, qid: str, item: dict, shown_text: str) -> list[Path]:
    spec = taxonomy.SUBSETS_BY_NAME[subset]
    folder = root / spec.folder / "images"
    base = qid.split("--", 1)[0]
    if spec.image_rule == "mmbench":
        return [folder / category / f"{qid}.jpg"]
    if spec.image_rule == "mmmu_pro":  # one image per <image k> occurrence, in order of appearance
        return [folder / category / f"{qid}_image_{k}.png" for k in prompts.IMAGE_REF.findall(shown_text)]
    if spec.image_rule == "seephys":
        return [folder / f"{base}_{i}.png" for i in range(int(item.get("img_num", 1)))]
    return [folder / f"{base}.jpg"]


def normalize_item(root: Path, path: Path, subset: str, category: str, qid: str, item, draw: _Draw) -> dict:
    """One released item -> one normalized record; raises M3BenchError on the first problem."""
    rel = str(path.relative_to(root))

    def bad(problem: str) -> M3BenchError:
        return M3BenchError(problem, rel, qid)

    if not isinstance(item, dict):
        raise bad(f"item is a {type(item).__name__}, expected an object")
    for key in ("question", "answer"):
        if key not in item:
            raise bad(f"'{key}' is missing")
    question, answer = item["question"], item["answer"]
    if not isinstance(question, str):
        raise bad(f"'question' is not a string (got {type(question).__name__})")
    if not isinstance(answer, str):
        raise bad(f"'answer' is not a string (got {type(answer).__name__}: {answer!r})")
    distractors = item.get("distraction")
    if distractors is None:
        raise bad("'distraction' is missing")
    if not isinstance(distractors, list) or not distractors:
        raise bad("'distraction' must be a non-empty list of strings")
    if not all(isinstance(d, str) for d in distractors):
        raise bad("'distraction' holds a non-string")
    if answer in distractors:
        raise bad(f"the answer {answer!r} is repeated among the distractors")
    if len(set(distractors)) != len(distractors):
        raise bad("'distraction' repeats a candidate")
    if subset == "seephys":
        n = item.get("img_num", 1)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise bad(f"'img_num' must be a non-negative integer (got {n!r})")

    # The scripts show the options (and score letters) when the ORIGINAL options name an image, whatever the
    # answer and the distractors hold.
    options_text, choices, correct_first = "", [answer, *distractors], False
    if subset == "mmmu_pro":
        ori_options = item.get("ori_options")
        if not isinstance(ori_options, str):
            raise bad("'ori_options' is missing" if ori_options is None else
                      f"'ori_options' is not a string (got {type(ori_options).__name__})")
        if prompts.IMAGE_REF.search(ori_options):
            if len(choices) > len(prompts.OPTION_LETTERS):
                raise bad(f"{len(choices)} options: more than the {len(prompts.OPTION_LETTERS)} letters A..Z")
            correct_first = draw.correct_first(f"{subset}/{qid}")
            options_text = prompts.option_block(answer, distractors, correct_first)
            choices = prompts.option_letters(len(choices), correct_first)
    images = image_paths(root, subset, category, qid, item, question + options_text)
    skipped = len(images) > taxonomy.MAX_IMAGES
    if not skipped:
        for img in images:
            if not img.is_file():
                raise bad(f"image {img.relative_to(root)} is missing")
            try:
                images_io.decode(img).close()
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
                raise bad(f"image {img.relative_to(root)} is unreadable or truncated ({exc})") from None
    rest = {k: v for k, v in item.items() if k not in ("question", "answer", "distraction")}
    return {
        "id": qid,
        "subset": subset,
        "category": category,
        "ability": taxonomy.ability_of(subset, category),
        "source_file": rel,
        "images": [str(p) for p in images],
        "question": question,
        "answer": answer,
        "distractors": list(distractors),
        "choices": choices,
        "options_text": options_text,
        "correct_first": correct_first,
        "skipped": skipped,
        "absent": False,
        "source": json.dumps(rest, ensure_ascii=False, sort_keys=True),
    }


def iter_records(root: str, subset: str, category: str, files: str, stamp: str = "") -> Iterator[dict]:
    """Records of one category (generator for datasets.Dataset.from_generator).

    Arguments are strings: datasets would shard over list arguments. `files` is a JSON list of paths; `stamp` is
    unused here, but datasets hashes the arguments into the cache key, so edited files are read again.
    """
    root_path, draw, seen = Path(root), _Draw(), {}
    for file in json.loads(files):
        path = Path(file)
        for qid, item in read_json(path, root_path).items():
            if qid in seen:
                raise M3BenchError(f"duplicate id, also in {seen[qid]}", str(path.relative_to(root_path)), qid)
            seen[qid] = str(path.relative_to(root_path))
            yield normalize_item(root_path, path, subset, category, qid, item, draw)


def category_files(root: Path, subset: str, category: str) -> list[Path]:
    by_category, _ = subset_files(root, subset)
    if category not in by_category:
        spec = taxonomy.SUBSETS_BY_NAME[subset]
        raise CategoryFileMissing(f"no json file for category {category!r} in {spec.folder}/ under {root}")
    return by_category[category]


def load_category(subset: str, category: str, root: str | os.PathLike | None = None):
    """The normalized records of one category as a `datasets.Dataset`, cached by datasets after the first read."""
    import datasets

    root_path = resolve_root(root)
    files = category_files(root_path, subset, category)
    # The cache fingerprint covers the json files' state, so an edited file is read again.
    stamp = json.dumps([RECORD_VERSION] + [(f.stat().st_size, f.stat().st_mtime_ns) for f in files])
    try:
        return datasets.Dataset.from_generator(
            iter_records,
            gen_kwargs={"root": str(root_path), "subset": subset, "category": category,
                        "files": json.dumps([str(f) for f in files]), "stamp": stamp},
            features=record_features(),
        )
    except Exception as exc:
        cause = exc
        while cause is not None and not isinstance(cause, M3BenchError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise M3BenchError(cause.problem, cause.file, cause.item) from None
        raise


def data_fingerprint(root: str | os.PathLike | None = None, subsets: list[str] | None = None) -> str:
    """A digest of what the tasks of `subsets` (default: all) would read: the bytes of every json file of their
    folders and the name, size and mtime of every file under their `images/` (hashing every image would read
    gigabytes). Missing subset folders count as absent. Runs scored on data of one fingerprint are comparable."""
    import hashlib

    root_path = resolve_root(root)
    digest = hashlib.sha256(f"records v{RECORD_VERSION}".encode())
    for subset in subsets or [s.name for s in taxonomy.SUBSETS]:
        folder = root_path / taxonomy.SUBSETS_BY_NAME[subset].folder
        digest.update(f"\0{subset}".encode())
        if not folder.is_dir():
            digest.update(b"\0absent")
            continue
        for path in sorted(folder.glob("*.json")):
            digest.update(f"\0{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        images = folder / "images"
        for path in sorted(images.rglob("*")) if images.is_dir() else ():
            if path.is_file():
                st = path.stat()
                digest.update(f"\0{path.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def absent_category(subset: str, category: str):
    """A one-row stand-in for a category whose json file is missing from its subset folder.

    lmms-eval cannot build a task without docs, so the row exists; it is never scored (`process_results` returns no
    metric for it), and groups then average the categories present, as the reference scripts do (they glob).
    """
    import datasets

    row = {"id": "", "subset": subset, "category": category, "ability": taxonomy.ability_of(subset, category),
           "source_file": "", "images": [], "question": "", "answer": "", "distractors": [], "choices": ["-"],
           "options_text": "", "correct_first": False, "skipped": True, "absent": True, "source": "{}"}
    return datasets.Dataset.from_list([row], features=record_features())


def record_features():
    import datasets

    s = datasets.Value("string")
    return datasets.Features({
        "id": s, "subset": s, "category": s, "ability": s, "source_file": s,
        "images": datasets.Sequence(s), "question": s, "answer": s, "distractors": datasets.Sequence(s),
        "choices": datasets.Sequence(s), "options_text": s, "correct_first": datasets.Value("bool"),
        "skipped": datasets.Value("bool"),
        "absent": datasets.Value("bool"), "source": s,
    })


@dataclass
class CheckReport:
    root: Path
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (subset, category) -> items
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_root(root: str | os.PathLike | None = None, subsets: list[str] | None = None) -> CheckReport:
    """Validate a whole root (or some subsets): counts per subset and category, and every problem found."""
    root_path = resolve_root(root)
    report = CheckReport(root_path)
    for subset in subsets or [s.name for s in taxonomy.SUBSETS]:
        try:
            by_category, unknown = subset_files(root_path, subset)
        except M3BenchError as exc:
            report.problems.append(str(exc))
            continue
        for path in unknown:
            report.problems.append(f"{path.relative_to(root_path)}: file name matches no category the task list "
                                   f"knows for radar_{subset}: not evaluated")
        for category in taxonomy.categories(subset):
            if category not in by_category:
                report.problems.append(f"{taxonomy.SUBSETS_BY_NAME[subset].folder}/: no json file for category "
                                       f"{category!r} (task {taxonomy.task_name(subset, category)})")
                continue
            n = skipped = 0
            seen: dict[str, str] = {}
            for path in by_category[category]:
                try:
                    data = read_json(path, root_path)
                except M3BenchError as exc:
                    report.problems.append(str(exc))
                    continue
                for qid, item in data.items():
                    rel = str(path.relative_to(root_path))
                    if qid in seen:
                        report.problems.append(str(M3BenchError(f"duplicate id, also in {seen[qid]}", rel, qid)))
                    seen[qid] = rel
                    try:
                        record = normalize_item(root_path, path, subset, category, qid, item, _Draw())
                    except M3BenchError as exc:
                        report.problems.append(str(exc))
                        continue
                    n += 1
                    skipped += record["skipped"]
            report.counts[(subset, category)] = n
            report.skipped[(subset, category)] = skipped
    return report
