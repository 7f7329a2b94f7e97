"""M3-Bench's subsets, categories and perception/reasoning split: the one place this mapping lives.

Everything else (the data reader, the YAML generator, the group YAMLs, the README table) is derived from here, and
task and group names resolve to their leaves and subsets here only (`leaf_of`, `leaves_of`, `subsets_of`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PERCEPTION = "perception"
REASONING = "reasoning"
ABILITIES = (PERCEPTION, REASONING)

# MMBench dev (EN) L3 categories by MMBench's own L1 ability (the category is the name in the file name).
MMBENCH_CATEGORIES: dict[str, str] = {
    **{
        c: PERCEPTION
        for c in (
            "image_style",
            "image_scene",
            "image_emotion",
            "image_quality",
            "image_topic",  # coarse perception
            "object_localization",
            "attribute_recognition",
            "celebrity_recognition",
            "ocr",  # fine-grained, instance
            "spatial_relationship",
            "attribute_comparison",
            "action_recognition",  # fine-grained, cross-instance
        )
    },
    **{
        c: REASONING
        for c in (
            "physical_property_reasoning",
            "function_reasoning",
            "identity_reasoning",  # attribute reasoning
            "social_relation",
            "physical_relation",
            "nature_relation",  # relation reasoning
            "future_prediction",
            "structuralized_imagetext_understanding",  # logic reasoning
        )
    },
}

MMMU_PRO_SUBJECTS: tuple[str, ...] = (
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


@dataclass(frozen=True)
class Subset:
    name: str  # our short name; task `radar_<name>`
    folder: str  # folder under the M3-Bench root
    ability: str | None  # None: per category (MMBench)
    file_pattern: str | None  # regex capturing the category from a json file stem; None: one file, category = name
    image_rule: str  # how item images are found, see data.m3bench.image_paths
    source: str
    # Prompt layout (radar_tasks.prompts): what follows the image(s) before the question, and whether images sit
    # inline at the question's `<image k>` references instead of before it (MMMU-Pro).
    image_separator: str = " "
    images_inline: bool = False


SUBSETS: tuple[Subset, ...] = (
    Subset(
        "mmbench",
        "general_visual_question_answering",
        None,
        r"MMBench_(?P<category>.+)_(?P<n>\d+)_pretrained_mllm_eval",
        "mmbench",
        "MMBench dev (EN)",
        image_separator="\n",
    ),
    Subset(
        "mmmu_pro",
        "multiple_discipline_reasoning",
        REASONING,
        r"MMMU_Pro_(?P<category>.+)_(?P<n>\d+)_pretrained_mllm_eval",
        "mmmu_pro",
        "MMMU-Pro (standard)",
        image_separator="\n",
        images_inline=True,
    ),
    Subset(
        "mathvista", "mathematical_reasoning", REASONING, None, "base_id", "MathVista testmini", image_separator="\n"
    ),
    Subset("seephys", "physical_reasoning", REASONING, None, "seephys", "SeePhys"),
    Subset("spatial", "spatial_reasoning", REASONING, None, "base_id", "spatial reasoning"),
    Subset("wiki_animal", "Wiki_animal_identification", PERCEPTION, None, "base_id", "new: Wikipedia animals"),
    Subset("wiki_plant", "Wiki_plant_identification", PERCEPTION, None, "base_id", "new: Wikipedia plants"),
    Subset(
        "wiki_attraction", "Wiki_attraction_identification", PERCEPTION, None, "base_id", "new: Wikipedia attractions"
    ),
    Subset(
        "wiki_celebrity", "Wiki_celebrity_identification", PERCEPTION, None, "base_id", "new: Wikipedia celebrities"
    ),
)
SUBSETS_BY_NAME = {s.name: s for s in SUBSETS}

# The reference skips (and counts as wrong) items with more images than this.
MAX_IMAGES = 12


def subset_order(name: str) -> tuple[int, str]:
    """Sort key: the subsets in SUBSETS order, unknown names after them, alphabetically."""
    names = [s.name for s in SUBSETS]
    return (names.index(name) if name in names else len(names), name)


def categories(subset: str) -> tuple[str, ...]:
    """The categories the task list knows for a subset (single-file subsets: the subset itself)."""
    if subset == "mmbench":
        return tuple(MMBENCH_CATEGORIES)
    if subset == "mmmu_pro":
        return MMMU_PRO_SUBJECTS
    return (subset,)


def ability_of(subset: str, category: str) -> str:
    spec = SUBSETS_BY_NAME[subset]
    return spec.ability or MMBENCH_CATEGORIES[category]


def category_of_file(subset: str, stem: str) -> str | None:
    """Category named by a json file stem, or None when the stem does not follow the subset's pattern."""
    spec = SUBSETS_BY_NAME[subset]
    if spec.file_pattern is None:
        return subset
    m = re.fullmatch(spec.file_pattern, stem)
    return m.group("category") if m else None


def task_name(subset: str, category: str | None = None) -> str:
    """lmms-eval task name of a category leaf (or of a single-file subset)."""
    if category is None or SUBSETS_BY_NAME[subset].file_pattern is None:
        return f"radar_{subset}"
    return f"radar_{subset}_{category.lower()}"


def leaf_tasks() -> list[tuple[str, str]]:
    """(subset, category) of every leaf task, in a stable order."""
    return [(s.name, c) for s in SUBSETS for c in categories(s.name)]


def groups() -> dict[str, list[str]]:
    """Group name -> member tasks or groups (the group YAMLs). Every group averages subsets, never leaf tasks
    (metrics/items.py)."""
    mmb = {a: [task_name("mmbench", c) for c, ab in MMBENCH_CATEGORIES.items() if ab == a] for a in ABILITIES}
    single = {a: [task_name(s.name) for s in SUBSETS if s.file_pattern is None and s.ability == a] for a in ABILITIES}
    return {
        "radar_mmbench_perception": mmb[PERCEPTION],
        "radar_mmbench_reasoning": mmb[REASONING],
        "radar_mmbench": ["radar_mmbench_perception", "radar_mmbench_reasoning"],
        "radar_mmmu_pro": [task_name("mmmu_pro", c) for c in MMMU_PRO_SUBJECTS],
        "radar_perception": ["radar_mmbench_perception", *single[PERCEPTION]],
        "radar_reasoning": ["radar_mmbench_reasoning", "radar_mmmu_pro", *single[REASONING]],
        "radar_mmm": [
            "radar_mmbench",
            "radar_mmmu_pro",
            *[task_name(s.name) for s in SUBSETS if s.file_pattern is None],
        ],
    }


def leaf_of(name: str) -> tuple[str, str] | None:
    """(subset, category) of a leaf task name (its lite twin too); None for a group or a task that is not ours."""
    from radar_tasks.data.lite import SUFFIX

    return {task_name(s, c): (s, c) for s, c in leaf_tasks()}.get(name.removesuffix(SUFFIX))


def leaves_of(name: str) -> list[tuple[str, str]] | None:
    """(subset, category) of every leaf task a task or group name covers (a lite task or group reads the same
    categories as its full one). None: not one of ours (a bare subset name such as `mmbench` is not: lmms-eval has
    tasks of that name)."""
    from radar_tasks.data.lite import SUFFIX

    leaf = leaf_of(name)
    if leaf is not None:
        return [leaf]
    members = groups().get(name.removesuffix(SUFFIX))
    if members is None:
        return None
    return list(dict.fromkeys(leaf for member in members for leaf in leaves_of(member)))


def subsets_of(names) -> list[str]:
    """The subsets the task and group `names` read, in SUBSETS order (what a data fingerprint covers); names that
    are not ours read none."""
    found = {subset for name in names for subset, _ in leaves_of(name) or ()}
    return sorted(found, key=subset_order)
