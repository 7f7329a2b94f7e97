"""radar_hf reproduces the authors' per-family procedure (docs/REFERENCE.md), item by item.

For each family's tiny model, one real lmms-eval run (`simple_evaluate`, `protocol=paper`, fp32) on the fixture gives
the per-item SDS `p` of `--log_samples`; a plain implementation of the authors' procedure written here gives it
again, sharing no code with the wrapper: its own prompt strings (typed from the note), its own processor calls, one
forward per candidate, mean raw logit of the tokens of tokenize(prompt + candidate) beyond len(tokenize(prompt)),
softmax. Every subset's prompt shape is covered, including MMMU-Pro inline images, image options and SeePhys
multi-image items. Smaller checks drive the wrapper with lmms-eval Instances (switches, presets, chat style).
"""

from __future__ import annotations

import math
import os
import re

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance
from PIL import Image

from radar_tasks.demo.fixture import make_fixture
from radar_tasks.models.radar_hf import RadarHF

pytestmark = pytest.mark.slow

# One task per subset shape. MMMU-Pro: Agriculture = one inline image with 4 text options + an image-option item
# with a question image; Architecture = two inline images + an image-option item with 4 letters.
TASKS = [
    "radar_mmbench_image_style", "radar_mmmu_pro_agriculture", "radar_mmmu_pro_architecture_and_engineering",
    "radar_mathvista", "radar_seephys", "radar_spatial", "radar_wiki_animal",
]
LIMIT = 3  # items per task: SeePhys items with 1, 1 and 2 images; MathVista's two-line "Hint:" item
FAMILIES = ("qwen2_vl", "llava_onevision", "internvl")
# model_args beyond pretrained/device: the paper preset in fp32. Qwen2-VL runs with small images here (explicit
# processor_kwargs override the preset's 256..768 tokens, which test_paper_processor_settings_take_effect checks);
# LLaVA runs with the script's one-distractor quirk on.
EXTRA_ARGS = {
    "qwen2_vl": "processor_kwargs=size.shortest_edge:3136;size.longest_edge:50176",
    "llava_onevision": "llava_mmmu_one_distractor=true",
    "internvl": "",
}
# what the Qwen2-VL reference gives its processor for that run (the script's min_pixels / max_pixels, in the form
# transformers 5 keeps them: passing min_pixels= is deprecated at call time)
QWEN_PIXELS = {"size": {"shortest_edge": 3136, "longest_edge": 50176}}

# ------------------------------------------------------------------------------------------------------------------
# The authors' procedure, written from the note (no radar_tasks code below this line and above the fixtures)
# ------------------------------------------------------------------------------------------------------------------
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
LLAVA_IMAGE = "<image>"
INTERNVL_SYSTEM = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
                   "多模态大语言模型。")
IMAGE_REF = re.compile(r"<image \d+>")


def note_user_text(family: str, doc: dict, token: str) -> str:
    """The text before any template, with `token` per image, as the note describes it per family and subset."""
    q, subset, n = doc["question"], doc["subset"], len(doc["images"])
    if subset == "mmmu_pro":  # inline, with the options block of image-option items
        return IMAGE_REF.sub(token, q + doc["options_text"])
    if family == "qwen2_vl":
        return token * n + q
    if family == "llava_onevision":
        if subset in ("mmbench", "mathvista"):
            return f"{token}\n{q}"
        if subset == "seephys":
            return token * n + " " + q
        return f"{token} {q}"
    raise AssertionError(family)


def open_images(doc):
    return [Image.open(p).convert("RGB") for p in doc["images"]]


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


def candidate_mean_logits(model, encode, prompt: str, candidates: list[str]) -> list[float]:
    """One forward per prompt + candidate; mean raw logit of the tokens beyond len(tokenize(prompt))."""
    n_prompt = encode(prompt)["input_ids"].shape[1]
    scores = []
    for text in candidates:
        inputs = encode(text)
        ids = inputs["input_ids"][0]
        with torch.inference_mode():
            logits = model(**inputs).logits[0].float()
        picked = [float(logits[t - 1, ids[t]]) for t in range(n_prompt, len(ids))]
        scores.append(sum(picked) / len(picked))
    return scores


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def reference_qwen2_vl(model, processor, doc, images=None):
    images = [qwen_fetch_resize(im) for im in (images or open_images(doc))]
    prompt = note_user_text("qwen2_vl", doc, QWEN_IMAGE)

    def encode(text):
        return processor(text=[text], images=images, return_tensors="pt")

    return candidate_mean_logits(model, encode, prompt, [prompt + " " + a for a in doc["choices"]])


def reference_llava_onevision(model, processor, doc, images=None):
    images = images or open_images(doc)
    prompt = note_user_text("llava_onevision", doc, LLAVA_IMAGE) + "\n"  # the `plain` template

    def encode(text):
        return processor(text=[text], images=images, return_tensors="pt")

    return candidate_mean_logits(model, encode, prompt, [prompt + a for a in doc["choices"]])


def reference_internvl(model, processor, doc, images=None, reverse_blocks=False):
    """As the InternVL script: tiles per image, `<img><IMG_CONTEXT>*n</img>` blocks expanded in the text by hand,
    the internvl2_5 ChatML, the tokenizer alone. reverse_blocks: the script's own expansion loop (prepend, then
    expand the first `<image>`), which puts the blocks of several non-inline images in reverse order."""
    images = images or open_images(doc)
    tiles = [processor.image_processor(images=[im], crop_to_patches=True, min_patches=1, max_patches=3,
                                       return_tensors="pt") for im in images]
    num_patches = [int(t["num_patches"][0]) for t in tiles]
    pixel_values = torch.cat([t["pixel_values"] for t in tiles]) if tiles else None
    sep = "\n" if doc["subset"] in ("mmbench", "mmmu_pro", "mathvista") else " "
    question = doc["question"]
    if doc["subset"] == "mmmu_pro":
        question = IMAGE_REF.sub("<image>", question + doc["options_text"])

    def block(k):
        return "<img>" + "<IMG_CONTEXT>" * processor.image_seq_length * num_patches[k] + "</img>"

    if reverse_blocks or doc["subset"] == "mmmu_pro":
        for k in range(len(images)):
            if "<image>" not in question:
                question = f"<image>{sep}" + question
            question = question.replace("<image>", block(k), 1)
    else:
        question = "".join(block(k) + sep for k in range(len(images))) + question
    query = (f"<|im_start|>system\n{INTERNVL_SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
             "<|im_start|>assistant\n")

    def encode(text):
        enc = dict(processor.tokenizer(text, return_tensors="pt"))
        if pixel_values is not None:
            enc["pixel_values"] = pixel_values
        return enc

    return candidate_mean_logits(model, encode, query, [query + a for a in doc["choices"]])


def load_reference(folder, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = QWEN_PIXELS if family == "qwen2_vl" else {}
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(folder, **kwargs)


REFERENCES = {"qwen2_vl": reference_qwen2_vl, "llava_onevision": reference_llava_onevision,
              "internvl": reference_internvl}


# ------------------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("refproto")
    os.environ.setdefault("HF_DATASETS_CACHE", str(root / "hf-cache"))
    return make_fixture(root / "M3-Bench")


@pytest.fixture(scope="module")
def docs_by_id(bench):
    from radar_tasks import taxonomy
    from radar_tasks.data import m3bench

    out = {}
    for task in TASKS:
        subset, category = next((s, c) for s, c in taxonomy.leaf_tasks() if taxonomy.task_name(s, c) == task)
        for rec in m3bench.load_category(subset, category, bench):
            out[(subset, rec["id"])] = rec
    return out


@pytest.fixture(scope="module")
def lmms_runs(bench, tiny_checkpoint):
    """family -> {task: [per-item sds records]} from one lmms-eval run each (in process, one TaskManager)."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    previous = os.environ.get("RADAR_M3BENCH_DIR")
    os.environ["RADAR_M3BENCH_DIR"] = str(bench)
    try:
        manager, runs = TaskManager(), {}
        for family in FAMILIES:
            args = f"pretrained={tiny_checkpoint(family)},device=cpu,protocol=paper,dtype=float32"
            if EXTRA_ARGS[family]:
                args += "," + EXTRA_ARGS[family]
            results = simple_evaluate(model="radar_hf", model_args=args, tasks=TASKS, limit=LIMIT, log_samples=True,
                                      bootstrap_iters=0, task_manager=manager, verbosity="WARNING")
            assert results is not None and set(TASKS) <= set(results["results"]), family
            runs[family] = {t: [row["sds"] for row in results["samples"][t]] for t in TASKS}
    finally:
        if previous is None:
            os.environ.pop("RADAR_M3BENCH_DIR", None)
        else:
            os.environ["RADAR_M3BENCH_DIR"] = previous
    return runs


# ------------------------------------------------------------------------------------------------------------------
# The per-family comparison
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_lmms_eval_run_matches_the_authors_procedure(family, lmms_runs, docs_by_id, tiny_checkpoint):
    model, processor = load_reference(tiny_checkpoint(family), family)
    shapes, one_distractor_items = set(), 0
    for task in TASKS:
        records = lmms_runs[family][task]
        assert len(records) == LIMIT or task.startswith(("radar_mmbench_", "radar_mmmu_pro_"))
        for rec in records:
            doc = docs_by_id[(rec["subset"], rec["id"])]
            assert not rec["skipped"], rec
            scores = REFERENCES[family](model, processor, doc)
            n_img = len(doc["images"])
            if family == "llava_onevision" and doc["subset"] == "mmmu_pro" and not doc["options_text"] \
                    and len(doc["choices"]) > 2:
                # the LLaVA script scores the answer and one distractor: p is a 2-way softmax, the others get 0
                dropped = [i for i, s in enumerate(rec["scores"]) if s <= -1e29]
                assert len(dropped) == len(doc["choices"]) - 2 and 0 not in dropped
                scores = [s for i, s in enumerate(scores) if i not in dropped]
                one_distractor_items += 1
            p_ref = softmax(scores)
            assert rec["p"] == pytest.approx(p_ref[0], abs=1e-5), (family, task, rec["id"])
            assert rec["correct"] == (max(p_ref) == p_ref[0])
            shapes.add((doc["subset"], "options" if doc["options_text"] else "inline" if "<image" in doc["question"]
                        else f"{min(n_img, 2)} images"))
    assert {s for s, _ in shapes} == {"mmbench", "mmmu_pro", "mathvista", "seephys", "spatial", "wiki_animal"}
    assert {("mmmu_pro", "options"), ("mmmu_pro", "inline"), ("seephys", "2 images")} <= shapes
    assert one_distractor_items >= (1 if family == "llava_onevision" else 0)


def test_logit_scores_are_mean_logits(lmms_runs, docs_by_id, tiny_checkpoint):
    """score=logit logs the paper's per-candidate mean raw logit (scores = -loss = mean logit)."""
    model, processor = load_reference(tiny_checkpoint("internvl"), "internvl")
    rec = lmms_runs["internvl"]["radar_wiki_animal"][0]
    expected = reference_internvl(model, processor, docs_by_id[("wiki_animal", rec["id"])])
    assert rec["scores"] == pytest.approx(expected, abs=1e-4)


# ------------------------------------------------------------------------------------------------------------------
# Through hand-made Instances: switches, presets, chat, fallbacks
# ------------------------------------------------------------------------------------------------------------------
TASK, SPLIT = "radar_probe", "test"


def m3_record(subset, question, choices, images, options_text="", qid="probe-1"):
    return {"id": qid, "subset": subset, "category": subset, "ability": "reasoning", "source_file": "probe.json",
            "images": images, "question": question, "answer": choices[0], "distractors": choices[1:],
            "choices": choices, "options_text": options_text, "skipped": False, "source": "{}"}


def run_instances(wrapper, doc, context="IGNORED <image>"):
    """One multiple_choice question through RadarHF.loglikelihood, as lmms-eval builds it; returns its p."""
    wrapper.task_dict = {TASK: {SPLIT: [doc]}}
    requests = [Instance("loglikelihood", (context, " " + c, lambda d: d["images"], 0, TASK, SPLIT), idx=i,
                         metadata={"task": TASK, "doc_id": 0, "repeats": 1}) for i, c in enumerate(doc["choices"])]
    losses = [r.text[0] for r in wrapper.loglikelihood(requests)]
    return softmax([-x for x in losses])


def test_internvl_reverse_images_reproduces_the_script_order(tiny_checkpoint, tiny_images):
    folder = tiny_checkpoint("internvl")
    images = [tiny_images[0], tiny_images[2]]  # 96x64: 2 tiles + thumbnail; 50x50: 1 tile (max_patches 3)
    doc = m3_record("seephys", "How many dots in all diagrams?", ["7", "8", "9"], images)
    model, processor = load_reference(folder, "internvl")
    wrapper = RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32",
                      internvl_reverse_images="true")
    p_rev = run_instances(wrapper, doc)
    assert p_rev == pytest.approx(softmax(reference_internvl(model, processor, doc, images, True)), abs=1e-5)
    wrapper.internvl_reverse_images = False
    p_fwd = run_instances(wrapper, doc)
    assert p_fwd == pytest.approx(softmax(reference_internvl(model, processor, doc, images, False)), abs=1e-5)
    assert max(abs(a - b) for a, b in zip(p_rev, p_fwd)) > 1e-6  # the two orders really differ here


def test_paper_processor_settings_take_effect(tiny_checkpoint, tiny_images):
    # Qwen2-VL: 256..768 merged tokens per image (one per 28x28 px)
    qwen = RadarHF(pretrained=str(tiny_checkpoint("qwen2_vl")), device="cpu", protocol="paper", dtype="float32")
    assert qwen.processor_kwargs == {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 768 * 28 * 28}}
    assert qwen.qwen_vl_utils_resize and qwen.score == "logit" and qwen.prompt_style == "qwen2vl_base"
    for size, lo, hi in [((50, 50), 256, 256), ((2000, 1500), 700, 768), ((600, 500), 370, 390)]:
        grid = qwen.processor.image_processor(images=[Image.new("RGB", size)], return_tensors="pt")["image_grid_thw"]
        tokens = int(grid.prod()) // 4
        assert lo <= tokens <= hi, (size, tokens)
    # explicit processor_kwargs override the preset's, key by key; min_pixels / max_pixels work too
    for kwargs in ("max_pixels:50176;min_pixels:3136", "size.shortest_edge:3136;size.longest_edge:50176"):
        small = RadarHF(pretrained=str(tiny_checkpoint("qwen2_vl")), device="cpu", protocol="paper",
                        dtype="float32", processor_kwargs=kwargs, score="logprob")
        grid = small.processor.image_processor(images=[Image.new("RGB", (50, 50))],
                                               return_tensors="pt")["image_grid_thw"]
        assert int(grid.prod()) // 4 == 4 and small.score == "logprob" and small.prompt_style == "qwen2vl_base"
    # InternVL: 1..3 tiles by closest aspect ratio, a thumbnail when more than one
    intern = RadarHF(pretrained=str(tiny_checkpoint("internvl")), device="cpu", protocol="paper", dtype="float32")
    ip = intern.processor.image_processor
    assert (ip.crop_to_patches, ip.min_patches, ip.max_patches) == (True, 1, 3)
    wide = Image.new("RGB", (128, 32))  # aspect 4: 3x1 tiles (4x1 is over the cap) + thumbnail
    assert int(intern.processor.image_processor(images=[wide], return_tensors="pt")["num_patches"][0]) == 4
    assert int(ip(images=[Image.new("RGB", (32, 32))], return_tensors="pt")["num_patches"][0]) == 1
    ids = intern.processor(text=["<IMG_CONTEXT>"], images=[wide], return_tensors="pt")["input_ids"]
    assert int((ids == intern.processor.image_token_id).sum()) == 4 * intern.processor.image_seq_length
    # the checkpoint's own default differs (up to 4 tiles): the preset really changed it
    plain = RadarHF(pretrained=str(tiny_checkpoint("internvl")), device="cpu", dtype="float32")
    assert int(plain.processor.image_processor(images=[wide], return_tensors="pt")["num_patches"][0]) == 5
    assert plain.prompt_style == "raw" and plain.score == "logprob" and not plain.processor_kwargs
    # dtype: the family's (bf16 for Qwen2-VL / InternVL, fp16 for LLaVA-OV) unless given
    assert RadarHF(pretrained=str(tiny_checkpoint("llava_onevision")), device="cpu",
                   protocol="paper").model.dtype == torch.float16
    assert RadarHF(pretrained=str(tiny_checkpoint("internvl")), device="cpu", protocol="paper").model.dtype \
        == torch.bfloat16
    # an explicit family style picks the preset on another architecture (LLaVA-OV projector checkpoints converted
    # to LlavaForConditionalGeneration: 729 flat tokens per image); auto without protocol keeps score=logprob
    llava = RadarHF(pretrained=str(tiny_checkpoint("llava")), device="cpu", protocol="paper",
                    prompt_style="llava_ov_plain")
    assert llava.model.dtype == torch.float16 and llava.prompt_style == "llava_ov_plain" and llava.score == "logit"
    auto = RadarHF(pretrained=str(tiny_checkpoint("llava")), device="cpu", prompt_style="auto")
    assert auto.prompt_style == "raw" and auto.score == "logprob"


def test_qwen_paper_pixels_one_item(tiny_checkpoint, tiny_images):
    """One item with the preset's 256..768-token images, end to end against the reference."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = tiny_checkpoint("qwen2_vl")
    doc = m3_record("mmbench", "What colour is the shape?", ["red", "dark blue", "green"], [tiny_images[0]])
    wrapper = RadarHF(pretrained=str(folder), device="cpu", protocol="paper", dtype="float32")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, size={"shortest_edge": 256 * 28 * 28,
                                                            "longest_edge": 768 * 28 * 28})
    expected = softmax(reference_qwen2_vl(model, processor, doc, [tiny_images[0]]))
    assert run_instances(wrapper, doc) == pytest.approx(expected, abs=1e-5)


def test_chat_style_uses_the_processor_template(tiny_checkpoint, tiny_images):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = tiny_checkpoint("qwen2_vl")
    doc = m3_record("mmmu_pro", "Compare <image 1> with <image 2>.", ["same", "different"], tiny_images[:2])
    wrapper = RadarHF(pretrained=str(folder), device="cpu", dtype="float32", prompt_style="chat", score="logit")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    # the tiny Qwen2-VL template: default system turn, user turn, generation prompt; images interleaved
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
              f"Compare {QWEN_IMAGE} with {QWEN_IMAGE}.<|im_end|>\n<|im_start|>assistant\n")

    def encode(text):
        return processor(text=[text], images=tiny_images[:2], return_tensors="pt")

    expected = softmax(candidate_mean_logits(model, encode, prompt, [prompt + a for a in doc["choices"]]))
    assert run_instances(wrapper, doc) == pytest.approx(expected, abs=1e-5)


def test_non_m3bench_docs_fall_back_to_raw(tiny_checkpoint, tiny_images):
    from radar_tasks.models.likelihood import score_continuations
    from radar_tasks.models.protocol import qwen_vl_utils_resize

    wrapper = RadarHF(pretrained=str(tiny_checkpoint("qwen2_vl")), device="cpu", protocol="paper", dtype="float32")
    doc = {"question": "Which animal?", "images": tiny_images[:1], "choices": ["a dog", "a cat"]}
    p = run_instances(wrapper, doc, context="<image>Which animal? Answer:")
    # lmms-eval's context and continuations as they are; only the preset's image resize and score=logit apply
    scores = score_continuations(wrapper.model, wrapper.processor, "<image>Which animal? Answer:",
                                 [qwen_vl_utils_resize(im) for im in doc["images"]], [" a dog", " a cat"])
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


def test_llava_plain_on_a_flat_llava_checkpoint(tiny_checkpoint, tiny_images):
    """The exact LLaVA-OV layout route: a LlavaForConditionalGeneration checkpoint with prompt_style=llava_ov_plain."""
    folder = tiny_checkpoint("llava")
    doc = m3_record("seephys", "How many dots in all diagrams?", ["7", "eight", "9"], tiny_images[:2])
    model, processor = load_reference(folder, "llava")
    wrapper = RadarHF(pretrained=str(folder), device="cpu", protocol="paper", prompt_style="llava_ov_plain",
                      dtype="float32")
    expected = softmax(reference_llava_onevision(model, processor, doc, tiny_images[:2]))
    assert run_instances(wrapper, doc) == pytest.approx(expected, abs=1e-5)
