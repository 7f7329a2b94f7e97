"""Shared-prefix scoring (prefix_sharing) against the per-candidate reference (likelihood.score_continuations).

Every architecture radar_hf claims, single-image, multi-image, interleaved, images-first and text-only prompts, a BPE
merge across the prompt/candidate boundary, candidates of one and of several tokens, batch sizes 1 and 3 (questions
of different lengths, with and without images, in one call). fp32: equal within 1e-5 (measured: <= 1e-6).
bf16: within 1.1e-3, docs/speed.md's number (nll and mean logit, all six tiny models, nll ~ 6; measured on the 2-core
CPU, torch 2.14: at most 9.8e-4, llava; 2.8e-4 to 4.9e-4 on the others).
"""

from __future__ import annotations

import math

import pytest
import torch

from radar_tasks.demo.tiny_models import TINY_ARCHS
from radar_tasks.models import prefix_sharing
from radar_tasks.models.likelihood import score_continuations
from radar_tasks.models.prefix_sharing import Question, SharedPrefixScorer, score_questions


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forwards on a shared CPU: one intra-op thread is 5-20x faster than oversubscribed OpenMP threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def questions(images):
    return [
        Question(
            "<image>\nQuestion: which animal is this? Answer:",
            images[:1],
            [" a dog", " the quick brown fox", " 4", " B"],
        ),
        Question("<image><image> Which plant is shown in the picture?", images[:2], [" a rose", " an oak tree"]),
        Question("Compare <image> with <image> and then <image>. Answer:", images[:3], [" the cat", " B", ""]),
        Question("What is the value of x?", images[1:3], [" 4", " eleven"]),  # no marker: images first
        Question("The quick bro", [], ["wn fox", " x", "wn"]),  # "bro|wn" merges across the boundary
        Question("Which animal?", [], [" a dog", " the cat sitting"]),
        Question("<image> Which?", images[2:3], [" A", " B", " C"]),  # single-token candidates: prefill logits only
    ]


def reference(model, processor, qs, **kwargs):
    return [score_continuations(model, processor, q.context, q.images, q.continuations, **kwargs) for q in qs]


@pytest.fixture(scope="module")
def references(tiny_loaded, tiny_images):
    """arch -> reference scores of `questions(tiny_images)` (computed once per arch)."""
    cache = {}

    def get(arch):
        if arch not in cache:
            model, processor = tiny_loaded(arch)
            cache[arch] = reference(model, processor, questions(tiny_images))
        return cache[arch]

    return get


def assert_same(ref, got, tol=1e-5):
    assert len(ref) == len(got)
    for ref_q, got_q in zip(ref, got):
        assert len(ref_q) == len(got_q)
        for a, b in zip(ref_q, got_q):
            assert (a.n_tokens, a.prefix_ok) == (b.n_tokens, b.prefix_ok)
            if a.n_tokens == 0:
                assert math.isnan(b.nll)
                continue
            assert b.nll == pytest.approx(a.nll, abs=tol)
            assert b.mean_logit == pytest.approx(a.mean_logit, abs=tol)
            assert b.is_greedy == a.is_greedy


@pytest.mark.parametrize("layout", ["packed", "rows"])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_matches_per_candidate_fp32(arch, batch_size, layout, tiny_loaded, tiny_images, references):
    model, processor = tiny_loaded(arch)
    qs = questions(tiny_images)
    scorer = SharedPrefixScorer(model, processor, batch_size=batch_size)
    assert scorer.forward.layout == "packed"  # sdpa: one row per question with a 4D mask; `rows`: flash-attention
    scorer.forward.layout = layout
    done = []
    got = scorer.score(qs, progress=done.append)
    assert_same(references(arch), got)
    assert sum(done) == len(qs)
    # the shared path really ran (no silent fallback), batched when asked to
    assert scorer.stats["shared"] == len(qs) and scorer.stats["per_candidate"] == 0
    assert scorer.stats["prefill_batches"] == (len(qs) if batch_size == 1 else 3)  # 2 text-only + 5 image questions
    assert {images for images, _ in scorer.preparer.checked_tokens} == {True, False} and scorer.preparer.derived_tokens


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_is_greedy_forced_true(arch, tiny_biased_to_the, tiny_images):
    """A bias on one token's logit makes it the argmax everywhere: repeating it is greedy (also from the prefill)."""
    model, processor = tiny_biased_to_the(arch)
    qs = [
        Question(
            "<image>\nQuestion: which animal is this? Answer:",
            tiny_images[:1],
            [" the the the", " the cat", " the", " cat"],
        )
    ]
    (got,) = score_questions(model, processor, qs, batch_size=2)
    assert [s.is_greedy for s in got] == [True, False, True, False]
    assert_same(reference(model, processor, qs), [got])


BF16_TOLERANCE = 1.1e-3  # docs/speed.md: "within 1.1e-3 in bfloat16 (all six tiny models)"


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_bfloat16_tolerance(arch, tiny_checkpoint, tiny_images):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint(arch), dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint(arch))
    qs = questions(tiny_images)
    assert_same(
        reference(model, processor, qs), score_questions(model, processor, qs, batch_size=3), tol=BF16_TOLERANCE
    )


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava"])
def test_eager_attention(arch, tiny_checkpoint, tiny_images, references):
    """The packed layout's 4D mask in the eager attention's additive (float) form."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(
        tiny_checkpoint(arch), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint(arch))
    qs = questions(tiny_images)
    scorer = SharedPrefixScorer(model, processor, batch_size=3)
    assert scorer.forward.layout == "packed"
    assert_same(reference(model, processor, qs), scorer.score(qs))
    assert scorer.stats["per_candidate"] == 0


def test_mrope_deltas_matter(tiny_loaded, tiny_images):
    """Guard: continuation positions without Qwen2-VL's rope_deltas give other scores (the parity test can fail)."""
    model, processor = tiny_loaded("qwen2_vl")
    qs = questions(tiny_images)[:1]
    scorer = SharedPrefixScorer(model, processor, verify=False)
    scorer.forward.positions = "1d"  # what a wrapper that ignores M-RoPE would do
    wrong = scorer.score(qs)[0]
    ref = reference(model, processor, qs)[0]
    assert max(abs(a.nll - b.nll) for a, b in zip(ref, wrong) if a.n_tokens > 1) > 1e-4  # 100x the parity gap


def test_first_batch_check_switches_sharing_off(tiny_loaded, tiny_images, references, monkeypatch):
    """Scores off the reference (here: M-RoPE deltas dropped) or a failing shared forward: the run falls back."""
    model, processor = tiny_loaded("qwen2_vl")
    qs = questions(tiny_images)
    scorer = SharedPrefixScorer(model, processor, batch_size=2)
    scorer.forward.positions, scorer.fallbacks.verify_tolerance = "1d", 1e-5
    assert_same(references("qwen2_vl"), scorer.score(qs))
    assert not scorer.share_prefix and "differ" in scorer.reason

    scorer = SharedPrefixScorer(model, processor, batch_size=2)
    monkeypatch.setattr(scorer.forward, "run", lambda batch, inputs: 1 / 0)
    assert_same(references("qwen2_vl"), scorer.score(qs))
    assert not scorer.share_prefix and "ZeroDivisionError" in scorer.reason


def test_share_prefix_false_is_the_reference(tiny_loaded, tiny_images):
    model, processor = tiny_loaded("llava")
    qs = questions(tiny_images)
    scorer = SharedPrefixScorer(model, processor, share_prefix=False, batch_size=4)
    got = scorer.score(qs)
    assert scorer.stats["per_candidate"] == len(qs) and scorer.stats["shared"] == 0
    assert_same(reference(model, processor, qs), got, tol=0)


def test_unknown_model_type_falls_back(tiny_loaded, tiny_images, monkeypatch):
    model, processor = tiny_loaded("llava")
    monkeypatch.delitem(prefix_sharing.SUPPORT, "llava")
    scorer = SharedPrefixScorer(model, processor, batch_size=2)
    assert not scorer.share_prefix and "SUPPORT" in scorer.reason
    qs = questions(tiny_images)[:2]
    assert_same(reference(model, processor, qs), scorer.score(qs), tol=0)
    assert scorer.stats["per_candidate"] == 2


def test_per_question_fallbacks(tiny_loaded, tiny_images):
    """An empty text-only prompt (the reference scores from BOS/EOS) goes the per-candidate way."""
    model, processor = tiny_loaded("qwen2_vl")
    qs = [Question("", [], [" a dog", " cat"]), Question("<image> Which?", tiny_images[:1], [" a dog", " b"])]
    scorer = SharedPrefixScorer(model, processor, batch_size=2)
    got = scorer.score(qs)
    assert (scorer.stats["per_candidate"], scorer.stats["shared"]) == (1, 1)
    assert_same(reference(model, processor, qs), got)
    # an image placeholder inside a candidate is never shared; the reference refuses it as well
    bad = [Question("<image> Which?", tiny_images[:1], [" a <|vision_start|><|image_pad|><|vision_end|>"])]
    for run in (lambda: scorer.score(bad), lambda: reference(model, processor, bad)):
        with pytest.raises(ValueError, match="image"):
            run()


class TextDependentProcessor:
    """A processor whose image-token count depends on the text: images shrink when the text mentions a zebra."""

    def __init__(self, processor):
        self._processor = processor

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, text=None, images=None, **kwargs):
        if images and any("zebra" in t for t in text):
            images = [im.resize((28, 28)) for im in images]
        return self._processor(*args, text=text, images=images, **kwargs)


def test_text_dependent_image_tokens_are_detected(tiny_loaded, tiny_images):
    model, processor = tiny_loaded("qwen2_vl")
    proxy = TextDependentProcessor(processor)
    qs = [
        Question("<image> Which animal?", tiny_images[:1], [" a zebra", " a dog"], proxy),
        Question("<image> Which animal?", tiny_images[1:2], [" a cat", " a dog"], proxy),
    ]
    scorer = SharedPrefixScorer(model, processor, batch_size=2)
    got = scorer.score(qs)
    ref = [score_continuations(model, proxy, q.context, q.images, q.continuations) for q in qs]
    assert not scorer.preparer.derived_tokens  # the self-check caught the derived ids, exact tokenisation from then on
    assert scorer.stats["per_candidate"] == 1 and scorer.stats["shared"] == 1  # the zebra question: unsafe
    assert_same(ref, got)


def test_per_question_processor_proxy(tiny_loaded, tiny_images):
    """prompt_styles' InternVL reversed-blocks proxy: shared scoring encodes with the question's own processor."""
    from radar_tasks.models.protocol import ReversedBlocksProcessor

    model, processor = tiny_loaded("internvl")
    proxy = ReversedBlocksProcessor(processor)
    qs = [Question("<image>\n<image>\nWhich plant?", tiny_images[:2], [" a rose", " an oak tree"], proxy)]
    got = score_questions(model, processor, qs, batch_size=2)
    assert_same([score_continuations(model, proxy, qs[0].context, qs[0].images, qs[0].continuations)], got)


def test_out_of_memory_splits_the_batch(tiny_loaded, tiny_images, references, monkeypatch):
    model, processor = tiny_loaded("qwen2_vl")
    qs = questions(tiny_images)
    scorer = SharedPrefixScorer(model, processor, batch_size="auto")
    real = scorer.forward.run

    def flaky(batch, inputs):
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(batch, inputs)

    monkeypatch.setattr(scorer.forward, "run", flaky)
    assert_same(references("qwen2_vl"), scorer.score(qs))
    assert scorer.batching.max_batch_size is not None and scorer.batching.max_batch_size <= 2


def test_batch_size_parsing():
    from radar_tasks.models.args import parse_batch_size as parse

    assert parse("4") == 4 and parse(2) == 2 and parse("auto") == "auto" and parse("auto:4") == "auto"
    with pytest.raises(ValueError):
        parse("0")


def test_radar_hf_shares_and_batches(tiny_checkpoint, tiny_images):
    """The lmms-eval wrapper: share_prefix (default) with batch_size 2 gives the share_prefix=false numbers."""
    from lmms_eval.api.instance import Instance

    from radar_tasks.models.radar_hf import RadarHF

    docs = [
        {
            "context": "<image> Which animal? Answer:",
            "images": tiny_images[:1],
            "choices": [" a dog", " the cat", " B"],
        },
        {"context": "<image><image> Same or different?", "images": tiny_images[1:], "choices": [" same", " different"]},
        {"context": "Which plant?", "images": [], "choices": [" a rose", " an oak tree"]},
    ]
    order = [(d, c) for c in range(3) for d in range(3) if c < len(docs[d]["choices"])]  # questions interleaved
    requests = [
        Instance(
            "loglikelihood",
            (docs[d]["context"], docs[d]["choices"][c], lambda doc: doc["images"], d, "t", "s"),
            idx=c,
            metadata={"task": "t", "doc_id": d, "repeats": 1},
        )
        for d, c in order
    ]
    answers = {}
    for share in ("true", "false"):
        wrapper = RadarHF(
            pretrained=str(tiny_checkpoint("qwen2_vl")),
            device="cpu",
            dtype="float32",
            batch_size="2",
            share_prefix=share,
        )
        wrapper.task_dict = {"t": {"s": docs}}
        answers[share] = [r.text for r in wrapper.loglikelihood(requests)]
        assert wrapper.scorer.stats["shared" if share == "true" else "per_candidate"] == len(docs)
    for (nll, greedy), (ref_nll, ref_greedy) in zip(answers["true"], answers["false"]):
        assert nll == pytest.approx(ref_nll, abs=1e-5) and greedy == ref_greedy


def test_fallbacks_are_warnings_in_the_lmms_eval_log_and_counted(tiny_loaded, tiny_images):
    """Every fallback reaches loguru (the logger lmms-eval's log shows) at WARNING, once per reason, and is counted."""
    from loguru import logger

    model, processor = tiny_loaded("qwen2_vl")
    seen = []
    sink = logger.add(lambda m: seen.append(m.record["message"]), level="WARNING")
    try:
        scorer = SharedPrefixScorer(model, processor, device="cpu", batch_size=1)
        qs = [
            Question("<image> Which?", tiny_images[:1], [" a <image> b", " c"]),  # marker in a candidate
            Question("<image> Which one?", tiny_images[1:2], [" <image>", " d"]),
            Question("", [], [" a", " b"]),
        ]  # empty text-only prompt
        scorer.score(qs)
        off = SharedPrefixScorer(model, processor, device="cpu", share_prefix=True)
        off.fallbacks.switch_off("a test reason")
    finally:
        logger.remove(sink)
    assert sum("image placeholder in a candidate" in m for m in seen) == 1
    assert sum("empty prompt" in m for m in seen) == 1
    assert any("prefix sharing off for this run: a test reason" in m for m in seen)
    outcome = scorer.outcome()
    assert outcome["question_fallbacks"] == {"image placeholder in a candidate": 2, "empty prompt": 1}
    assert outcome["per_candidate"] == 3 and outcome["shared"] == 0 and outcome["run_fallback"] is None
    assert off.outcome()["run_fallback"] == "a test reason"


# ---------------------------------------------------------------------------------------------------------------------
# The parts on their own, without a model: expected tensors and batches written out by hand
# ---------------------------------------------------------------------------------------------------------------------
def test_layouts_packed_and_rows():
    from radar_tasks.models.prefix_sharing import layouts

    ids = torch.tensor
    # question 0: prefix 3, candidates feeding [5, 6] and [7]; question 1: prefix 2 (padded to 3), feeding [8]
    fed = [[ids([5, 6]), ids([7])], [ids([8])]]
    prefixes, prefix_mask, deltas = ids([3, 2]), ids([[1, 1, 1], [1, 1, 0]]), ids([10, 20])

    packed = layouts.packed(fed, prefixes, prefix_mask, deltas, pad_id=0, scheme="1d")
    assert packed.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert packed.keep.tolist() == [[True, True, True], [True, False, False]]
    assert packed.position_ids.tolist() == [[3, 4, 3], [2, 2, 2]]  # restarting at P per candidate
    assert packed.cache_rows is None
    assert packed.attention_mask.shape == (2, 1, 3, 6)
    assert packed.attention_mask[0, 0].int().tolist() == [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 1],  # the second candidate sees the prefix and itself, not the first candidate
    ]
    assert packed.attention_mask[1, 0].int().tolist() == [[1, 1, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]
    additive = layouts.packed(fed, prefixes, prefix_mask, deltas, pad_id=0, scheme="1d", additive_dtype=torch.float32)
    low = torch.finfo(torch.float32).min  # eager attention: the mask as 0 (seen) / the dtype's minimum (not seen)
    assert additive.attention_mask[0, 0, 0].tolist() == [0, 0, 0, 0, low, low]

    rows = layouts.rows(fed, prefixes, prefix_mask, deltas, pad_id=0, scheme="mrope")
    assert rows.input_ids.tolist() == [[5, 6], [7, 0], [8, 0]]
    assert rows.cache_rows.tolist() == [0, 0, 1]
    assert rows.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 0, 1, 0]]
    # M-RoPE: text positions + the question's rope delta, three equal rows
    assert rows.position_ids.tolist() == [[[13, 14], [13, 14], [22, 23]]] * 3


def test_batching_by_size_and_token_budget(monkeypatch):
    from radar_tasks.models.prefix_sharing import PreparedQuestion, batching

    def question(name, has_images, prefix=3):
        # one candidate feeding 1 token beyond the prefix (a cache row), one single-token candidate (none)
        full = [torch.arange(prefix + 2), torch.arange(prefix + 1)]
        q = PreparedQuestion(prefix, full, prefix=prefix, has_images=has_images)
        q.name = name
        return q

    qs = [question("i1", True), question("t1", False), question("i2", True), question("t2", False)]
    qs.append(question("t3", False, prefix=2))
    assert batching.Batcher.cost(qs[:1]) == 3 + 1 * (3 + 1)  # prefill 3 + one row of prefix 3 and 1 fed token
    assert batching.Batcher.cost(qs[:2]) == 2 * 3 + 2 * (3 + 1)

    def batches(batch_size, max_batch_size=None, one_per_prefill=False):
        batcher = batching.Batcher(
            None,
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            one_per_prefill=one_per_prefill,
            device=torch.device("cpu"),
            dtype=torch.float32,
            pad_id=0,
            pad_dim1=(),
        )
        return [[q.name for q in batch] for batch in batcher.batches(qs)]

    # without images first, shortest prefix first; images never share a batch with text-only prompts
    assert batches(2) == [["t3", "t1"], ["t2"], ["i1", "i2"]]
    assert batches(4, max_batch_size=1) == batches(4, one_per_prefill=True) == [["t3"], ["t1"], ["t2"], ["i1"], ["i2"]]
    # `auto`: as many as fit the token budget (cost of 2 questions: 14 tokens, of 3: 21)
    monkeypatch.setattr(batching, "CPU_AUTO_TOKENS", 19)
    assert batches("auto") == [["t3", "t1"], ["t2"], ["i1", "i2"]]
    monkeypatch.setattr(batching, "CPU_AUTO_TOKENS", 1000)
    assert batches("auto") == [["t3", "t1", "t2"], ["i1", "i2"]]
