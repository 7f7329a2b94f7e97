"""Prompts (radar_tasks.prompts) and the family rules (models.protocol): exact strings per family and subset,
switches, model_args (models.args).

The expected strings are written out by hand from docs/REFERENCE.md.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from radar_tasks import prompts
from radar_tasks.models import args as model_args
from radar_tasks.models import protocol
from radar_tasks.prompts import IMAGE_MARKER as M

SYS = (
    "<|im_start|>system\n你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
    "多模态大语言模型。<|im_end|>\n"
)


def record(subset, question, choices, n_images=1, options_text="", skipped=False, qid="q1", **source):
    return {
        "id": qid,
        "subset": subset,
        "category": subset,
        "ability": "reasoning",
        "source_file": "x.json",
        "images": [f"/img/{qid}_{i}.png" for i in range(n_images)],
        "question": question,
        "answer": choices[0],
        "distractors": choices[1:],
        "choices": choices,
        "options_text": options_text,
        "skipped": skipped,
        "source": json.dumps(source),
    }


MMB = record("mmbench", "What colour is the shape?", ["red", "blue", "green"])
MATH = record("mathvista", "Hint: answer.\nQuestion: How many dots?", ["4", "5"])
WIKI = record("wiki_animal", "Which animal is this?", ["a dog", "a cat"])
SPATIAL = record("spatial", "Where is the red circle?", ["above", "below"])
SEEPHYS = record("seephys", "How many dots in all diagrams?", ["7", "8"], n_images=3, img_num=3)
MMMU_TEXT = record(
    "mmmu_pro", "The circuit in <image 1> has V = I R. Which law?", ["Ohm's law", "Hooke's law", "Faraday's law"]
)
MMMU_TWO = record("mmmu_pro", "Dots in <image 1> and <image 2>?", ["3", "4"], n_images=2)
OPTS = " A. <image 2> B. <image 3> Please select the correct option: "
MMMU_IMG_OPTS = record(
    "mmmu_pro", "<image 1> shows a shape. Which option matches?", ["A", "B"], n_images=3, options_text=OPTS
)

# (record, style) -> (context, joiner)
EXPECTED = {
    ("mmbench", "qwen2vl_base"): (f"{M}What colour is the shape?", " "),
    ("mmbench", "llava_ov_plain"): (f"{M}\nWhat colour is the shape?\n", ""),
    ("mmbench", "internvl"): (
        (f"{SYS}<|im_start|>user\n{M}\nWhat colour is the shape?<|im_end|>\n<|im_start|>assistant\n"),
        "",
    ),
    ("mathvista", "qwen2vl_base"): (f"{M}Hint: answer.\nQuestion: How many dots?", " "),
    ("mathvista", "llava_ov_plain"): (f"{M}\nHint: answer.\nQuestion: How many dots?\n", ""),
    ("mathvista", "internvl"): (
        (f"{SYS}<|im_start|>user\n{M}\nHint: answer.\nQuestion: How many dots?<|im_end|>\n<|im_start|>assistant\n"),
        "",
    ),
    ("wiki_animal", "qwen2vl_base"): (f"{M}Which animal is this?", " "),
    ("wiki_animal", "llava_ov_plain"): (f"{M} Which animal is this?\n", ""),
    ("wiki_animal", "internvl"): (
        (f"{SYS}<|im_start|>user\n{M} Which animal is this?<|im_end|>\n<|im_start|>assistant\n"),
        "",
    ),
    ("spatial", "llava_ov_plain"): (f"{M} Where is the red circle?\n", ""),
    ("spatial", "internvl"): (
        (f"{SYS}<|im_start|>user\n{M} Where is the red circle?<|im_end|>\n<|im_start|>assistant\n"),
        "",
    ),
    ("seephys", "qwen2vl_base"): (f"{M}{M}{M}How many dots in all diagrams?", " "),
    ("seephys", "llava_ov_plain"): (f"{M}{M}{M} How many dots in all diagrams?\n", ""),
    ("seephys", "internvl"): (
        (f"{SYS}<|im_start|>user\n{M} {M} {M} How many dots in all diagrams?<|im_end|>\n<|im_start|>assistant\n"),
        "",
    ),
}
RECORDS = {"mmbench": MMB, "mathvista": MATH, "wiki_animal": WIKI, "spatial": SPATIAL, "seephys": SEEPHYS}


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_family_strings_per_subset(key):
    subset, style = key
    doc = RECORDS[subset]
    q = prompts.build(doc, style, doc["choices"])
    context, joiner = EXPECTED[key]
    assert q.context == context
    assert q.continuations == tuple(joiner + c for c in doc["choices"])
    assert all(q.scored) and not q.reverse_blocks


def test_mmmu_pro_inline_images_and_joiners():
    inline = f"The circuit in {M} has V = I R. Which law?"
    assert prompts.build(MMMU_TEXT, "qwen2vl_base", MMMU_TEXT["choices"]).context == inline  # no template at all
    assert prompts.build(MMMU_TEXT, "qwen2vl_base", ["Ohm's law"]).continuations == (" Ohm's law",)
    assert prompts.build(MMMU_TEXT, "llava_ov_plain", MMMU_TEXT["choices"]).context == inline + "\n"
    q = prompts.build(MMMU_TWO, "internvl", MMMU_TWO["choices"])
    assert q.context == f"{SYS}<|im_start|>user\nDots in {M} and {M}?<|im_end|>\n<|im_start|>assistant\n"
    assert q.continuations == ("3", "4")


def test_mmmu_pro_image_options_show_the_block_and_score_letters():
    shown = f"{M} shows a shape. Which option matches? A. {M} B. {M} Please select the correct option: "
    q = prompts.build(MMMU_IMG_OPTS, "qwen2vl_base", ["A", "B"])
    assert q.context == shown and q.continuations == (" A", " B")  # the note's joiner: two spaces before A
    q = prompts.build(MMMU_IMG_OPTS, "llava_ov_plain", ["B", "A"])
    assert q.context == shown + "\n" and q.continuations == ("B", "A")
    q = prompts.build(MMMU_IMG_OPTS, "internvl", ["A", "B"])
    assert q.context == f"{SYS}<|im_start|>user\n{shown}<|im_end|>\n<|im_start|>assistant\n"
    assert not q.reverse_blocks  # inline images keep their order in the InternVL script


def test_skipped_records_render_without_images():
    doc = dict(SEEPHYS, skipped=True, images=[f"/i/{k}.png" for k in range(13)])
    for style in prompts.FAMILY_STYLES:
        assert M not in prompts.build(doc, style, ["7"]).context
    doc = dict(MMMU_TWO, skipped=True)
    assert prompts.build(doc, "qwen2vl_base", ["3"]).context == "Dots in  and ?"


# `images=none`: (record, style) -> the context written out by hand (the joiners do not change)
WITHOUT_IMAGES = {
    ("mmbench", "raw"): "\nWhat colour is the shape?",  # raw keeps its separator
    ("mmbench", "qwen2vl_base"): "What colour is the shape?",
    ("mmbench", "llava_ov_plain"): "What colour is the shape?\n",
    ("mmbench", "internvl"): f"{SYS}<|im_start|>user\nWhat colour is the shape?<|im_end|>\n<|im_start|>assistant\n",
    ("seephys", "raw"): " How many dots in all diagrams?",
    ("seephys", "qwen2vl_base"): "How many dots in all diagrams?",
    ("seephys", "llava_ov_plain"): "How many dots in all diagrams?\n",
    ("seephys", "internvl"): (
        f"{SYS}<|im_start|>user\nHow many dots in all diagrams?<|im_end|>\n<|im_start|>assistant\n"
    ),
    ("mmmu_two", "raw"): "Dots in  and ?",  # the inline references go with their markers
    ("mmmu_two", "qwen2vl_base"): "Dots in  and ?",
    ("mmmu_two", "llava_ov_plain"): "Dots in  and ?\n",
    ("mmmu_two", "internvl"): f"{SYS}<|im_start|>user\nDots in  and ?<|im_end|>\n<|im_start|>assistant\n",
    ("mmmu_opts", "qwen2vl_base"): " shows a shape. Which option matches? A.  B.  Please select the correct option: ",
}


@pytest.mark.parametrize("key", sorted(WITHOUT_IMAGES))
def test_without_images_every_style_writes_its_zero_image_prompt(key):
    subset, style = key
    doc = {**RECORDS, "mmmu_two": MMMU_TWO, "mmmu_opts": MMMU_IMG_OPTS}[subset]
    with_images = prompts.build(doc, style, doc["choices"])
    q = prompts.build(doc, style, doc["choices"], with_images=False)
    assert q.context == WITHOUT_IMAGES[key] and M not in q.context
    assert q.continuations == with_images.continuations and not q.reverse_blocks
    if style == "raw":  # radar_hf's raw path strips the markers of lmms-eval's context: the same text
        assert prompts.strip_images(prompts.task_text(doc, image_markers=True)) == q.context


def test_without_images_chat_is_a_text_only_turn():
    def template(messages):
        [msg] = messages
        body = "".join("<IMG>" if c["type"] == "image" else c["text"] for c in msg["content"])
        return f"<user>{body}</user><assistant>"

    for doc, text in ((SEEPHYS, "How many dots in all diagrams?"), (MMMU_TWO, "Dots in  and ?")):
        assert prompts.chat_messages(doc, with_images=False) == [
            {"role": "user", "content": [{"type": "text", "text": text}]}
        ]
        q = prompts.build(
            doc, "chat", doc["choices"], chat_template=template, image_placeholder="<IMG>", with_images=False
        )
        assert q.context == f"<user>{text}</user><assistant>"
    # the InternVL quirk needs images to reverse
    assert not prompts.build(SEEPHYS, "internvl", ["7"], reverse_blocks=True, with_images=False).reverse_blocks


def test_internvl_reverse_images_only_for_non_inline_multi_image():
    assert prompts.build(SEEPHYS, "internvl", ["7", "8"], reverse_blocks=True).reverse_blocks
    assert not prompts.build(SEEPHYS, "internvl", ["7", "8"]).reverse_blocks
    assert not prompts.build(MMB, "internvl", ["red"], reverse_blocks=True).reverse_blocks
    assert not prompts.build(MMMU_TWO, "internvl", ["3", "4"], reverse_blocks=True).reverse_blocks


def test_llava_one_distractor_keeps_answer_and_one_seeded_distractor():
    def one(doc):
        return prompts.build(
            doc, "llava_ov_plain", doc["choices"], scored=protocol.one_distractor_mask(doc, len(doc["choices"]))
        )

    q = one(MMMU_TEXT)
    assert q.scored[0] and sum(q.scored) == 2 and len(q.scored) == 3
    assert q == one(MMMU_TEXT)
    # the draw is per item: over many ids both distractors get kept
    kept = {protocol.one_distractor_mask(dict(MMMU_TEXT, id=f"q{i}"), 3).index(True, 1) for i in range(40)}
    assert kept == {1, 2}
    # image-option items, other subsets and two-candidate items keep everything
    for doc in (MMMU_IMG_OPTS, MMB, MMMU_TWO):
        assert all(one(doc).scored)


def test_chat_style_uses_the_template_and_turns_placeholders_into_markers():
    def template(messages):
        [msg] = messages
        body = "".join("<IMG>" if c["type"] == "image" else c["text"] for c in msg["content"])
        return f"<user>{body}</user><assistant>"

    q = prompts.build(MMB, "chat", ["red", "blue"], chat_template=template, image_placeholder="<IMG>")
    assert q.context == f"<user>{M}What colour is the shape?</user><assistant>" and q.continuations == ("red", "blue")
    q = prompts.build(MMMU_IMG_OPTS, "chat", ["A", "B"], chat_template=template, image_placeholder="<IMG>")
    assert q.context == (
        f"<user>{M} shows a shape. Which option matches? A. {M} B. {M} Please select the "
        "correct option: </user><assistant>"
    )
    with pytest.raises(ValueError, match="placeholders"):
        prompts.build(MMB, "chat", ["red"], chat_template=lambda m: "no image", image_placeholder="<IMG>")
    with pytest.raises(ValueError, match="chat template"):
        prompts.build(MMB, "chat", ["red"])


def test_chat_messages_interleave_mmmu_pro():
    [msg] = prompts.chat_messages(MMMU_TWO)
    assert msg["role"] == "user"
    assert msg["content"] == [
        {"type": "text", "text": "Dots in "},
        {"type": "image"},
        {"type": "text", "text": " and "},
        {"type": "image"},
        {"type": "text", "text": "?"},
    ]
    [msg] = prompts.chat_messages(SEEPHYS)
    assert [c["type"] for c in msg["content"]] == ["image", "image", "image", "text"]


def test_resolve_style_and_records():
    assert protocol.resolve_style("auto", "qwen2_vl") == protocol.resolve_style(None, "qwen2_5_vl") == "qwen2vl_base"
    assert protocol.resolve_style("auto", "llava_onevision") == "llava_ov_plain"
    assert protocol.resolve_style("auto", "internvl") == "internvl"
    assert protocol.resolve_style("auto", "idefics3") == protocol.resolve_style("auto", None) == "raw"
    assert protocol.resolve_style("CHAT", "qwen2_vl") == "chat"
    with pytest.raises(ValueError, match="prompt_style"):
        protocol.resolve_style("qwen", "qwen2_vl")
    assert prompts.is_m3bench_record(MMB) and not prompts.is_m3bench_record({"question": "q", "choices": ["a"]})
    with pytest.raises(ValueError, match="M3-Bench"):
        prompts.build({"question": "q"}, "qwen2vl_base", ["a"])
    with pytest.raises(ValueError, match="style"):
        prompts.build(MMB, "qwen", ["a"])
    assert (
        prompts.build(MMB, "raw", ["a"]).context
        == prompts.task_text(MMB, image_markers=True)
        == f"{M}\nWhat colour is the shape?"
    )
    with pytest.raises(ValueError, match="markers"):  # a literal marker in the question would misplace images
        prompts.build(dict(MMB, question="What is <image>?"), "qwen2vl_base", ["a"])
    assert prompts.strip_delimiter(" red") == "red" and prompts.strip_delimiter("red") == "red"
    assert prompts.strip_delimiter("  two") == " two"


def test_parse_kwargs_survives_comma_split():
    assert model_args.parse_kwargs("min_pixels:200704;max_pixels:602112") == {
        "min_pixels": 200704,
        "max_pixels": 602112,
    }
    assert model_args.parse_kwargs("crop_to_patches:true;max_patches:3;x:0.5;y:none;name:bicubic") == {
        "crop_to_patches": True,
        "max_patches": 3,
        "x": 0.5,
        "y": None,
        "name": "bicubic",
    }
    assert model_args.parse_kwargs("size.height:448;size.width:448") == {"size": {"height": 448, "width": 448}}
    assert model_args.parse_kwargs('{"max_patches": 3}') == {"max_patches": 3}
    assert (
        model_args.parse_kwargs({"a": 1}) == {"a": 1}
        and model_args.parse_kwargs(None) == {}
        and model_args.parse_kwargs("") == {}
    )
    with pytest.raises(ValueError, match="key:value"):
        model_args.parse_kwargs("max_patches=3")


def test_paper_presets():
    q = protocol.paper_preset("qwen2vl_base")
    assert q["score"] == "logit" and q["dtype"] == "bfloat16" and q["qwen_vl_utils_resize"]
    assert q["processor_kwargs"] == {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 768 * 28 * 28}}
    i = protocol.paper_preset("internvl")
    assert i["dtype"] == "bfloat16" and i["processor_kwargs"]["max_patches"] == 3
    assert protocol.paper_preset("llava_ov_plain")["dtype"] == "float16"
    # each family's image conversion and quirks, as its script; two letters in all three
    assert (
        q["image_conversion"],
        i["image_conversion"],
        protocol.paper_preset("llava_ov_plain")["image_conversion"],
    ) == (
        "qwen_vl_utils",
        "pil_convert",
        "pil_convert",
    )
    assert i["internvl_reverse_images"] and not q["internvl_reverse_images"]
    assert protocol.paper_preset("llava_ov_plain")["llava_mmmu_one_distractor"] and not i["llava_mmmu_one_distractor"]
    assert all(protocol.paper_preset(s)["mmmu_two_letters"] for s in prompts.FAMILY_STYLES)
    # no script for the style: only score=logit; every switch as without protocol
    assert protocol.paper_preset("raw") == {"score": "logit", "processor_kwargs": {}, **protocol.SWITCH_DEFAULTS}
    assert protocol.SWITCH_DEFAULTS["image_conversion"] == "white" and not protocol.SWITCH_DEFAULTS["mmmu_two_letters"]
    q["processor_kwargs"]["size"]["shortest_edge"] = 1  # a deep enough copy: the table itself is not changed
    assert protocol.PAPER_PRESETS["qwen2vl_base"]["processor_kwargs"]["size"]["shortest_edge"] == 256 * 28 * 28


def settings_of(family, **given):
    """The settings in effect for the model args `given` on a checkpoint of `family` (no checkpoint is read)."""
    return protocol.resolve_settings(model_args.ModelArgs.of(given, pretrained="ckpt"), model_type=lambda: family)


@pytest.mark.parametrize("family", ["qwen2_vl", "internvl", "llava_onevision"])
def test_images_stay_kept_under_the_paper_protocol_unless_given(family):
    assert settings_of(family, protocol="paper").images == settings_of(family).images == "keep"
    assert settings_of(family, protocol="paper", images="none").images == "none"
    with pytest.raises(model_args.ArgumentError, match="images='grey': expected one of keep, none, blank"):
        model_args.check_model_args({"images": "grey", "pretrained": "."})


@pytest.mark.parametrize(
    "family, style", [("qwen2_vl", "qwen2vl_base"), ("internvl", "internvl"), ("llava_onevision", "llava_ov_plain")]
)
def test_paper_quirks_on_and_each_switch_turns_one_off(family, style):
    paper = settings_of(family, protocol="paper")
    preset = protocol.paper_preset(style)
    for name in protocol.SWITCH_DEFAULTS:
        assert getattr(paper, name) == preset[name], name
    default = settings_of(family)
    assert all(getattr(default, n) == v for n, v in protocol.SWITCH_DEFAULTS.items())
    for name in protocol.SWITCH_DEFAULTS:  # explicit args win over the preset, one at a time
        flipped = "white" if name == "image_conversion" else str(not preset[name]).lower()
        off = settings_of(family, protocol="paper", **{name: flipped})
        assert getattr(off, name) == (flipped if name == "image_conversion" else not preset[name]), name
        assert all(getattr(off, n) == getattr(paper, n) for n in protocol.SWITCH_DEFAULTS if n != name)
    with pytest.raises(ValueError, match="image_conversion"):
        settings_of(family, image_conversion="black")


def test_option_block_and_letters_as_the_scripts_write_them():
    answer, distractors = "<image 4>", ["<image 2>", "<image 3>"]
    assert (
        prompts.option_block(answer, distractors, True)
        == " A. <image 4> B. <image 2> C. <image 3> Please select the correct option: "
    )
    assert (
        prompts.option_block(answer, distractors, False)
        == " A. <image 2> B. <image 3> C. <image 4> Please select the correct option: "
    )
    # default: every letter, the one that names the answer first
    assert prompts.option_letters(3, True) == ["A", "B", "C"] and prompts.option_letters(3, False) == ["C", "A", "B"]
    # the scripts: two letters whatever the number of options (B may letter a distractor)
    assert prompts.option_letters(3, True, two_letters=True) == ["A", "B"]
    assert prompts.option_letters(4, False, two_letters=True) == ["B", "A"]
    assert prompts.option_letters(2, False) == prompts.option_letters(2, False, two_letters=True) == ["B", "A"]


def test_scored_candidates_per_quirk():
    doc = dict(MMMU_IMG_OPTS, distractors=["B", "C"], choices=["C", "A", "B"], correct_first=False)
    assert protocol.scored_candidates(doc, doc["choices"]) == (["C", "A", "B"], (True, True, True))
    assert protocol.scored_candidates(doc, doc["choices"], two_letters=True) == (["B", "A", "B"], (True, True, False))
    first = dict(doc, choices=["A", "B", "C"], correct_first=True)
    assert protocol.scored_candidates(first, first["choices"], two_letters=True) == (
        ["A", "B", "C"],
        (True, True, False),
    )
    # a skipped item's single request is left alone; text options never get letters
    assert protocol.scored_candidates(doc, ["C"], two_letters=True) == (["C"], (True,))
    assert protocol.scored_candidates(MMMU_TEXT, MMMU_TEXT["choices"], two_letters=True)[1] == (True, True, True)
    cands, scored = protocol.scored_candidates(MMMU_TEXT, MMMU_TEXT["choices"], one_distractor=True)
    assert cands == MMMU_TEXT["choices"] and scored == protocol.one_distractor_mask(MMMU_TEXT, 3) and sum(scored) == 2


def test_qwen_base_template_check():
    def render_base(messages):  # Qwen2-VL base: a flat list of items
        return "".join(protocol.QWEN_VISION if m["type"] == "image" else m["text"] for m in messages)

    def render_instruct(messages):  # loops over roles and content: the question is lost
        return "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + "".join(
            "<|im_start|>\n" + "".join(protocol.QWEN_VISION for c in m["content"]) + "<|im_end|>\n" for m in messages
        )

    assert protocol.qwen_template_problem(render_base) is None
    assert "without the question" in protocol.qwen_template_problem(render_instruct)
    assert "cannot render" in protocol.qwen_template_problem(lambda m: m[0]["role"])


def test_internvl_system_message_from_the_config():
    assert protocol.internvl_system_message(SimpleNamespace()) == prompts.INTERNVL_SYSTEM_MESSAGE
    assert protocol.internvl_system_message(SimpleNamespace(system_message="Be brief.")) == "Be brief."
    assert (
        protocol.internvl_system_message(SimpleNamespace(system_message="")) == ""
    )  # the original keeps it, empty too
    q = prompts.build(MMB, "internvl", ["red"], system_message="Be brief.")
    assert q.context.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


def test_loss_sign_trick_and_answers():
    scores = [
        SimpleNamespace(nll=0.5, mean_logit=3.0, is_greedy=True),
        SimpleNamespace(nll=2.0, mean_logit=1.0, is_greedy=False),
    ]
    assert protocol.loss_of("logprob", 0.5, 3.0) == 0.5 and protocol.loss_of("logit", 0.5, 3.0) == -3.0
    assert math.isnan(protocol.loss_of("logit", math.nan, math.nan))
    with pytest.raises(ValueError):
        protocol.loss_of("prob", 0.5, 3.0)
    answers = protocol.answers((True, False, True), scores, "logit")
    assert answers == [(-3.0, True), (protocol.DROPPED_LOSS, False), (-1.0, False)]
    # softmax over -loss: the dropped candidate takes exactly no probability
    from radar_tasks.metrics.sds import softmax

    p = softmax([-loss for loss, _ in answers])
    assert p[1] == 0.0 and p[0] == pytest.approx(math.exp(3) / (math.exp(3) + math.exp(1)), abs=1e-12)
    with pytest.raises(ValueError):
        protocol.answers((True, False, True), scores[:1], "logit")


def test_qwen_smart_resize_matches_qwen_vl_utils_rules():
    assert protocol.qwen_smart_resize(100, 100) == (112, 112)  # rounded to multiples of 28
    assert protocol.qwen_smart_resize(20, 30) == (56, 84)  # scaled up to at least 4 * 28 * 28 pixels
    h, w = protocol.qwen_smart_resize(5000, 4000)
    assert h * w <= 16384 * 28 * 28 and h % 28 == w % 28 == 0
    from PIL import Image

    assert protocol.qwen_vl_utils_resize(Image.new("RGB", (90, 60))).size == (84, 56)
    assert protocol.qwen_vl_utils_resize(Image.new("RGB", (1000, 2))).size == (1000, 2)  # extreme ratio: unchanged


def test_reversed_blocks_processor_reverses_block_sizes_not_pixels(tiny_checkpoint, tiny_images):
    import torch
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint("internvl"))
    images = tiny_images[:2]  # 96x64 and 40x72: different tile counts
    counts = [processor.image_processor.get_number_of_image_patches(im.height, im.width, {}) for im in images]
    assert counts[0] != counts[1]
    text = ["<IMG_CONTEXT> <IMG_CONTEXT> Q"]
    plain = processor(text=text, images=images, return_tensors="pt")
    rev = protocol.ReversedBlocksProcessor(processor)(text=text, images=images, return_tensors="pt")
    assert torch.equal(rev["pixel_values"], plain["pixel_values"])  # pixels in file order
    flipped = processor(text=text, images=images[::-1], return_tensors="pt")
    assert torch.equal(rev["input_ids"], flipped["input_ids"])  # blocks sized for the reversed order
    assert not torch.equal(rev["input_ids"], plain["input_ids"])
    assert protocol.ReversedBlocksProcessor(processor).tokenizer is processor.tokenizer


def test_merge_kwargs_is_nested():
    preset = protocol.paper_preset("qwen2vl_base")["processor_kwargs"]
    merged = model_args.merge_kwargs(preset, model_args.parse_kwargs("size.longest_edge:50176;do_resize:true"))
    assert merged == {"size": {"shortest_edge": 256 * 28 * 28, "longest_edge": 50176}, "do_resize": True}
    assert preset["size"]["longest_edge"] == 768 * 28 * 28  # inputs untouched
