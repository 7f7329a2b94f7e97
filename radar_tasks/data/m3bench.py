"""Reading the released M3-Bench folder layout: the only place that knows file names, json fields and image rules.

`iter_category` is the one validator: one category's json file(s) -> normalized records (docs/ARCHITECTURE.md), or
the one-line problem (`M3BenchError`) of each bad file or item. Everything that reads the data goes through it:
`load_category` (the tasks, and the check an lmms-eval run makes before its model loads) stops at the first
problem and caches the records with `datasets`, keyed on the bytes of the json files; a cached category checks
that its images are still the files it validated (size and mtime) and validates again when they are not.
`check_root` (`radar-tasks check-data`) collects every problem of a root.

Paths: item ids are parts of file names, so an id that could leave its folder (a path separator, `.`/`..`, a
control character) is an error, and every image path is checked to lie inside the subset's `images/` folder.
Symlinks under the root are followed wherever they point: the root is trusted as a tree (folders linked in from
other disks are common), the item ids in its json files are not.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radar_tasks import prompts, taxonomy
from radar_tasks.data import images as images_io
from radar_tasks.errors import CategoryFileMissing, M3BenchError, cause_of

ENV_VAR = "RADAR_M3BENCH_DIR"
# Bump when the record layout or its derivation changes: part of the datasets cache key.
RECORD_VERSION = 4
# File names of the release (`MathVista_1000_pretrained_mllm_eval.json`); subsets whose names are not known
# (SeePhys, spatial) may hold one json file of any name.
RELEASE_FILE = re.compile(r".+_\d+_pretrained_mllm_eval")
MAX_CANDIDATES = len(prompts.OPTION_LETTERS)  # answer + distractors; MMMU-Pro letters run out beyond it
MAX_IMAGE_REFS = 1000  # images one item may name (img_num, <image k>): far beyond the 12 that are scored
# ChatML-style control tokens (`<|im_start|>`, `<|image_pad|>`): a tokenizer would read them as control, not text
CONTROL_TOKEN = re.compile(r"<\|[^<>|\s]{1,64}\|>")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The M3-Bench root: `root`, else $RADAR_M3BENCH_DIR."""
    if root is None:
        root = os.environ.get(ENV_VAR)
        if not root:
            raise M3BenchError(
                f"{ENV_VAR} is not set: point it at the M3-Bench folder (the one holding "
                "general_visual_question_answering/, Wiki_animal_identification/, ...)"
            )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise M3BenchError(f"M3-Bench root {path} is not a folder (from {ENV_VAR} or the command line)")
    return path


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@dataclass
class SubsetFiles:
    """What a subset folder holds: the json files of each category, json files that are not read, other entries."""

    by_category: dict[str, list[Path]]
    unknown: list[Path]
    other: list[Path]


def subset_files(root: Path, subset: str) -> SubsetFiles:
    """The files of a subset folder, by the layout's rules (never a file the layout does not know).

    Subsets with one file per category: the category is parsed from the file name. Single-file subsets: the json
    files named like the release's (`<name>_<N>_pretrained_mllm_eval.json`), else a lone json file of any name.
    """
    spec = taxonomy.SUBSETS_BY_NAME[subset]
    folder = root / spec.folder
    if not folder.is_dir():
        raise M3BenchError(f"subset folder {spec.folder}/ is missing under {root} (needed by radar_{subset})")
    jsons = sorted(p for p in folder.glob("*.json") if p.is_file())  # the reference globs unsorted: sorted here
    by_category: dict[str, list[Path]] = {}
    unknown: list[Path] = []
    if spec.file_pattern is None:
        named = [p for p in jsons if RELEASE_FILE.fullmatch(p.stem)]
        data = named or (jsons if len(jsons) == 1 else [])
        if data:
            by_category[subset] = data
        unknown = [p for p in jsons if p not in data]
    else:
        known = set(taxonomy.categories(subset))
        for path in jsons:
            category = taxonomy.category_of_file(subset, path.stem)
            if category in known:
                by_category.setdefault(category, []).append(path)
            else:
                unknown.append(path)
    other = sorted(p for p in folder.iterdir() if p.name != "images" and p not in jsons)
    return SubsetFiles(by_category, unknown, other)


def unknown_file_problem(root: Path, subset: str, path: Path, found: SubsetFiles) -> str:
    """The one line saying why a json file of a subset folder is not read."""
    spec = taxonomy.SUBSETS_BY_NAME[subset]
    rel = _rel(path, root)
    if spec.file_pattern is not None:
        return f"{rel}: file name matches no category the task list knows for radar_{subset}: not read"
    data = found.by_category.get(subset)
    if data:
        return f"{rel}: a json file beside {data[0].name}, the data of radar_{subset}: not read"
    return (
        f"{rel}: {spec.folder}/ holds several json files and none is named <name>_<N>_pretrained_mllm_eval.json: "
        f"which one is radar_{subset}'s data is unknown: none is read"
    )


def _no_duplicate_keys(rel: str):
    def hook(pairs):
        counts = Counter(k for k, _ in pairs)
        dup = next((k for k, n in counts.items() if n > 1), None)
        if dup is not None:
            raise M3BenchError("duplicate id in the json object", rel, dup)
        return dict(pairs)

    return hook


def read_json(path: Path, root: Path) -> dict:
    """The json object of a data file (q_id -> item), or an M3BenchError naming the file."""
    rel = _rel(path, root)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise M3BenchError(f"not UTF-8 text ({exc.reason})", rel) from None
    except OSError as exc:
        raise M3BenchError(f"cannot be read ({exc.strerror or exc})", rel) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys(rel))
    except json.JSONDecodeError as exc:
        where = f"{'' if exc.msg.endswith(' at') else ' at'} line {exc.lineno} column {exc.colno}"  # "... starting at"
        raise M3BenchError(f"malformed JSON: {exc.msg}{where}", rel) from None
    except RecursionError:
        raise M3BenchError("JSON nested too deeply to be M3-Bench data", rel) from None
    if not isinstance(data, dict):
        raise M3BenchError(f"expected a JSON object q_id -> item, got {type(data).__name__}", rel)
    if not data:
        raise M3BenchError("the JSON object holds no items", rel)
    return data


@dataclass
class _Draw:
    """Deterministic per-item draw: the same item gets the same option order in every run and file order."""

    seed: int = 0

    def correct_first(self, key: str) -> bool:
        return random.Random(f"{self.seed}:{key}").random() > 0.5


def id_problem(qid: str) -> str | None:
    """Why `qid` cannot name files inside its folder (None: it can). The layout builds image file names from ids,
    and no released id holds a separator."""
    base = qid.split("--", 1)[0]
    if any(c in qid for c in "/\\"):
        return "the id holds a path separator: ids name files inside their folder only"
    if any(ord(c) < 32 or ord(c) == 127 for c in qid):
        return "the id holds a control character"
    if not qid.strip() or base in ("", ".", ".."):
        return "the id names no file (empty, or '.' / '..' before '--')"
    if len(qid.encode("utf-8")) > 200:
        return "the id is longer than a file name can be"
    return None


def _inside(path: Path, folder: Path) -> bool:
    """`path` lies inside `folder`, judged on the names (symlinks are followed later, see the module doc)."""
    return os.path.normpath(path).startswith(os.path.normpath(folder) + os.sep)


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


def text_problem(name: str, text: str) -> str | None:
    """Why a question, answer or distractor cannot be scored as the text it is (None: it can)."""
    if not text.strip():
        return f"'{name}' is empty"
    if prompts.IMAGE_MARKER in text:
        return f"'{name}' holds {prompts.IMAGE_MARKER!r}, the prompts' image marker: it would be read as an image"
    control = CONTROL_TOKEN.search(text)
    if control:
        return f"'{name}' holds {control.group()!r}, a model control token: it would not be read as text"
    return None


def image_stamp(path: Path) -> str:
    """What identifies a validated image file without reading it: size and modification time ('' if absent)."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def normalize_item(root: Path, path: Path, subset: str, category: str, qid: str, item, draw: _Draw) -> dict:
    """One released item -> one normalized record; raises M3BenchError on the first problem."""
    rel = _rel(path, root)

    def bad(problem: str) -> M3BenchError:
        return M3BenchError(problem, rel, qid)

    problem = id_problem(qid)
    if problem:
        raise bad(problem)
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
    if len(distractors) + 1 > MAX_CANDIDATES:
        raise bad(f"'distraction' holds {len(distractors)} candidates, more than {MAX_CANDIDATES - 1}")
    texts = [("question", question), ("answer", answer)]
    texts += [(f"distraction[{i}]", d) for i, d in enumerate(distractors)]
    for name, text in texts:
        problem = text_problem(name, text)
        if problem:
            raise bad(problem)
    if answer in distractors:
        raise bad(f"the answer {answer!r} is repeated among the distractors")
    if len(set(distractors)) != len(distractors):
        raise bad("'distraction' repeats a candidate")
    if subset == "seephys":
        n = item.get("img_num", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGE_REFS:
            raise bad(f"'img_num' must be an integer from 1 to {MAX_IMAGE_REFS} (got {n!r})")

    # The scripts show the options (and score letters) when the ORIGINAL options name an image, whatever the
    # answer and the distractors hold.
    options_text, choices, correct_first = "", [answer, *distractors], False
    if subset == "mmmu_pro":
        ori_options = item.get("ori_options")
        if not isinstance(ori_options, str):
            raise bad(
                "'ori_options' is missing"
                if ori_options is None
                else f"'ori_options' is not a string (got {type(ori_options).__name__})"
            )
        if prompts.IMAGE_REF.search(ori_options):
            correct_first = draw.correct_first(f"{subset}/{qid}")
            options_text = prompts.option_block(answer, distractors, correct_first)
            choices = prompts.option_letters(len(choices), correct_first)
    if len(prompts.IMAGE_REF.findall(question + options_text)) > MAX_IMAGE_REFS:
        raise bad(f"more than {MAX_IMAGE_REFS} <image k> references")
    images = image_paths(root, subset, category, qid, item, question + options_text)
    folder = root / taxonomy.SUBSETS_BY_NAME[subset].folder / "images"
    skipped = len(images) > taxonomy.MAX_IMAGES
    stamps = []
    for img in [] if skipped else images:
        if not _inside(img, folder):
            raise bad(f"image path {img} leaves {_rel(folder, root)}/")
        stamp = image_stamp(img)
        if not stamp or not img.is_file():
            raise bad(f"image {_rel(img, root)} is missing")
        try:
            images_io.decode(img).close()
        except images_io.ImageTooLarge as exc:
            raise bad(f"image {_rel(img, root)} is {exc}") from None
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
            raise bad(f"image {_rel(img, root)} is unreadable or truncated ({exc})") from None
        stamps.append(stamp)
    rest = {k: v for k, v in item.items() if k not in ("question", "answer", "distraction")}
    try:
        source = json.dumps(rest, ensure_ascii=False, sort_keys=True)
    except (RecursionError, ValueError, TypeError) as exc:
        raise bad(f"its other fields cannot be kept ({type(exc).__name__})") from None
    return {
        "id": qid,
        "subset": subset,
        "category": category,
        "ability": taxonomy.ability_of(subset, category),
        "source_file": rel,
        "images": [str(p) for p in images],
        "image_stamps": stamps,
        "question": question,
        "answer": answer,
        "distractors": list(distractors),
        "choices": choices,
        "options_text": options_text,
        "correct_first": correct_first,
        "skipped": skipped,
        "absent": False,
        "source": source,
    }


def iter_category(root: Path, subset: str, category: str, files: Iterable[Path]) -> Iterator[dict | M3BenchError]:
    """The validator: each record of one category's files in file order, or the M3BenchError of each bad file
    or item in its place (so a caller may stop at the first or collect them all)."""
    draw, seen = _Draw(), {}
    for path in files:
        try:
            data = read_json(path, root)
        except M3BenchError as exc:
            yield exc
            continue
        rel = _rel(path, root)
        for qid, item in data.items():
            if qid in seen:
                yield M3BenchError(f"duplicate id, also in {seen[qid]}", rel, qid)
                continue
            seen[qid] = rel
            try:
                yield normalize_item(root, path, subset, category, qid, item, draw)
            except M3BenchError as exc:
                yield exc


def iter_records(root: str, subset: str, category: str, files: str, stamp: str = "") -> Iterator[dict]:
    """Records of one category, raising the first problem (generator for datasets.Dataset.from_generator).

    Arguments are strings: datasets would shard over list arguments. `files` is a JSON list of paths; `stamp` is
    unused here, but datasets hashes the arguments into the cache key (see `load_category`).
    """
    for entry in iter_category(Path(root), subset, category, [Path(f) for f in json.loads(files)]):
        if isinstance(entry, M3BenchError):
            raise entry
        yield entry


def category_files(root: Path, subset: str, category: str) -> list[Path]:
    found = subset_files(root, subset)
    if category not in found.by_category:
        spec = taxonomy.SUBSETS_BY_NAME[subset]
        unread = (
            f" ({len(found.unknown)} other json file(s) not read: see radar-tasks check-data)" if found.unknown else ""
        )
        raise CategoryFileMissing(f"no json file for category {category!r} in {spec.folder}/ under {root}{unread}")
    return found.by_category[category]


def content_key(files: list[Path]) -> str:
    """The cache key of a category: its record version and the names and bytes of its json files."""
    digest = hashlib.sha256(f"records v{RECORD_VERSION}".encode())
    for path in files:
        digest.update(f"\0{path}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _column(records, name: str) -> list:
    """One column of records as Python values, read from the arrow table (`records[name]` would copy the features
    for every read, most of what a cached category costs)."""
    if getattr(records, "_indices", None) is not None:
        return records[name]
    return records.data.column(name).to_pylist()


def validated_images(records) -> list[tuple[str, str]]:
    """(image path, stamp when validated) of every image the records name."""
    pairs = zip(_column(records, "images"), _column(records, "image_stamps"))
    return [pair for paths, stamps in pairs for pair in zip(paths, stamps)]


def changed_images(records) -> list[str]:
    """Image files of (cached) records that are no longer the files validated: missing, or another size / mtime."""
    return [p for p, s in validated_images(records) if image_stamp(Path(p)) != s]


def _generate(root: Path, subset: str, category: str, files: list[Path], key: str):
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a failed read is one line, not a progress bar and a line
    try:
        return datasets.Dataset.from_generator(
            iter_records,
            gen_kwargs={
                "root": str(root),
                "subset": subset,
                "category": category,
                "files": json.dumps([str(f) for f in files]),
                "stamp": key,
            },
            features=record_features(),
        )
    except Exception as exc:
        cause = cause_of(exc, M3BenchError)
        if cause is not None:
            raise M3BenchError(cause.problem, cause.file, cause.item) from None
        raise
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


# (root, subset, category, datasets cache) -> (content key, [(image, stamp)], records): what this process loaded
_LOADED: dict[tuple[str, str, str, str], tuple[str, list[tuple[str, str]], object]] = {}


def _kept(where: tuple, key: str):
    """The records this process already loaded for `where`, if its json bytes (`key`) and images are unchanged."""
    kept = _LOADED.get(where)
    if kept is None or kept[0] != key or any(image_stamp(Path(p)) != s for p, s in kept[1]):
        return None
    return kept[2]


def load_category(subset: str, category: str, root: str | os.PathLike | None = None):
    """The validated records of one category as a `datasets.Dataset`, cached by datasets after the first read.

    The cache key is the content of the json files; a cached category whose images changed since they were
    validated (deleted, replaced) is validated again, under a key that also holds the images' new stamps. Within a
    process a category is read and validated once: later calls with the same json bytes and image stamps get the
    same records from memory (the pre-flight check and the tasks' `process_docs` then share one load).
    """
    import datasets.config

    root_path = resolve_root(root)
    files = category_files(root_path, subset, category)
    key = content_key(files)
    where = (str(root_path.absolute()), subset, category, str(datasets.config.HF_DATASETS_CACHE))
    kept = _kept(where, key)
    if kept is not None:
        return kept
    records = _generate(root_path, subset, category, files, key)
    images = validated_images(records)
    changed = [p for p, s in images if image_stamp(Path(p)) != s]
    if changed:
        from loguru import logger

        logger.warning(
            f"{_rel(Path(changed[0]), root_path)}"
            + (f" and {len(changed) - 1} more image(s)" if len(changed) > 1 else "")
            + f" changed since validated: validating "
            f"{taxonomy.task_name(subset, category)} again"
        )
        records = _generate(root_path, subset, category, files, key + _stamps_key(changed))
        images = validated_images(records)
    _LOADED[where] = (key, images, records)
    return records


def _stamps_key(paths: list[str]) -> str:
    return hashlib.sha256("\0".join(f"{p}\0{image_stamp(Path(p))}" for p in paths).encode()).hexdigest()


def data_fingerprint(root: str | os.PathLike | None = None, subsets: list[str] | None = None) -> str:
    """A digest of what the tasks of `subsets` (default: all) would read: the bytes of every json file of their
    folders and the name, size and mtime of every file under their `images/` (hashing every image would read
    gigabytes). Missing subset folders count as absent. Runs scored on data of one fingerprint are comparable."""
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

    row = {
        "id": "",
        "subset": subset,
        "category": category,
        "ability": taxonomy.ability_of(subset, category),
        "source_file": "",
        "images": [],
        "image_stamps": [],
        "question": "",
        "answer": "",
        "distractors": [],
        "choices": ["-"],
        "options_text": "",
        "correct_first": False,
        "skipped": True,
        "absent": True,
        "source": "{}",
    }
    return datasets.Dataset.from_list([row], features=record_features())


def record_features():
    import datasets

    s = datasets.Value("string")
    return datasets.Features(
        {
            "id": s,
            "subset": s,
            "category": s,
            "ability": s,
            "source_file": s,
            "images": datasets.Sequence(s),
            "image_stamps": datasets.Sequence(s),
            "question": s,
            "answer": s,
            "distractors": datasets.Sequence(s),
            "choices": datasets.Sequence(s),
            "options_text": s,
            "correct_first": datasets.Value("bool"),
            "skipped": datasets.Value("bool"),
            "absent": datasets.Value("bool"),
            "source": s,
        }
    )


@dataclass
class CheckReport:
    root: Path
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (subset, category) -> items
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # entries the layout does not know, which hold no data

    @property
    def ok(self) -> bool:
        return not self.problems


def check_root(
    root: str | os.PathLike | None = None,
    subsets: list[str] | None = None,
    categories: set[tuple[str, str]] | None = None,
) -> CheckReport:
    """Validate a whole root, or some subsets (and within them only `categories`, (subset, category) pairs):
    counts per subset and category, and every problem found."""
    root_path = resolve_root(root)
    report = CheckReport(root_path)
    for subset in subsets or [s.name for s in taxonomy.SUBSETS]:
        try:
            found = subset_files(root_path, subset)
        except M3BenchError as exc:
            report.problems.append(str(exc))
            continue
        report.problems += [unknown_file_problem(root_path, subset, p, found) for p in found.unknown]
        report.notes += [f"{_rel(p, root_path)}: not part of the layout: ignored" for p in found.other]
        for category in taxonomy.categories(subset):
            if categories is not None and (subset, category) not in categories:
                continue
            if category not in found.by_category:
                report.problems.append(
                    f"{taxonomy.SUBSETS_BY_NAME[subset].folder}/: no json file for category "
                    f"{category!r} (task {taxonomy.task_name(subset, category)})"
                )
                continue
            n = skipped = 0
            for entry in iter_category(root_path, subset, category, found.by_category[category]):
                if isinstance(entry, M3BenchError):
                    report.problems.append(str(entry))
                    continue
                n += 1
                skipped += entry["skipped"]
            report.counts[(subset, category)] = n
            report.skipped[(subset, category)] = skipped
    return report
