"""radar_hf reproduces the authors' per-family procedure (docs/REFERENCE.md), item by item: an independent oracle.

The fixture is a miniature M3-Bench whose MMMU-Pro and SeePhys PNGs are rewritten with transparency (RGBA with a
transparent black border, LA, P with a transparent index, CMYK; `radar_tasks.demo.transparent`), plus two MMMU-Pro
items where the options block trigger (`ori_options`) and the candidates disagree. For each family's tiny model, one
real lmms-eval run (`simple_evaluate`, `protocol=paper`, fp32) gives the per-item SDS `p` of `--log_samples`; the
authors' procedure written below gives it again, sharing no code with the package: it reads the fixture's json and
image files itself (file names, `<image k>` order, `ori_options`), converts images as each script (qwen-vl-utils
`to_rgb` for Qwen2-VL: only RGBA onto white; `convert("RGB")` for InternVL and LLaVA), builds its own prompt strings,
options block and two letters, applies the LLaVA one-distractor rule and InternVL's reversed image blocks, runs one
forward per candidate and takes the mean raw logit of the tokens of tokenize(prompt + candidate) beyond
len(tokenize(prompt)), then the softmax. The two draws the scripts make from one unreplayable global stream (the A/B
order, LLaVA's kept distractor) are the package's documented per-item seeded rules, written out here as well.
A run without protocol is checked the same way against the default path (transparency onto white, every letter).
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from lmms_eval.api.instance import Instance
from PIL import Image

from radar_tasks.demo.fixture import make_fixture
from radar_tasks.demo.transparent import add_transparency
from radar_tasks.models.radar_hf import RadarHF

pytestmark = pytest.mark.slow

# One task per subset shape. MMMU-Pro: Agriculture = one inline image with text options, an image-option item with a
# question image, and the two trigger items added below; Architecture = two inline images + an image-option item
# with 4 options (3 distractors: two letters scored of four shown).
TASKS = {  # task -> (folder, json glob)
    "radar_mmbench_image_style": ("general_visual_question_answering", "MMBench_image_style_*.json"),
    "radar_mmmu_pro_agriculture": ("multiple_discipline_reasoning", "MMMU_Pro_Agriculture_*.json"),
    "radar_mmmu_pro_architecture_and_engineering": (
        "multiple_discipline_reasoning",
        "MMMU_Pro_Architecture_and_Engineering_*.json",
    ),
    "radar_mathvista": ("mathematical_reasoning", "MathVista_*.json"),
    "radar_seephys": ("physical_reasoning", "SeePhys_*.json"),
    "radar_spatial": ("spatial_reasoning", "*.json"),  # the Wiki subsets' prompt shape too
}
TRANSPARENT_TASKS = [
    t for t, (folder, _) in TASKS.items() if folder in ("multiple_discipline_reasoning", "physical_reasoning")
]
LIMIT = 4  # items per task: SeePhys items with 1, 1, 2 and 3 images; MathVista's two-line "Hint:" item
FAMILIES = ("qwen2_vl", "llava_onevision", "internvl")
DROPPED = -1e29  # logged score of a candidate the protocol leaves out (at most this)

# ------------------------------------------------------------------------------------------------------------------
# The authors' procedure, written from docs/REFERENCE.md (no radar_tasks code below this line and above the fixtures)
# ------------------------------------------------------------------------------------------------------------------
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
LLAVA_IMAGE = "<image>"
INTERNVL_SYSTEM = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
IMAGE_REF = re.compile(r"<image \d+>")
SELECT = " Please select the correct option: "


def correct_first(qid: str) -> bool:
    """The package's seeded stand-in for the scripts' `random.random() > 0.5` (documented in README)."""
    return random.Random(f"0:mmmu_pro/{qid}").random() > 0.5


def llava_kept(qid: str, n_candidates: int) -> int:
    """The package's seeded stand-in for the LLaVA script's `random.sample(distraction, 1)`: the kept index."""
    return random.Random(f"0:llava_mmmu_one_distractor/{qid}").randrange(1, n_candidates)


def read_items(bench: Path, task: str) -> list[dict]:
    """The first LIMIT items of the task's json, as the scripts see them: the fields, the file names of its images
    in prompt order, the shown question (MMMU-Pro: with the options block when `ori_options` names an image) and
    the candidates (letters for such items; the correct one first)."""
    folder, pattern = TASKS[task]
    [path] = sorted((bench / folder).glob(pattern))
    images_dir = bench / folder / "images"
    out = []
    for qid, item in list(json.loads(path.read_text(encoding="utf-8")).items())[:LIMIT]:
        question, answers, block = item["question"], [item["answer"], *item["distraction"]], None
        if folder == "multiple_discipline_reasoning":
            subject = "_".join(path.stem.split("_")[2:-4])
            refs = IMAGE_REF.findall(question)
            if IMAGE_REF.findall(item["ori_options"]):
                first = correct_first(qid)
                options = answers if first else [*item["distraction"], item["answer"]]
                for option in options:
                    refs += IMAGE_REF.findall(option)
                question += " " + " ".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(options)) + SELECT
                block = ["A", "B"] if first else ["B", "A"]
            files = [images_dir / subject / f"{qid}_{r[1:-1].replace(' ', '_')}.png" for r in refs]
        elif folder == "general_visual_question_answering":
            files = [images_dir / "_".join(path.stem.split("_")[1:-4]) / f"{qid}.jpg"]
        elif folder == "physical_reasoning":
            files = [images_dir / f"{qid.split('--')[0]}_{i}.png" for i in range(item["img_num"])]
        else:
            files = [images_dir / f"{qid.split('--')[0]}.jpg"]
        out.append(
            {
                "id": qid,
                "folder": folder,
                "question": question,
                "answers": answers,
                "letters": block,
                "files": files,
                "ori_options": item.get("ori_options", ""),
            }
        )
    return out


def qwen_to_rgb(image):
    """qwen-vl-utils `to_rgb`: an RGBA image is pasted onto white with its alpha as the mask; others convert."""
    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        return white
    return image.convert("RGB")


def onto_white(image):
    """The default path: any transparency composited onto white."""
    if not image.has_transparency_data:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGB", image.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.split()[3])
    return white


def qwen_fetch_resize(image):
    """qwen-vl-utils `fetch_image` with its default bounds (4 .. 16384 tokens of 28 px), before the processor."""
    w, h = image.size
    hb, wb = max(28, round(h / 28) * 28), max(28, round(w / 28) * 28)
    if hb * wb > 16384 * 784:
        beta = math.sqrt(h * w / (16384 * 784))
        hb, wb = math.floor(h / beta / 28) * 28, math.floor(w / beta / 28) * 28
    elif hb * wb < 4 * 784:
        beta = math.sqrt(4 * 784 / (h * w))
        hb, wb = math.ceil(h * beta / 28) * 28, math.ceil(w * beta / 28) * 28
    return image.resize((wb, hb))


def candidate_scores(model, encode, prompt: str, candidates: list[str]) -> tuple[list[float], list[float]]:
    """One forward per prompt + candidate: (mean raw logit, mean log-prob) of the tokens beyond
    len(tokenize(prompt))."""
    n_prompt = encode(prompt)["input_ids"].shape[1]
    logits_mean, logprob_mean = [], []
    for text in candidates:
        inputs = encode(text)
        ids = inputs["input_ids"][0]
        with torch.inference_mode():
            logits = model(**inputs).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        positions = range(n_prompt, len(ids))
        logits_mean.append(sum(float(logits[t - 1, ids[t]]) for t in positions) / len(positions))
        logprob_mean.append(sum(float(logprobs[t - 1, ids[t]]) for t in positions) / len(positions))
    return logits_mean, logprob_mean


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def inline(text: str, token: str) -> str:
    return IMAGE_REF.sub(token, text)


def reference_qwen2_vl(model, processor, item, to_rgb=qwen_to_rgb):
    """Qwen2VL/qwen2vl_pretrained_mllm_eval.py: to_rgb + fetch resize, images first then the question (what the base
    template renders; MMMU-Pro inline, no template), `" " + answer`."""
    images = [qwen_fetch_resize(to_rgb(Image.open(f))) for f in item["files"]]
    if item["folder"] == "multiple_discipline_reasoning":
        prompt = inline(item["question"], QWEN_IMAGE)
    else:
        prompt = QWEN_IMAGE * len(images) + item["question"]

    def encode(text):
        return processor(text=[text], images=images or None, return_tensors="pt")

    cands = item["letters"] or item["answers"]
    return candidate_scores(model, encode, prompt, [prompt + " " + a for a in cands])[0]


def llava_question(item, token=LLAVA_IMAGE) -> str:
    q, folder = item["question"], item["folder"]
    if folder == "multiple_discipline_reasoning":
        return inline(q, token)
    if folder in ("general_visual_question_answering", "mathematical_reasoning"):
        return f"{token}\n{q}"
    if folder == "physical_reasoning":
        return token * len(item["files"]) + " " + q
    return f"{token} {q}"


def reference_llava_onevision(model, processor, item):
    """LLaVA-NeXT/llava-ov_pretrained_mllm_eval.py: convert("RGB"), the `plain` template, answer with no space;
    MMMU-Pro text-option items keep the answer and one (seeded) distractor."""
    images = [Image.open(f).convert("RGB") for f in item["files"]]
    prompt = llava_question(item) + "\n"

    def encode(text):
        return processor(text=[text], images=images or None, return_tensors="pt")

    cands = item["letters"] or item["answers"]
    if item["folder"] == "multiple_discipline_reasoning" and not item["letters"] and len(cands) > 2:
        cands = [cands[0], cands[llava_kept(item["id"], len(cands))]]
    return candidate_scores(model, encode, prompt, [prompt + a for a in cands])[0], cands


def reference_internvl(model, processor, item, images=None, system=INTERNVL_SYSTEM, reverse_blocks=True):
    """InternVL/intern3_5vl_pretrained_mllm_eval.py: convert("RGB"), 1..3 tiles + thumbnail, the script's expansion
    loop (prepend `<image>` + sep, expand the first `<image>`: several non-inline images come out in reverse block
    order, pixels in file order), the internvl2_5 ChatML with the system message, the tokenizer alone."""
    images = images if images is not None else [Image.open(f).convert("RGB") for f in item["files"]]
    tiles = [
        processor.image_processor(images=[im], crop_to_patches=True, min_patches=1, max_patches=3, return_tensors="pt")
        for im in images
    ]
    num_patches = [int(t["num_patches"][0]) for t in tiles]
    pixel_values = torch.cat([t["pixel_values"] for t in tiles]) if tiles else None
    sep = (
        "\n"
        if item["folder"]
        in ("general_visual_question_answering", "multiple_discipline_reasoning", "mathematical_reasoning")
        else " "
    )
    question = item["question"]
    if item["folder"] == "multiple_discipline_reasoning":
        question = inline(question, "<image>")

    def block(k):
        return "<img>" + "<IMG_CONTEXT>" * processor.image_seq_length * num_patches[k] + "</img>"

    if reverse_blocks or item["folder"] == "multiple_discipline_reasoning":
        for k in range(len(images)):
            if "<image>" not in question:
                question = f"<image>{sep}" + question
            question = question.replace("<image>", block(k), 1)
    else:
        question = "".join(block(k) + sep for k in range(len(images))) + question
    query = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"

    def encode(text):
        enc = dict(processor.tokenizer(text, return_tensors="pt"))
        if pixel_values is not None:
            enc["pixel_values"] = pixel_values
        return enc

    cands = item["letters"] or item["answers"]
    return candidate_scores(model, encode, query, [query + a for a in cands])[0]


def reference_default_raw(model, processor, item):
    """The default path (no protocol) on Qwen2-VL: the task's raw prompt (images, then the subset's separator and
    the question; MMMU-Pro inline), `" " + candidate`, transparency onto white, no extra resize, EVERY letter of an
    options block (the correct one first), mean log-probability."""
    images = [onto_white(Image.open(f)) for f in item["files"]]
    if item["folder"] == "multiple_discipline_reasoning":
        prompt = inline(item["question"], QWEN_IMAGE)
    else:
        prompt = QWEN_IMAGE * len(images) + " " + item["question"]  # separator " " (SeePhys, MMMU-Pro)
    cands = item["answers"]
    if item["letters"]:
        n = len(item["answers"])
        correct = "A" if item["letters"][0] == "A" else chr(ord("A") + n - 1)
        cands = [correct, *[chr(ord("A") + i) for i in range(n) if chr(ord("A") + i) != correct]]

    def encode(text):
        return processor(text=[text], images=images or None, return_tensors="pt")

    return candidate_scores(model, encode, prompt, [prompt + " " + a for a in cands])[1]


def load_reference(folder, **processor_kwargs):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(folder, **processor_kwargs)


# the Qwen2-VL script's processor: min_pixels=256*28*28, max_pixels=768*28*28
QWEN_SCRIPT_PIXELS = {"min_pixels": 256 * 28 * 28, "max_pixels": 768 * 28 * 28}


# ------------------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------------------
TRIGGER_ITEMS = {  # MMMU-Pro items where `ori_options` and the candidates disagree on holding images
    "test_Agriculture_block": {  # text candidates, an image in the original options: the block is shown
        "question": "Which option names the colour of <image 1>?",
        "answer": "red",
        "distraction": ["blue", "green"],
        "ori_options": "['<image 2>', 'red', 'blue', 'green']",
    },
    "test_Agriculture_noblock": {  # image references as candidates, text original options: scored as written
        "question": "Which picture matches <image 1>?",
        "answer": "<image 2>",
        "distraction": ["<image 3>"],
        "ori_options": "['the left one', 'the right one']",
    },
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("refproto")
    bench = make_fixture(root / "M3-Bench")
    [path] = (bench / "multiple_discipline_reasoning").glob("MMMU_Pro_Agriculture_*.json")
    data = json.loads(path.read_text())
    data.update(TRIGGER_ITEMS)
    path.write_text(json.dumps(data))
    for qid in TRIGGER_ITEMS:
        shutil.copy(
            bench / "multiple_discipline_reasoning" / "images" / "Agriculture" / "test_Agriculture_1_image_1.png",
            bench / "multiple_discipline_reasoning" / "images" / "Agriculture" / f"{qid}_image_1.png",
        )
    modes = add_transparency(bench)
    assert set(modes.values()) == {"RGBA", "LA", "P", "CMYK"}
    return bench


@pytest.fixture(scope="module")
def items(bench):
    """(task, id) -> the item as the scripts read it."""
    return {(task, it["id"]): it for task in TASKS for it in read_items(bench, task)}


PAPER = "device=cpu,dtype=float32,protocol=paper"
SMALL = "processor_kwargs=size.shortest_edge:3136;size.longest_edge:50176"  # 4..64 tokens per image: cheaper
RUNS = {  # name -> (tiny model, model_args beyond pretrained, tasks, the Qwen reference's processor kwargs)
    # the check's exact arguments (the preset's 256..768 tokens per image) where the images are transparent
    "qwen2_vl": ("qwen2_vl", PAPER, TRANSPARENT_TASKS, QWEN_SCRIPT_PIXELS),
    "qwen2_vl-small": (
        "qwen2_vl",
        f"{PAPER},{SMALL}",
        [t for t in TASKS if t not in TRANSPARENT_TASKS],
        {"min_pixels": 3136, "max_pixels": 50176},
    ),
    "llava_onevision": ("llava_onevision", PAPER, list(TASKS), {}),
    "internvl": ("internvl", PAPER, list(TASKS), {}),
    "qwen2_vl-default": ("qwen2_vl", "device=cpu,dtype=float32", TRANSPARENT_TASKS, {}),
}


@pytest.fixture(scope="module")
def lmms_runs(bench, tiny_checkpoint):
    """run name -> {(task, id): per-item sds record} from one lmms-eval run each (in process, one TaskManager)."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RADAR_M3BENCH_DIR", str(bench))
        manager, runs = TaskManager(model_name="radar_hf"), {}  # the per-model prompt kwargs (image markers)
        for name, (family, args, tasks, _) in RUNS.items():
            results = simple_evaluate(
                model="radar_hf",
                model_args=f"pretrained={tiny_checkpoint(family)},{args}",
                tasks=tasks,
                limit=LIMIT,
                log_samples=True,
                bootstrap_iters=0,
                task_manager=manager,
                verbosity="WARNING",
            )
            assert results is not None and set(tasks) <= set(results["results"]), name
            runs[name] = {(t, row["sds"]["id"]): row["sds"] for t in tasks for row in results["samples"][t]}
    return runs


def _shape(item) -> str:
    if item["letters"]:
        return "letters" + ("" if any(IMAGE_REF.search(a) for a in item["answers"]) else " of text options")
    if item["folder"] == "multiple_discipline_reasoning":
        return "image refs as text" if IMAGE_REF.search(item["answers"][0]) else "inline"
    return f"{min(len(item['files']), 2)} images"


def _modes(item) -> set[str]:
    return {Image.open(f).mode for f in item["files"]}


# ------------------------------------------------------------------------------------------------------------------
# The per-family comparison
# ------------------------------------------------------------------------------------------------------------------
def test_every_item_of_the_selection_is_logged(lmms_runs, items):
    for name, records in lmms_runs.items():
        assert set(records) == {key for key in items if key[0] in RUNS[name][2]}, name
        assert not any(r["skipped"] for r in records.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_lmms_eval_run_matches_the_authors_procedure(family, lmms_runs, items, tiny_checkpoint):
    seen = Counter()  # what the comparison went through: (folder, shape), image modes, one-distractor items
    for name, (model_of, _, tasks, processor_kwargs) in RUNS.items():
        if model_of == family and "default" not in name:
            model, processor = load_reference(tiny_checkpoint(family), **processor_kwargs)
            seen += _compare(family, lmms_runs[name], items, tasks, model, processor)
    assert {key[0] for key in seen if isinstance(key, tuple)} == {v[0] for v in TASKS.values()}
    assert {
        ("multiple_discipline_reasoning", s)
        for s in ("letters", "letters of text options", "inline", "image refs as text")
    } <= set(seen)
    assert ("physical_reasoning", "2 images") in seen
    assert {"RGBA", "LA", "P", "CMYK"} <= set(seen)  # every transparency kind went through the run
    assert seen["one distractor"] >= (2 if family == "llava_onevision" else 0)


def _compare(family, records, items, tasks, model, processor) -> Counter:
    seen = Counter()
    for key, item in items.items():
        if key[0] not in tasks:
            continue
        rec = records[key]
        scored = [s for s in rec["scores"] if s > DROPPED]
        if family == "qwen2_vl":
            ref = reference_qwen2_vl(model, processor, item)
        elif family == "internvl":
            ref = reference_internvl(model, processor, item)
        else:
            ref, cands = reference_llava_onevision(model, processor, item)
            if len(cands) == 2 and len(item["answers"]) > 2 and not item["letters"]:
                # exactly the distractor the rule keeps: the others are logged as dropped
                kept = item["answers"].index(cands[1])
                assert [i for i, s in enumerate(rec["scores"]) if s > DROPPED] == [0, kept], key
                seen["one distractor"] += 1
        if item["letters"]:  # two letters scored, whatever the number of options shown
            assert len(scored) == 2 and len(rec["scores"]) == len(item["answers"]), key
        p_ref = softmax(ref)
        assert scored == pytest.approx(ref, abs=1e-4), (family, key)
        assert rec["p"] == pytest.approx(p_ref[0], abs=1e-5), (family, key)
        assert rec["correct"] == (max(p_ref) == p_ref[0])
        seen[(item["folder"], _shape(item))] += 1
        seen.update(_modes(item))
    return seen


def test_default_path_composites_onto_white_and_scores_every_letter(lmms_runs, items, tiny_checkpoint):
    model, processor = load_reference(tiny_checkpoint("qwen2_vl"))
    four_letters = 0
    for key, item in items.items():
        if key[0] not in TRANSPARENT_TASKS:
            continue
        rec = lmms_runs["qwen2_vl-default"][key]
        ref = reference_default_raw(model, processor, item)
        assert rec["p"] == pytest.approx(softmax(ref)[0], abs=1e-5), key
        assert all(s > DROPPED for s in rec["scores"]) and len(rec["scores"]) == len(item["answers"])
        four_letters += bool(item["letters"]) and len(item["answers"]) == 4
    assert four_letters  # an options block of four: four letters scored by default, two under protocol=paper


def test_transparency_moves_the_qwen_scores(lmms_runs, items, tiny_checkpoint):
    """The conversion matters here: dropping alpha (black borders) gives other probabilities than the script's."""
    model, processor = load_reference(tiny_checkpoint("qwen2_vl"), **QWEN_SCRIPT_PIXELS)
    moved = 0.0
    for key, item in items.items():
        if "RGBA" in _modes(item) and not item["letters"]:
            dropped_alpha = softmax(reference_qwen2_vl(model, processor, item, to_rgb=lambda im: im.convert("RGB")))
            moved = max(moved, abs(dropped_alpha[0] - lmms_runs["qwen2_vl"][key]["p"]))
            if moved > 1e-3:
                break
    assert moved > 1e-3


# ------------------------------------------------------------------------------------------------------------------
# Through hand-made Instances: switches, presets, chat, system message, warnings
# ------------------------------------------------------------------------------------------------------------------
TASK, SPLIT = "radar_probe", "test"


def save_images(tmp_path, images, mode="RGB") -> list[str]:
    paths = []
    for i, im in enumerate(images):
        path = tmp_path / f"probe_{i}.png"
        im.convert(mode).save(path)
        paths.append(str(path))
    return paths


def m3_record(subset, question, choices, images, options_text="", qid="probe-1", correct_first=False):
    return {
        "id": qid,
        "subset": subset,
        "category": subset,
        "ability": "reasoning",
        "source_file": "probe.json",
        "images": images,
        "question": question,
        "answer": choices[0],
        "distractors": choices[1:],
        "choices": choices,
        "options_text": options_text,
        "correct_first": correct_first,
        "skipped": False,
        "source": "{}",
    }


def probe_item(doc) -> dict:
    folder = {
        "seephys": "physical_reasoning",
        "mmbench": "general_visual_question_answering",
        "mmmu_pro": "multiple_discipline_reasoning",
    }[doc["subset"]]
    return {
        "id": doc["id"],
        "folder": folder,
        "question": doc["question"] + doc["options_text"],
        "answers": doc["choices"],
        "letters": None,
        "files": doc["images"],
    }


def run_instances(wrapper, doc, context="IGNORED <image>", records=None):
    """One multiple_choice question through RadarHF.loglikelihood, as lmms-eval builds it; returns its p (and
    appends the item record the task's metric makes of the results to `records`, when given)."""
    from radar_tasks.data.images import load_rgb
    from radar_tasks.metrics import items

    wrapper.task_dict = {TASK: {SPLIT: [doc]}}
    visual = lambda d: [load_rgb(p) for p in d["images"]]  # noqa: E731 - as the task's doc_to_visual
    requests = [
        Instance(
            "loglikelihood",
            (context, " " + c, visual, 0, TASK, SPLIT),
            idx=i,
            metadata={"task": TASK, "doc_id": 0, "repeats": 1},
        )
        for i, c in enumerate(doc["choices"])
    ]
    results = [r.text for r in wrapper.loglikelihood(requests)]
    if records is not None:
        records.append(items.score_item(doc, results))
    return softmax([-r[0] for r in results])


def test_internvl_reverse_images_reproduces_the_script_order(tiny_checkpoint, tiny_images, tmp_path):
    folder = tiny_checkpoint("internvl")
    images = [tiny_images[0], tiny_images[2]]  # 96x64: 2 tiles + thumbnail; 50x50: 1 tile (max_patches 3)
    doc = m3_record("seephys", "How many dots in all diagrams?", ["7", "8", "9"], save_images(tmp_path, images))
    model, processor = load_reference(folder)
    wrapper = RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32")
    assert wrapper.settings.internvl_reverse_images  # on under protocol=paper, as the published numbers
    p_rev = run_instances(wrapper, doc)
    assert p_rev == pytest.approx(softmax(reference_internvl(model, processor, probe_item(doc), images)), abs=1e-5)
    off = RadarHF(
        pretrained=str(folder), device="cpu", protocol="paper", dtype="float32", internvl_reverse_images="false"
    )
    p_fwd = run_instances(off, doc)
    expected = softmax(reference_internvl(model, processor, probe_item(doc), images, reverse_blocks=False))
    assert p_fwd == pytest.approx(expected, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(p_rev, p_fwd)) > 1e-6  # the two orders really differ here


def test_internvl_system_message_comes_from_the_config(tiny_checkpoint, tiny_images, tmp_path):
    from transformers import AutoConfig

    folder = tmp_path / "internvl-sys"
    shutil.copytree(tiny_checkpoint("internvl"), folder)
    config = AutoConfig.from_pretrained(folder)
    config.system_message = "You are a tiny test model."
    config.save_pretrained(folder)
    doc = m3_record("mmbench", "What colour is the shape?", ["red", "blue"], save_images(tmp_path, tiny_images[:1]))
    model, processor = load_reference(folder)
    wrapper = RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32")
    expected = reference_internvl(model, processor, probe_item(doc), tiny_images[:1], system=config.system_message)
    default = reference_internvl(model, processor, probe_item(doc), tiny_images[:1])
    p = run_instances(wrapper, doc)
    assert p == pytest.approx(softmax(expected), abs=1e-5)
    assert abs(softmax(default)[0] - p[0]) > 1e-6


def rgba_noise(image) -> Image.Image:
    """`image` with a transparent black border (4 px) and a half-transparent one inside it (4 px)."""
    import numpy as np

    a = np.dstack([np.asarray(image.convert("RGB")), np.full(image.size[::-1], 255, np.uint8)])
    a[:, :, 3][4:-4, 4:-4] = 128
    a[:, :, 3][8:-8, 8:-8] = 255
    edge = np.ones(a.shape[:2], bool)
    edge[4:-4, 4:-4] = False
    a[edge] = 0
    return Image.fromarray(a, "RGBA")


def test_switches_turn_quirks_off_under_paper(tiny_checkpoint, tiny_images, tmp_path):
    """Under protocol=paper: mmmu_two_letters=false scores every letter; image_conversion=pil_convert drops alpha."""
    folder = tiny_checkpoint("qwen2_vl")
    model, processor = load_reference(folder, min_pixels=3136, max_pixels=50176)
    small = {"processor_kwargs": "size.shortest_edge:3136;size.longest_edge:50176"}
    paths = []
    for i, im in enumerate(tiny_images):
        paths.append(str(tmp_path / f"probe_{i}.png"))
        rgba_noise(im).save(paths[-1])
    block = " A. <image 2> B. <image 3> C. <image 1> Please select the correct option: "
    doc = m3_record("mmmu_pro", "Which picture is noise?", ["C", "A", "B"], paths[1:] + paths[:1], options_text=block)

    def reference(letters, to_rgb):
        item = dict(probe_item(doc), answers=letters)
        return softmax(reference_qwen2_vl(model, processor, item, to_rgb=to_rgb))

    records = []

    def p_of(**kwargs):
        return run_instances(
            RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32", **small, **kwargs),
            doc,
            records=records,
        )

    # "B" is scored as the correct letter, though the block letters a distractor with it (the scripts' rule)
    two = p_of()
    assert two == pytest.approx(reference(["B", "A"], qwen_to_rgb) + [0.0], abs=1e-5)
    # the chance level of a two-letter item is 1/2: the dropped letter does not count
    assert records[-1]["n_candidates"] == 2 and records[-1]["p"] == pytest.approx(two[0], abs=1e-9)
    assert p_of(mmmu_two_letters="false") == pytest.approx(reference(["C", "A", "B"], qwen_to_rgb), abs=1e-5)
    assert records[-1]["n_candidates"] == 3
    dropped = p_of(image_conversion="pil_convert")
    assert dropped == pytest.approx(reference(["B", "A"], lambda im: im.convert("RGB")) + [0.0], abs=1e-5)
    assert abs(dropped[0] - two[0]) > 1e-4


def test_paper_processor_settings_take_effect(tiny_checkpoint, tiny_images):
    # Qwen2-VL: 256..768 merged tokens per image (one per 28x28 px)
    qwen = RadarHF(pretrained=str(tiny_checkpoint("qwen2_vl")), device="cpu", protocol="paper", dtype="float32")
    assert qwen.settings.processor_kwargs == {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 768 * 28 * 28}}
    assert (
        qwen.settings.qwen_vl_utils_resize
        and qwen.settings.score == "logit"
        and qwen.settings.prompt_style == "qwen2vl_base"
    )
    assert qwen.settings.image_conversion == "qwen_vl_utils" and qwen.settings.mmmu_two_letters
    for size, lo, hi in [((50, 50), 256, 256), ((2000, 1500), 700, 768), ((600, 500), 370, 390)]:
        grid = qwen.processor.image_processor(images=[Image.new("RGB", size)], return_tensors="pt")["image_grid_thw"]
        tokens = int(grid.prod()) // 4
        assert lo <= tokens <= hi, (size, tokens)
    # explicit processor_kwargs override the preset's, key by key; min_pixels / max_pixels work too
    for kwargs in ("max_pixels:50176;min_pixels:3136", "size.shortest_edge:3136;size.longest_edge:50176"):
        small = RadarHF(
            pretrained=str(tiny_checkpoint("qwen2_vl")),
            device="cpu",
            protocol="paper",
            dtype="float32",
            processor_kwargs=kwargs,
            score="logprob",
        )
        grid = small.processor.image_processor(images=[Image.new("RGB", (50, 50))], return_tensors="pt")[
            "image_grid_thw"
        ]
        assert (
            int(grid.prod()) // 4 == 4
            and small.settings.score == "logprob"
            and small.settings.prompt_style == "qwen2vl_base"
        )
    # InternVL: 1..3 tiles by closest aspect ratio, a thumbnail when more than one
    intern = RadarHF(pretrained=str(tiny_checkpoint("internvl")), device="cpu", protocol="paper", dtype="float32")
    ip = intern.processor.image_processor
    assert (ip.crop_to_patches, ip.min_patches, ip.max_patches) == (True, 1, 3)
    assert intern.settings.image_conversion == "pil_convert" and intern.settings.internvl_reverse_images
    wide = Image.new("RGB", (128, 32))  # aspect 4: 3x1 tiles (4x1 is over the cap) + thumbnail
    assert int(intern.processor.image_processor(images=[wide], return_tensors="pt")["num_patches"][0]) == 4
    assert int(ip(images=[Image.new("RGB", (32, 32))], return_tensors="pt")["num_patches"][0]) == 1
    ids = intern.processor(text=["<IMG_CONTEXT>"], images=[wide], return_tensors="pt")["input_ids"]
    assert int((ids == intern.processor.image_token_id).sum()) == 4 * intern.processor.image_seq_length
    # the checkpoint's own default differs (up to 4 tiles): the preset really changed it
    plain = RadarHF(pretrained=str(tiny_checkpoint("internvl")), device="cpu", dtype="float32")
    assert int(plain.processor.image_processor(images=[wide], return_tensors="pt")["num_patches"][0]) == 5
    assert (
        plain.settings.prompt_style == "raw"
        and plain.settings.score == "logprob"
        and not plain.settings.processor_kwargs
    )
    assert (
        plain.settings.image_conversion == "white"
        and not plain.settings.mmmu_two_letters
        and not plain.settings.internvl_reverse_images
    )
    # dtype: the family's (bf16 for Qwen2-VL / InternVL, fp16 for LLaVA-OV) unless given
    llava_ov = RadarHF(pretrained=str(tiny_checkpoint("llava_onevision")), device="cpu", protocol="paper")
    assert llava_ov.model.dtype == torch.float16 and llava_ov.settings.llava_mmmu_one_distractor
    assert (
        RadarHF(pretrained=str(tiny_checkpoint("internvl")), device="cpu", protocol="paper").model.dtype
        == torch.bfloat16
    )
    # an explicit family style picks the preset on another architecture (LLaVA-OV projector checkpoints converted
    # to LlavaForConditionalGeneration: 729 flat tokens per image); auto without protocol keeps score=logprob
    llava = RadarHF(
        pretrained=str(tiny_checkpoint("llava")), device="cpu", protocol="paper", prompt_style="llava_ov_plain"
    )
    assert (
        llava.model.dtype == torch.float16
        and llava.settings.prompt_style == "llava_ov_plain"
        and llava.settings.score == "logit"
    )
    assert llava.settings.llava_mmmu_one_distractor and llava.settings.image_conversion == "pil_convert"
    auto = RadarHF(pretrained=str(tiny_checkpoint("llava")), device="cpu", prompt_style="auto")
    assert auto.settings.prompt_style == "raw" and auto.settings.score == "logprob"


def test_qwen_paper_pixels_one_item(tiny_checkpoint, tiny_images, tmp_path):
    """One item with the preset's 256..768-token images, end to end against the reference."""
    folder = tiny_checkpoint("qwen2_vl")
    doc = m3_record(
        "mmbench", "What colour is the shape?", ["red", "dark blue", "green"], save_images(tmp_path, tiny_images[:1])
    )
    wrapper = RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32")
    model, processor = load_reference(folder, **QWEN_SCRIPT_PIXELS)
    expected = softmax(reference_qwen2_vl(model, processor, probe_item(doc)))
    assert run_instances(wrapper, doc) == pytest.approx(expected, abs=1e-5)


def _warnings_of(make) -> list[str]:
    from loguru import logger

    messages = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        make()
    finally:
        logger.remove(sink)
    return messages


def test_qwen_paper_warns_about_a_non_base_chat_template(tiny_checkpoint, tmp_path, monkeypatch):
    from transformers import AutoProcessor

    from radar_tasks.models import protocol_checks

    monkeypatch.setattr(protocol_checks, "_TEMPLATE_WARNED", set())  # earlier tests loaded this checkpoint already
    folder = tiny_checkpoint("qwen2_vl")  # its template is Instruct-like: roles, a system turn
    warned = _warnings_of(lambda: RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32"))
    assert any("not a Qwen2-VL base template" in m and "without the question" in m for m in warned), warned
    again = _warnings_of(lambda: RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32"))
    assert not any("base template" in m for m in again)  # once per checkpoint (an in-loop run builds it often)
    assert not any(
        "base template" in m
        for m in _warnings_of(
            lambda: RadarHF(pretrained=str(folder), device="cpu", dtype="float32", prompt_style="qwen2vl_base")
        )
    )
    base = tmp_path / "qwen-base-template"
    shutil.copytree(folder, base)
    processor = AutoProcessor.from_pretrained(base)
    # as Qwen2-VL-2B's: one flat list of items; an image item -> vision tokens, a text item -> its text
    processor.chat_template = (
        "{% for message in messages %}{% if message is string %}{{ message }}"
        "{% elif message['type'] == 'image' or 'image' in message %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif 'text' in message %}{{ message['text'] }}{% endif %}{% endfor %}"
    )
    processor.save_pretrained(base)
    warned = _warnings_of(lambda: RadarHF(pretrained=str(base), device="cpu", protocol="paper", dtype="float32"))
    assert not any("base template" in m for m in warned), warned


def test_chat_style_uses_the_processor_template(tiny_checkpoint, tiny_images, tmp_path):
    folder = tiny_checkpoint("qwen2_vl")
    doc = m3_record(
        "mmmu_pro", "Compare <image 1> with <image 2>.", ["same", "different"], save_images(tmp_path, tiny_images[:2])
    )
    wrapper = RadarHF(pretrained=str(folder), device="cpu", dtype="float32", prompt_style="chat", score="logit")
    model, processor = load_reference(folder)
    # the tiny Qwen2-VL template: default system turn, user turn, generation prompt; images interleaved
    prompt = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"Compare {QWEN_IMAGE} with {QWEN_IMAGE}.<|im_end|>\n<|im_start|>assistant\n"
    )

    def encode(text):
        return processor(text=[text], images=tiny_images[:2], return_tensors="pt")

    expected = softmax(candidate_scores(model, encode, prompt, [prompt + a for a in doc["choices"]])[0])
    assert run_instances(wrapper, doc) == pytest.approx(expected, abs=1e-5)


def test_non_m3bench_docs_fall_back_to_raw(tiny_checkpoint, tiny_images):
    from radar_tasks.models.likelihood import score_continuations
    from radar_tasks.models.protocol import qwen_vl_utils_resize

    wrapper = RadarHF(pretrained=str(tiny_checkpoint("qwen2_vl")), device="cpu", protocol="paper", dtype="float32")
    doc = {"question": "Which animal?", "images": tiny_images[:1], "choices": ["a dog", "a cat"]}
    wrapper.task_dict = {TASK: {SPLIT: [doc]}}
    requests = [
        Instance(
            "loglikelihood",
            ("<image>Which animal? Answer:", " " + c, lambda d: d["images"], 0, TASK, SPLIT),
            idx=i,
            metadata={"task": TASK, "doc_id": 0, "repeats": 1},
        )
        for i, c in enumerate(doc["choices"])
    ]
    p = softmax([-r.text[0] for r in wrapper.loglikelihood(requests)])
    # lmms-eval's context and continuations as they are; only the preset's image resize and score=logit apply
    scores = score_continuations(
        wrapper.model,
        wrapper.processor,
        "<image>Which animal? Answer:",
        [qwen_vl_utils_resize(im) for im in doc["images"]],
        [" a dog", " a cat"],
    )
    assert p == pytest.approx(softmax([s.mean_logit for s in scores]), abs=1e-6)


def test_bad_model_args_fail_before_loading(tiny_checkpoint):
    folder = str(tiny_checkpoint("qwen2_vl"))
    with pytest.raises(ValueError, match="prompt_style"):
        RadarHF(pretrained=folder, device="cpu", prompt_style="qwen")
    with pytest.raises(ValueError, match="score"):
        RadarHF(pretrained=folder, device="cpu", score="prob")
    with pytest.raises(ValueError, match="protocol"):
        RadarHF(pretrained=folder, device="cpu", protocol="authors")
    with pytest.raises(ValueError, match="key:value"):
        RadarHF(pretrained=folder, device="cpu", processor_kwargs="min_pixels=3")
    with pytest.raises(ValueError, match="image_conversion"):
        RadarHF(pretrained=folder, device="cpu", image_conversion="black")


def test_llava_plain_on_a_flat_llava_checkpoint(tiny_checkpoint, tiny_images, tmp_path):
    """The exact LLaVA-OV layout route: a LlavaForConditionalGeneration checkpoint with prompt_style=llava_ov_plain."""
    folder = tiny_checkpoint("llava")
    doc = m3_record(
        "seephys", "How many dots in all diagrams?", ["7", "eight", "9"], save_images(tmp_path, tiny_images[:2])
    )
    model, processor = load_reference(folder)
    wrapper = RadarHF(
        pretrained=str(folder), device="cpu", protocol="paper", prompt_style="llava_ov_plain", dtype="float32"
    )
    expected = softmax(reference_llava_onevision(model, processor, probe_item(doc))[0])
    assert run_instances(wrapper, doc) == pytest.approx(expected, abs=1e-5)
