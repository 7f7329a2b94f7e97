r"""The prompt of an M3-Bench item: record x style -> context, continuations, which candidates are scored.

The one owner of prompt text. `doc_to_text` (for every lmms-eval wrapper), `radar_hf` (the family styles), the
upstream task export and the series demo all call it; the per-subset layout (what follows the images, whether
images sit inline) is data on `taxonomy.Subset`. Pure: no lmms-eval, no torch.

The context holds one `IMAGE_MARKER` per image, in the record's order (MMMU-Pro: question images, then option
images, as they appear); `radar_hf` swaps each for the model's own image tokens. `A` = candidate, `Q` = question,
`sep` = the subset's `image_separator` (`"\n"` MMBench / MathVista, `" "` otherwise), `n` = images:

| style | context | continuation |
|---|---|---|
| `raw` | `<img>` * n + sep + `Q` (what `doc_to_text` gives `radar_hf`); inline for MMMU-Pro | `" " + A` |
| `qwen2vl_base` | `<img>` * n + `Q` (the base checkpoint's chat template); inline for MMMU-Pro | `" " + A` |
| `llava_ov_plain` | `plain`: `<img>` * n + sep + `Q` + `"\n"`; inline for MMMU-Pro | `A` |
| `internvl` | `internvl2_5` ChatML, system message; user = (`<img>` + sep) * n + `Q`; inline for MMMU-Pro | `A` |
| `chat` | the processor's chat template: one user turn (images, then `Q`; MMMU-Pro interleaved) | `A` |

Other wrappers get `task_text(doc, image_markers=False)`: `Q` + the options block, no marker (they place images
themselves, as lmms-eval wrappers do). MMMU-Pro items whose `ori_options` hold an image carry `options_text`
(`" A. <opt> B. <opt> ... Please select the correct option: "`, every option lettered in the drawn order, the same
under every protocol) and letter candidates (`option_letters`: by default every letter, correct first; the scripts'
two letters `A`/`B` under `protocol=paper`): every style shows `Q + options_text`. Skipped records (more than 12
images) are rendered without images; they are never scored.

Without images (the `images=none` model arg: `build(..., with_images=False)`, `strip_images` under `raw`) every
style writes the prompt it writes for zero images: no marker and nothing that only framed images (Qwen's
`<img>...<img>Q` is `Q`, InternVL's `<img>` + sep blocks and LLaVA-OneVision's separator after the images vanish,
`raw` keeps its separator before `Q`, `chat` gets a text-only turn), and MMMU-Pro's inline `<image k>` references are
dropped with their markers (with images the model never reads that text either: each becomes image tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from radar_tasks import taxonomy

IMAGE_MARKER = "<image>"
IMAGE_REF = re.compile(r"<image (\d+)>")  # MMMU-Pro's references to its images, in questions and options
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SELECT_PROMPT = " Please select the correct option: "

STYLES = ("raw", "qwen2vl_base", "llava_ov_plain", "internvl", "chat")
FAMILY_STYLES = ("qwen2vl_base", "llava_ov_plain", "internvl")  # the three reference scripts
# The target delimiter lmms-eval puts before every choice (`target_delimiter` of the task YAML).
TARGET_DELIMITER = " "
# Joiner between context and candidate, per style.
JOINERS = {"raw": TARGET_DELIMITER, "qwen2vl_base": " ", "llava_ov_plain": "", "internvl": "", "chat": ""}

# The `internvl2_5` conversation template of InternVL (system template `<|im_start|>system\n{system_message}`,
# roles `<|im_start|>user\n` / `<|im_start|>assistant\n`, MPT separator `<|im_end|>\n`).
INTERNVL_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>\n"


@dataclass(frozen=True)
class Prompt:
    """One item in one style: what the likelihood core scores."""

    context: str  # one IMAGE_MARKER per image, in the record's order
    continuations: tuple[str, ...]  # one per candidate (dropped ones too), appended to `context` as is
    scored: tuple[bool, ...]  # False: candidate left out by a reference quirk (radar_hf answers DROPPED_LOSS)
    style: str
    reverse_blocks: bool = False  # InternVL script quirk (protocol.ReversedBlocksProcessor)


def is_m3bench_record(doc) -> bool:
    """A normalized M3-Bench record (the styles need its columns); anything else keeps lmms-eval's own prompt."""
    return isinstance(doc, dict) and all(k in doc for k in ("subset", "question", "images", "choices"))


def n_images(doc) -> int:
    return 0 if doc.get("skipped") else len(doc["images"])


def inline(text: str, marker: str = IMAGE_MARKER) -> str:
    """`text` with each MMMU-Pro `<image k>` reference replaced by `marker` (images inline)."""
    return IMAGE_REF.sub(lambda _: marker, text)


def option_block(answer: str, distractors: list[str], correct_first: bool) -> str:
    """MMMU-Pro items whose `ori_options` hold images: the options block shown after the question (the record's
    `options_text`), as the three scripts write it: the options in the drawn order (the answer first, or last after
    the distractors), every one lettered, then SELECT_PROMPT. The same under every protocol."""
    options = [answer, *distractors] if correct_first else [*distractors, answer]
    return " " + " ".join(f"{letter}. {o}" for letter, o in zip(OPTION_LETTERS, options)) + SELECT_PROMPT


def option_letters(n_options: int, correct_first: bool, two_letters: bool = False) -> list[str]:
    """The letters scored for an options block of `n_options`, the correct one first.

    Default: every option's letter (the correct option is A, or the last letter after the distractors), so the
    letters and the block agree. `two_letters` (the scripts): exactly `["A", "B"]`, or `["B", "A"]` when the answer
    comes last, whatever the number of options: with more than two options `B` may then letter a distractor while it
    is scored as the correct one.
    """
    if two_letters:
        return ["A", "B"] if correct_first else ["B", "A"]
    letters = list(OPTION_LETTERS[:n_options])
    correct = letters[0] if correct_first else letters[-1]
    return [correct, *[letter for letter in letters if letter != correct]]


def shows_options(doc) -> bool:
    """Whether the record shows an options block (its candidates are letters)."""
    return bool(doc.get("options_text"))


def _shown_text(doc) -> str:
    return doc["question"] + (doc.get("options_text") or "")


def user_text(doc, style: str, with_images: bool = True) -> str:
    """The user text of `doc` in `style` (before any template), with IMAGE_MARKERs; `with_images=False`: the text
    the style writes for zero images (`images=none`)."""
    spec = taxonomy.SUBSETS_BY_NAME[doc["subset"]]
    n = n_images(doc) if with_images else 0
    if spec.images_inline:
        return inline(_shown_text(doc), "" if doc.get("skipped") or not with_images else IMAGE_MARKER)
    question, sep = doc["question"], spec.image_separator
    if style == "raw":  # the separator stays when an item has no image (skipped, or images=none)
        return IMAGE_MARKER * n + sep + question
    if style == "qwen2vl_base":
        return IMAGE_MARKER * n + question
    if n == 0:
        return question
    if style == "llava_ov_plain":  # all markers, then one separator (SeePhys: `<image>` * img_num + " ")
        return IMAGE_MARKER * n + sep + question
    if style == "internvl":  # one separator after each image block
        return (IMAGE_MARKER + sep) * n + question
    raise ValueError(f"user_text: no layout for style {style!r}")


def task_text(doc, image_markers: bool = False) -> str:
    """What the tasks' `doc_to_text` returns: the `raw` context for `radar_hf` (image markers), else the
    question and options block alone (other wrappers place the images themselves)."""
    if image_markers:
        return user_text(doc, "raw")
    return _shown_text(doc)


def internvl_chatml(user: str, system_message: str = INTERNVL_SYSTEM_MESSAGE) -> str:
    """`internvl2_5` rendering of one user turn, ending with the assistant header (the answer follows directly)."""
    return f"{_IM_START}system\n{system_message}{_IM_END}{_IM_START}user\n{user}{_IM_END}{_IM_START}assistant\n"


def chat_messages(doc, with_images: bool = True) -> list[dict]:
    """One user turn for a processor chat template: images first, then the question (MMMU-Pro: interleaved);
    `with_images=False`: the text alone."""
    text = _shown_text(doc)
    n = n_images(doc) if with_images else 0
    if not taxonomy.SUBSETS_BY_NAME[doc["subset"]].images_inline:
        content = [{"type": "image"} for _ in range(n)] + [{"type": "text", "text": text}]
    elif doc.get("skipped") or not with_images:
        content = [{"type": "text", "text": inline(text, "")}]
    else:
        content, at = [], 0
        for ref in IMAGE_REF.finditer(text):
            if ref.start() > at:
                content.append({"type": "text", "text": text[at : ref.start()]})
            content.append({"type": "image"})
            at = ref.end()
        if at < len(text):
            content.append({"type": "text", "text": text[at:]})
    return [{"role": "user", "content": content}]


def build(
    doc,
    style: str,
    candidates: Sequence[str],
    *,
    scored: Sequence[bool] | None = None,
    chat_template: Callable[[list[dict]], str] | None = None,
    image_placeholder: str | None = None,
    system_message: str = INTERNVL_SYSTEM_MESSAGE,
    reverse_blocks: bool = False,
    with_images: bool = True,
) -> Prompt:
    """The prompt of one M3-Bench record in `style` (resolve `auto` first: protocol.resolve_style).

    `candidates` are the strings to score, without any delimiter (the record's `choices`, or fewer for a skipped
    record); `scored` marks the ones a reference quirk leaves out (protocol.one_distractor_mask). `chat` needs
    `chat_template(messages) -> str` (rendered with the generation prompt) and the model's per-image placeholder
    text as that template renders it, which is turned back into IMAGE_MARKERs. `reverse_blocks` asks for the
    InternVL script's reversed multi-image blocks (internvl style, images before the question only).
    `with_images=False` (the `images=none` model arg): the prompt the style writes for zero images (`strip_images`).
    """
    if not is_m3bench_record(doc):
        raise ValueError("prompt styles need an M3-Bench record (columns subset, question, images, choices)")
    n = n_images(doc) if with_images else 0
    if style in ("raw", "qwen2vl_base"):
        context = user_text(doc, style, with_images)
    elif style == "llava_ov_plain":
        context = user_text(doc, style, with_images) + "\n"
    elif style == "internvl":
        context = internvl_chatml(user_text(doc, style, with_images), system_message)
    elif style == "chat":
        if chat_template is None or not image_placeholder:
            raise ValueError("prompt_style=chat needs the processor's chat template and image placeholder")
        rendered = chat_template(chat_messages(doc, with_images))
        if rendered.count(image_placeholder) != n:
            raise ValueError(
                f"the chat template rendered {rendered.count(image_placeholder)} image placeholders "
                f"({image_placeholder!r}) for {n} images"
            )
        context = rendered.replace(image_placeholder, IMAGE_MARKER)
    else:
        raise ValueError(f"build: unknown prompt style {style!r} (one of {', '.join(STYLES)})")
    if context.count(IMAGE_MARKER) != n:
        raise ValueError(
            f"item {doc.get('id')!r}: {context.count(IMAGE_MARKER)} image markers for {n} images "
            f"(does the question contain a literal {IMAGE_MARKER!r}?)"
        )
    candidates = list(candidates)
    joiner = JOINERS[style]
    return Prompt(
        context=context,
        continuations=tuple(joiner + c for c in candidates),
        scored=tuple(scored) if scored is not None else tuple(True for _ in candidates),
        style=style,
        reverse_blocks=(
            reverse_blocks
            and style == "internvl"
            and not taxonomy.SUBSETS_BY_NAME[doc["subset"]].images_inline
            and n > 1
        ),
    )


def strip_images(context: str) -> str:
    """A context without its image markers: under `raw` (lmms-eval's own context) the prompt of `images=none`,
    which for an M3-Bench record is `build(..., with_images=False)`'s (MMMU-Pro's references vanish with them)."""
    return context.replace(IMAGE_MARKER, "")


def strip_delimiter(continuation: str, delimiter: str = TARGET_DELIMITER) -> str:
    """lmms-eval's continuation is `target_delimiter + choice`: the candidate itself."""
    return continuation[len(delimiter) :] if delimiter and continuation.startswith(delimiter) else continuation
