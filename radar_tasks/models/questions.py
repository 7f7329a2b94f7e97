"""One question as the scorer takes it, from the doc, context and continuations of an lmms-eval request: its images as
the model gets them, its prompt in the prompt style, the candidates scored, or why it is not scored at all.

This is all the per-question host work before the scorer, in one place: background workers run it
(`models.pipeline`, through `RadarHF.load_question`). No lmms-eval here.
"""

from __future__ import annotations

from PIL import Image

from radar_tasks import prompts
from radar_tasks.data import images as images_io
from radar_tasks.models import control_tokens, likelihood, once, prefix_sharing, protocol
from radar_tasks.models.loading import LoadedModel

BLANK_GREY = (128, 128, 128)  # `images=blank`: the colour of every image


class QuestionMaker:
    """Questions for `loaded` under its settings."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.settings = loaded.settings
        self._warned_raw_fallback = False

    def make(self, doc, context: str, doc_to_visual, continuations: list[str]):
        """`(question, scored, skipped)`: the Question and which of the request's candidates it scores, or
        `(None, None, why)` for an item that is not scored at all. No `doc_to_visual`: no doc, no images; nor with
        `images=none` (not even read)."""
        if doc_to_visual is None or self.settings.images == "none":
            images = []
        else:
            images = self.images(doc, doc_to_visual)
        skipped = control_tokens.text_problem(doc, continuations, self.loaded.control_tokens)
        if skipped:
            return None, None, skipped
        scored, question = self.question(doc, context, images, continuations)
        return question, scored, None

    def images(self, doc, doc_to_visual) -> list:
        """The images of one question as the model gets them. The task's `doc_to_visual` gives RGB with
        transparency composited onto white; under another `image_conversion` (protocol=paper: the family script's)
        an M3-Bench record's files are read again (its paths, or an exported record's embedded files) and converted
        that way. Then the Qwen script's first resize, when set."""
        conversion = self.settings.image_conversion
        if conversion != images_io.DEFAULT_CONVERSION and prompts.is_m3bench_record(doc) and not doc.get("skipped"):
            images = [images_io.load_rgb(source, conversion) for source in images_io.sources(doc)]
        else:
            images = list(doc_to_visual(doc) or [])
        if self.settings.qwen_vl_utils_resize:
            images = [protocol.qwen_vl_utils_resize(im) for im in images]
        if self.settings.images == "blank":  # the size the processor sees, so the same visual tokens
            images = [Image.new("RGB", im.size, BLANK_GREY) for im in images]
        return images

    def question(self, doc, context: str, images: list, continuations: list[str]):
        """`(scored, Question)`: which candidates of the request are scored, and the prompt, images, scored strings
        and processor of the question in the prompt style.

        `raw` (and any doc that is not an M3-Bench record, or a non-string continuation) keeps lmms-eval's context
        and continuations; a family/chat style rebuilds both from the doc with `radar_tasks.prompts` (the candidate
        = continuation minus lmms-eval's target_delimiter " "). `images=none`: the style's prompt for zero images
        (`raw`: the context without its markers).
        """
        style = self.settings.prompt_style
        with_images = self.settings.images != "none"
        styled = None
        if style != "raw" and prompts.is_m3bench_record(doc) and all(isinstance(c, str) for c in continuations):
            candidates, scored = protocol.scored_candidates(
                doc,
                [prompts.strip_delimiter(c) for c in continuations],
                two_letters=self.settings.mmmu_two_letters,
                one_distractor=self.settings.llava_mmmu_one_distractor,
            )
            styled = prompts.build(
                doc,
                style,
                candidates,
                scored=scored,
                chat_template=self._render_chat,
                image_placeholder=self._chat_placeholder(),
                system_message=self.loaded.system_message,
                reverse_blocks=self.settings.internvl_reverse_images,
                with_images=with_images,
            )
        elif style != "raw" and not self._warned_raw_fallback:
            self._warned_raw_fallback = True
            once.warning(
                f"radar_hf: prompt_style {style} needs M3-Bench records; this task's docs "
                "are not: using its own prompt (raw)"
            )
        if styled is None:
            context = context if with_images else prompts.strip_images(context)
            return tuple(True for _ in continuations), prefix_sharing.Question(context, images, list(continuations))
        processor = protocol.ReversedBlocksProcessor(self.loaded.processor) if styled.reverse_blocks else None
        kept = [c for c, keep in zip(styled.continuations, styled.scored) if keep]
        return styled.scored, prefix_sharing.Question(styled.context, images, kept, processor)

    def _render_chat(self, messages: list[dict]) -> str:
        return self.loaded.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _chat_placeholder(self) -> str | None:
        if self.settings.prompt_style != "chat":
            return None
        return likelihood.image_placeholder(self.loaded.model_type, self.loaded.processor)
