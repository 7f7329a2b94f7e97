"""`radar-tasks export-dataset`: the validated M3-Bench records as a Hugging Face dataset folder (the hub's layout).

    OUT/README.md                                   dataset card: YAML header (configs; license left to the data
                                                    owner), source and counts
    OUT/<config>/test-00000-of-00001.parquet        one config per leaf task, split `test`, parquet shards

Each row is the normalized record of `m3bench.load_category` (docs/ARCHITECTURE.md), validated the same way, with
`images` as a list of `datasets.Image` holding the released files' bytes (so the folder is portable; `path` is the
file's path under the M3-Bench root) and `image_files` those paths. Skipped items (more than 12 images) carry no
images. A category whose json file is missing gets the package's one-row stand-in (`absent`), so its task reports
no score there either. Lite tasks read their category's config (their task selects the sample).
`datasets.load_dataset(OUT, "<config>")` loads a config; publishing it (`push_to_hub`) is the data owner's call.
Everything is written to a hidden sibling folder first and renamed at the end: a failed export leaves nothing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from radar_tasks import taxonomy
from radar_tasks.data import m3bench
from radar_tasks.data.images import IMAGE_FILES
from radar_tasks.errors import CategoryFileMissing, M3BenchError
from radar_tasks.staging import replaceable, replacing

SPLIT = "test"
MAX_SHARD_BYTES = 500 * 2**20  # push_to_hub's default shard size
TASK_PREFIX = "radar_"
CARD_MARKER = "<!-- written by radar-tasks export-dataset -->"
PAPER = "https://arxiv.org/abs/2602.12892"
# What the card says of each column (the record's columns are m3bench's; one not listed here gets an empty cell).
COLUMNS = {
    "id": "the q_id of the released json",
    "subset": "the M3-Bench subset",
    "category": "MMBench category / MMMU-Pro subject as in the file name; the subset for single-file subsets",
    "ability": "`perception` or `reasoning`",
    "source_file": "the json file under the release root",
    "images": "the item's images in prompt order (none for skipped items); `path` is the released file",
    IMAGE_FILES: "the same images' paths under the release root",
    "question": "as released (MMMU-Pro `<image k>` references kept)",
    "answer": "as released",
    "distractors": "as released (`distraction`)",
    "choices": "the candidates scored, correct first (`[answer] + distractors`, or option letters for MMMU-Pro "
    "items whose options are images)",
    "options_text": "the options block shown after the question of such MMMU-Pro items, else empty",
    "skipped": f"more than {taxonomy.MAX_IMAGES} images: not scored (wrong in accuracy, out of SDS)",
    "absent": "true only for the one-row stand-in of a category whose json file was missing from the release",
    "source": "JSON of the remaining released fields",
}


def config_name(subset: str, category: str) -> str:
    """Dataset config of a leaf task: its task name without the `radar_` prefix (`mmbench_ocr`, `wiki_animal`)."""
    return taxonomy.task_name(subset, category).removeprefix(TASK_PREFIX)


def exported_features():
    """The record features with `images` as embedded images, and their paths under the release root beside."""
    import datasets

    features = {}
    for name, feature in m3bench.record_features().items():
        if name == "images":
            features["images"] = datasets.Sequence(datasets.Image())
            features[IMAGE_FILES] = datasets.Sequence(datasets.Value("string"))
        else:
            features[name] = feature
    return datasets.Features(features)


@dataclass
class ConfigSummary:
    config: str
    subset: str
    category: str
    ability: str
    items: int
    skipped: int
    absent: bool
    shards: int


def _embedded(record: dict, root: Path) -> dict:
    """`record` with its images as {bytes, path} and their paths (relative to the root); none for a skipped item."""
    images = []
    for path in [] if record["skipped"] else record["images"]:
        rel = Path(path).relative_to(root).as_posix()
        try:
            images.append({"bytes": Path(path).read_bytes(), "path": rel})
        except OSError as exc:
            raise M3BenchError(
                f"image {rel} cannot be read ({exc.strerror})", record["source_file"], record["id"]
            ) from None
    return {**record, "images": images, IMAGE_FILES: [image["path"] for image in images]}


def category_dataset(subset: str, category: str, root: Path):
    """The exported rows of one leaf task as a `datasets.Dataset` (images embedded), and whether it is absent."""
    import datasets

    try:
        records, absent = m3bench.load_category(subset, category, root), False
    except CategoryFileMissing:
        records, absent = m3bench.absent_category(subset, category), True
    features = exported_features()
    # Built with the images as plain {bytes, path} structs, then cast: encoding them as Image would drop the bytes
    # of any image whose relative path happens to exist from the current directory.
    staged = datasets.Features(
        {**features, "images": [{"bytes": datasets.Value("binary"), "path": datasets.Value("string")}]}
    )
    rows = [_embedded(r, root) for r in records]
    return datasets.Dataset.from_list(rows, features=staged).cast(features), absent


def _write_shards(dataset, folder: Path, max_shard_bytes: int) -> int:
    folder.mkdir(parents=True)
    n = max(1, math.ceil(dataset.data.nbytes / max_shard_bytes))
    for i in range(n):
        dataset.shard(num_shards=n, index=i, contiguous=True).to_parquet(
            str(folder / f"{SPLIT}-{i:05d}-of-{n:05d}.parquet")
        )
    return n


def _card(summaries: list[ConfigSummary], root: Path) -> str:
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        # Left for the data owner: M3-Bench's sources come with their own licenses (MMBench, MMMU-Pro, MathVista,
        # SeePhys, Wikipedia); set the right one before publishing.
        license="unknown",
        pretty_name="M3-Bench",
        language=["en"],
        task_categories=["visual-question-answering", "multiple-choice"],
        tags=["radar", "soft-discrimination-score", "multimodal", "pretraining-evaluation"],
    )
    MetadataConfigs(
        {s.config: {"data_files": [{"split": SPLIT, "path": f"{s.config}/{SPLIT}-*.parquet"}]} for s in summaries}
    ).to_dataset_card_data(data)
    # No `dataset_info` (features, split sizes) in the header: every parquet file carries its features, and
    # `load_dataset` parses the whole header for each config it loads (pure-Python YAML: with it, 42 of the
    # header's 55 KB on the fixture, ~40% of the time lmms-eval takes to build one exported task)
    subsets = {s.subset for s in summaries}
    lines = [
        "# M3-Bench",
        "",
        CARD_MARKER,
        "",
        f"The evaluation benchmark of RADAR ([arXiv 2602.12892]({PAPER})): multiple-choice items scored by "
        "likelihood (Soft Discrimination Score: the softmax probability of the correct candidate), split into "
        "perception and reasoning. This folder holds the validated records of the authors' release "
        f"(`{root.name}/`, the zip layout), one config per category, split `{SPLIT}`; images are embedded.",
        "",
        "## Sources",
        "",
        "| subset | source | folder in the release |",
        "|---|---|---|",
        *[f"| {s.name} | {s.source} | `{s.folder}/` |" for s in taxonomy.SUBSETS if s.name in subsets],
        "",
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
        *[f"| `{name}` | {COLUMNS.get(name, '')} |" for name in exported_features()],
        "",
        "## Counts",
        "",
        "| config | subset | category | ability | items | skipped |",
        "|---|---|---|---|---|---|",
        *[
            f"| `{s.config}` | {s.subset} | {s.category} | {s.ability} | "
            f"{'absent' if s.absent else s.items} | {s.skipped} |"
            for s in summaries
        ],
        f"| **all** | | | | {sum(s.items for s in summaries if not s.absent)} | {sum(s.skipped for s in summaries)} |",
        "",
        "## Use",
        "",
        "```python",
        "import datasets",
        "",
        f'ds = datasets.load_dataset("<this folder or hub id>", "{summaries[0].config}", split="{SPLIT}")',
        "```",
        "",
        "Publishing (the data owner's decision, after setting the license above): upload the folder as is, e.g.",
        "",
        "```python",
        "from huggingface_hub import HfApi",
        "",
        'HfApi().upload_folder(folder_path="<this folder>", repo_id="<owner>/M3-Bench", repo_type="dataset")',
        "```",
        "",
        'or, per config, `datasets.load_dataset(<folder>, <config>)["test"].push_to_hub("<owner>/M3-Bench", '
        "config_name=<config>)`.",
        "",
    ]
    return DatasetCard("---\n" + data.to_yaml() + "\n---\n" + "\n".join(lines)).content


def export_dataset(
    out: str | os.PathLike,
    root: str | os.PathLike | None = None,
    subsets: list[str] | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> list[ConfigSummary]:
    """Write the dataset folder `out` from the M3-Bench root (default $RADAR_M3BENCH_DIR); raises M3BenchError."""
    root_path = m3bench.resolve_root(root).resolve()
    out = Path(out).absolute()
    names = [s.name for s in taxonomy.SUBSETS]
    unknown = [s for s in subsets or [] if s not in names]
    if unknown:
        raise M3BenchError(f"unknown subset {unknown[0]!r} (one of {', '.join(names)})")
    if not replaceable(out, "README.md", CARD_MARKER):
        raise M3BenchError(f"{out} exists and is not an M3-Bench dataset export: refusing to overwrite it")
    with replacing(out) as staging:
        summaries = []
        for subset, category in taxonomy.leaf_tasks():
            if subsets and subset not in subsets:
                continue
            dataset, absent = category_dataset(subset, category, root_path)
            name = config_name(subset, category)
            shards = _write_shards(dataset, staging / name, max_shard_bytes)
            summaries.append(
                ConfigSummary(
                    name,
                    subset,
                    category,
                    taxonomy.ability_of(subset, category),
                    0 if absent else len(dataset),
                    sum(dataset["skipped"]) if not absent else 0,
                    absent,
                    shards,
                )
            )
        (staging / "README.md").write_text(_card(summaries, root_path), encoding="utf-8")
    return summaries


def exported_configs(path: str | os.PathLike) -> set[str] | None:
    """The configs a local dataset folder declares in its card, or None when `path` is not a local folder."""
    from huggingface_hub import DatasetCard

    card = Path(path) / "README.md"
    if not card.is_file():
        return None
    configs = DatasetCard.load(card).data.to_dict().get("configs") or []
    return {c["config_name"] for c in configs}
