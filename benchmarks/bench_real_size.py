"""Benchmark: radar_hf's scoring path at the real sizes of the paper's three base models (random weights, no download).

Builds the real configuration of Qwen2-VL-2B, InternVL3.5-1B or LLaVA-OneVision-0.5B (values below, each with its
source) with random weights, a processor with the checkpoint's real image settings around the tests' small trained
tokenizer (`radar_tasks.demo.tiny_models`; the model keeps the real vocabulary size, so the LM head and embedding
cost what they cost), and N synthetic questions shaped like M3-Bench: 1024x768 photo-like JPEGs (MMBench-like
records, one image; the second question, when N >= 2, a SeePhys-like record with two images), K = 4 candidates of
about 1, 3, 5 and 8 tokens. Each question is scored by `RadarHF.loglikelihood` (lmms-eval requests, the family's
`prompt_style=auto`, the background pipeline with `--num-workers`, default 0) with `share_prefix` on, then off
(one forward per candidate, the reference), after one warm-up question on the shared path (its one-off checks: the
first question is also scored the reference way, and its candidate ids are tokenised the exact way).

Printed per question: images, visual tokens (image tokens of the prompt ids) and prompt tokens P, mean scored
candidate tokens C; the wall time of both paths (the shared path's second scoring of the question: the first
at a new size is slower, printed beside; and this process's CPU time: on a CPU shared with other work it follows
the work done more closely), their ratio and the FLOP limit K(P+C)/(P+KC) (what sharing saves at best in
the language model; the vision tower is saved K-fold on top); the model FLOPs of the shared path and the vision
tower's part; the achieved FLOP/s, the matmul peak and their ratio (MFU); memory; the largest score difference
between the two paths (|nll| and |mean logit| of every candidate, with equal token counts). `--bare` adds the
bare model forward on the prompt (no cache, the last position's logits: the plain model at the same size) with
its MFU; `--profile`, torch.profiler's table of one more shared scoring. With N >= 2, a batched pass: all
questions in one call on the shared path with radar_hf's `batch_size=--batch-size` (default auto: the token
budget), its prefill batches and parity (the padded prefill and the packed continuations at real size). Then the
totals, and last:

    config C: parity D, speedup S (limit L), mfu M, peak MEM

(parity: the largest difference over all questions and the batched pass; speedup: summed per-candidate time /
summed shared time; limit: sum K(P+C) / sum (P+KC); mfu: summed FLOPs / sum of shared time x matmul peak; peak:
bytes, the process's peak RSS on CPU (model included), on CUDA the largest `torch.cuda.max_memory_allocated` of
a shared scoring (model included)). Exit status 1 when a question went the per-candidate way on the shared path
(a fallback: then nothing shared was measured).

What is counted: `torch.utils.flop_counter.FlopCounterMode` over one more shared scoring of the question (timed
apart: the counter slows execution), i.e. the FLOPs of the matrix products the model runs (linear layers,
convolutions, batched products, and attention kernels: 4 * heads * q_len * k_len * head_dim, halved on the causal
square as the kernel skips the masked half; torch has no formula for the CPU flash kernel, so it is given one
here). Elementwise work (norms, activations, softmax of the non-fused paths, RoPE) is not counted. The matmul
peak is the best of a few large square matmuls of the run's dtype on the run's device, measured in the same
process right before each question's shared scoring (on a shared CPU the load varies).

    python benchmarks/bench_real_size.py --config qwen2-vl-2b --questions 2 --device cpu
    python benchmarks/bench_real_size.py --config internvl3_5-1b --questions 1 --device cuda --dtype bfloat16
    python benchmarks/bench_real_size.py --config tiny-qwen2-vl --questions 2      # smoke: seconds
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling benchmark modules

from bench_prefix_sharing import QWEN2_VL_2B  # noqa: E402
from bench_prefix_sharing import WORDS as CANDIDATE_WORDS  # noqa: E402  (words the tiny tokenizer knows)
from synthetic_m3bench import photo, sentence  # noqa: E402

IMAGE_SIZE = (1024, 768)  # M3-Bench's MMBench / MathVista photos
WARM_UP_SIZE = (384, 384)  # the smallest image of every family's settings: a cheap warm-up question
CANDIDATE_TOKENS = (1, 3, 5, 8)  # K = 4
SPLIT, TASK = "test", "bench_real_size"

# ---------------------------------------------------------------------------------------------- configurations
# InternVL3.5-1B (OpenGVLab/InternVL3_5-1B-HF): InternViT-300M-448px-V2_5 + Qwen3-0.6B. Values: the checkpoint's
# config.json as transformers' InternVLConfig / InternVLVisionConfig document it (their defaults are the InternVL3-1B
# tower, the same InternViT-300M), and the Qwen3-0.6B text config; checked against the checkpoint's stored parameter
# counts (304,012,288 vision, 751,632,384 language: an untied LM head, 5,253,120 projector; `--check-sizes`).
INTERNVL3_5_1B = {
    "text": {
        "model_type": "qwen3",
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    },
    "vision": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "attention_bias": True,
        "use_qk_norm": False,
        "hidden_act": "gelu",
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "image_size": 448,
        "patch_size": 14,
        "layer_scale_init_value": 0.1,
        "use_mean_pooling": True,
    },
    "image_seq_length": 256,  # 448 px tile: 32x32 patches, pixel shuffle 0.5 -> 16x16
    "downsample_ratio": 0.5,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "default",
    "tie_word_embeddings": False,
}
# the checkpoint's processor: 448 px tiles, 1..12 tiles plus a thumbnail (crop_to_patches), ImageNet mean / std
INTERNVL_IMAGES = {
    "size": {"height": 448, "width": 448},
    "crop_to_patches": True,
    "min_patches": 1,
    "max_patches": 12,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}
# LLaVA-OneVision-0.5B (llava-hf/llava-onevision-qwen2-0.5b-ov-hf): SigLIP-so400m at 384 px (26 layers: the HF
# conversion drops the last one, vision_feature_layer -1; transformers' LlavaOnevisionConfig default tower) + Qwen2-0.5B
# (tied embeddings; 893.6M parameters in all, the checkpoint's 894M). Anyres: the config's image_grid_pinpoints
# (transformers' default, 384..2304 px in 384 px steps), `anyres_max_9`, features "full" of the last layer.
LLAVA_ONEVISION_0_5B = {
    "text": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "hidden_act": "silu",
        "tie_word_embeddings": True,
    },
    "vision": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 26,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
        "vision_use_head": False,
    },
    "vision_feature_select_strategy": "full",
    "vision_feature_layer": -1,
    "vision_aspect_ratio": "anyres_max_9",
    "tie_word_embeddings": True,
}
LLAVA_OV_IMAGES = {"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
LLAVA_OV_TOKENS_PER_CROP = 729  # 27 x 27 patches of 14 px


@dataclass(frozen=True)
class Spec:
    arch: str  # tiny_models arch: the tokenizer, the token ids, the chat template
    real: bool  # False: the tiny model and processor as the tests build them (smoke runs)
    about: str


SPECS = {
    "qwen2-vl-2b": Spec("qwen2_vl", True, "Qwen2-VL-2B sizes (Qwen/Qwen2-VL-2B config.json), max_pixels 768*28*28"),
    "internvl3_5-1b": Spec("internvl", True, "InternVL3.5-1B sizes (OpenGVLab/InternVL3_5-1B-HF), 1..12 tiles"),
    "llava-onevision-0.5b": Spec(
        "llava_onevision", True, "LLaVA-OneVision-0.5B sizes (llava-hf/llava-onevision-qwen2-0.5b-ov-hf), anyres"
    ),
    "tiny-qwen2-vl": Spec("qwen2_vl", False, "the tests' tiny Qwen2-VL"),
    "tiny-internvl": Spec("internvl", False, "the tests' tiny InternVL"),
    "tiny-llava-onevision": Spec("llava_onevision", False, "the tests' tiny LLaVA-OneVision"),
}


def real_config_and_processor(arch: str, tiny_config, tiny_processor):
    """The real configuration of `arch` and a processor with its real image settings, around the tiny tokenizer."""
    import transformers

    from radar_tasks.models import protocol

    tokenizer, template = tiny_processor.tokenizer, tiny_processor.chat_template
    video = tiny_processor.video_processor  # never used: no video
    if arch == "qwen2_vl":
        ids = {
            k: getattr(tiny_config, k)
            for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        }
        text = dict(QWEN2_VL_2B["text"], eos_token_id=tiny_config.text_config.eos_token_id, bos_token_id=None)
        config = transformers.Qwen2VLConfig(
            text_config=text,
            vision_config=QWEN2_VL_2B["vision"],
            tie_word_embeddings=QWEN2_VL_2B["tie_word_embeddings"],
            **ids,
        )
        # the paper's protocol preset: min_pixels 256*28*28, max_pixels 768*28*28 (256..768 merged tokens per image)
        images = transformers.Qwen2VLImageProcessor(**protocol.PAPER_PRESETS["qwen2vl_base"]["processor_kwargs"])
        processor = transformers.Qwen2VLProcessor(
            image_processor=images, video_processor=video, tokenizer=tokenizer, chat_template=template
        )
    elif arch == "internvl":
        spec = INTERNVL3_5_1B
        config = transformers.InternVLConfig(
            text_config=spec["text"],
            vision_config=spec["vision"],
            image_token_id=tiny_config.image_token_id,
            **{k: v for k, v in spec.items() if k not in ("text", "vision")},
        )
        processor = transformers.InternVLProcessor(
            image_processor=transformers.GotOcr2ImageProcessor(**INTERNVL_IMAGES),
            video_processor=video,
            tokenizer=tokenizer,
            image_seq_length=spec["image_seq_length"],
            chat_template=template,
        )
    elif arch == "llava_onevision":
        spec = LLAVA_ONEVISION_0_5B
        config = transformers.LlavaOnevisionConfig(
            text_config=spec["text"],
            vision_config=spec["vision"],
            image_token_index=tiny_config.image_token_id,
            video_token_index=tiny_config.video_token_id,
            **{k: v for k, v in spec.items() if k not in ("text", "vision")},
        )
        images = transformers.LlavaOnevisionImageProcessor(
            image_grid_pinpoints=config.image_grid_pinpoints, **LLAVA_OV_IMAGES
        )
        processor = transformers.LlavaOnevisionProcessor(
            image_processor=images,
            video_processor=video,
            tokenizer=tokenizer,
            num_image_tokens=LLAVA_OV_TOKENS_PER_CROP,
            vision_feature_select_strategy=spec["vision_feature_select_strategy"],
            vision_aspect_ratio=spec["vision_aspect_ratio"],
            chat_template=template,
        )
    else:
        raise ValueError(f"no real size for {arch!r}")
    return config, processor


def build(name: str, device: str, dtype: torch.dtype, meta: bool = False):
    """(model, processor) of configuration `name`: random weights (seed 0) on `device` in `dtype`, in eval mode."""
    from transformers import AutoModelForImageTextToText

    from radar_tasks.demo import tiny_models

    spec = SPECS[name]
    config, processor = tiny_models.tiny_config_and_processor(spec.arch)
    if spec.real:
        config, processor = real_config_and_processor(spec.arch, config, processor)
    with torch.random.fork_rng(devices=[]), torch.device("meta" if meta else device):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return model.eval(), processor


def vision_module(model):
    inner = getattr(model, "model", model)
    return next(getattr(inner, a) for a in ("visual", "vision_tower", "vision_model") if hasattr(inner, a))


def parameter_counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in vision_module(model).parameters())
    language = sum(p.numel() for p in model.get_decoder().parameters())
    head = model.get_output_embeddings().weight
    tied = head is model.get_input_embeddings().weight
    return {
        "total": total,
        "vision": vision,
        "language": language + (0 if tied else head.numel()),
        "other": total - vision - language - (0 if tied else head.numel()),
    }


# ------------------------------------------------------------------------------------------------------ questions
def _candidates(tokenizer, context: str, joiner: str, rng: random.Random) -> list[str]:
    """Candidates scored as about CANDIDATE_TOKENS tokens after `context` (the tail of the text-only ids)."""
    base = len(tokenizer(context)["input_ids"])
    out = []
    for target in CANDIDATE_TOKENS:
        words: list[str] = []
        while True:
            cand = " ".join(words)
            if words and len(tokenizer(context + joiner + cand)["input_ids"]) - base >= target and cand not in out:
                break
            words.append(rng.choice(CANDIDATE_WORDS))
        out.append(cand)
    return out


def make_docs(folder: Path, tokenizer, style: str, n: int, seed: int = 0, size=IMAGE_SIZE) -> list[dict]:
    """n M3-Bench-like records (the normalized record's columns), their JPEGs written into `folder`: an MMBench-like
    question on one image; the second one (n >= 2) SeePhys-like on two images."""
    from synthetic_m3bench import encode

    from radar_tasks import prompts

    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    docs = []
    for i in range(n):
        subset, n_images, words = ("seephys", 2, (20, 40)) if i == 1 else ("mmbench", 1, (8, 25))
        paths = []
        for k in range(n_images):
            path = folder / f"q{seed}_{i}_{k}.jpg"
            path.write_bytes(encode(photo(np_rng, size), "JPEG"))
            paths.append(str(path))
        doc = {
            "id": f"q{i}",
            "subset": subset,
            "category": "image_scene" if subset == "mmbench" else subset,
            "ability": "perception" if subset == "mmbench" else "reasoning",
            "source_file": f"synthetic/{subset}.json",
            "images": paths,
            "image_stamps": [],
            "question": sentence(rng, rng.randint(*words)) + "?",
            "answer": "",
            "distractors": [],
            "choices": [""],
            "options_text": "",
            "correct_first": False,
            "skipped": False,
            "absent": False,
            "source": "{}",
        }
        context = prompts.build(doc, style, [""]).context
        answer, *distractors = _candidates(tokenizer, context, prompts.JOINERS[style], rng)
        docs.append(dict(doc, answer=answer, distractors=distractors, choices=[answer, *distractors]))
    return docs


def requests_of(docs: list[dict], doc_id: int, task: str = TASK) -> list:
    """lmms-eval's multiple-choice requests of one doc (what the task YAMLs make of an M3-Bench record)."""
    from lmms_eval.api.instance import Instance

    from radar_tasks import prompts
    from radar_tasks.tasks import hooks

    doc = docs[doc_id]
    context = prompts.task_text(doc, image_markers=True)
    return [
        Instance(
            "loglikelihood",
            (context, prompts.TARGET_DELIMITER + choice, hooks.doc_to_visual, doc_id, task, SPLIT),
            idx=k,
            metadata={"task": task, "doc_id": doc_id, "repeats": 1},
        )
        for k, choice in enumerate(hooks.doc_to_choice(doc))
    ]


# ---------------------------------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s: the best of a few n x n matmuls. n doubles from 256 while one takes under 50 ms, up to 2048 on CPU
    (where its rate is reached) and 8192 on CUDA, so that a dtype the device computes slowly (bfloat16 on a CPU
    without bfloat16 instructions) does not take minutes."""
    n_max, repeats = (8192, 20) if device.type == "cuda" else (2048, 5)

    def seconds(a, b) -> float:
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        return time.perf_counter() - start

    n = 256
    while True:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        seconds(a, b)  # untimed: first-call costs
        if n >= n_max or seconds(a, b) > 0.05:
            break
        n *= 2
    return 2 * n**3 / min(seconds(a, b) for _ in range(repeats))


def _attention_flops(is_causal_at: int):
    """A FlopCounterMode formula for an attention kernel whose `is_causal` is positional argument `is_causal_at`:
    torch's count (both products, every query x key pair), halved, as the kernel does, on a causal square."""
    from torch.utils.flop_counter import sdpa_flop_count

    def formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        flops = sdpa_flop_count(query_shape, key_shape, value_shape)
        is_causal = kwargs.get("is_causal", args[is_causal_at - 3] if len(args) > is_causal_at - 3 else False)
        q_len, k_len = query_shape[2], key_shape[2]
        if is_causal and q_len == k_len:
            flops = flops * (q_len + 1) // (2 * q_len)
        return flops

    return formula


def flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops(4),
        aten._scaled_dot_product_flash_attention: _attention_flops(4),
        aten._scaled_dot_product_efficient_attention: _attention_flops(6),
        aten._scaled_dot_product_cudnn_attention: _attention_flops(6),
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


def vision_flops(counter, model) -> int:
    """FLOPs counted inside the vision tower (FlopCounterMode keys a module by the model's class name and its path)."""
    name = next(n for n, m in model.named_modules() if m is vision_module(model))
    return sum(counter.get_flop_counts().get(f"{type(model).__name__}.{name}", {}).values())


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def recorded(scorer) -> list:
    """The scorer's per-question ContinuationScores (nll and mean logit), as it computes them."""
    seen: list = []
    inner = scorer.score_prepared

    def score_prepared(*args, **kwargs):
        out = inner(*args, **kwargs)
        seen.extend(out)
        return out

    scorer.score_prepared = score_prepared
    return seen


def timed(fn, device):
    """(wall seconds, CPU seconds of this process, result) of `fn()`; on a CPU shared with other work the CPU time
    follows the work done more closely than the wall time."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, out


def difference(shared: list, reference: list) -> float:
    worst = 0.0
    for a, b in zip(shared, reference):
        if a.n_tokens != b.n_tokens:
            return float("inf")
        if a.n_tokens:
            worst = max(worst, abs(a.nll - b.nll), abs(a.mean_logit - b.mean_logit))
    return worst


def prompt_encoding(radar, docs, doc_id) -> tuple[int, dict]:
    """(images, the processor's encoding of the prompt) of a question as radar_hf prompts it."""
    from radar_tasks.models import likelihood

    context, _, visual, _, task, split = requests_of(docs, doc_id)[0].args
    question, _ = radar.load_question(task, split, doc_id, context, visual, [])
    placeholder = likelihood.image_placeholder(radar.loaded.model_type, radar.processor)
    prompt = likelihood.build_prompt(question.context, len(question.images), placeholder)
    return len(question.images), likelihood.encode(radar.processor, prompt, question.images)


def bare_forward(model, encoding: dict, device, dtype):
    """A function running the model's forward on the prompt alone (no cache, the last position's logits): the
    plain model at the same size, for comparison."""
    from radar_tasks.models import likelihood

    inputs = likelihood.to_device(encoding, device, dtype)
    inner = getattr(model, "model", model)

    @torch.inference_mode()
    def run():
        if hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None  # M-RoPE: computed afresh for this prompt
        model(**inputs, use_cache=False, logits_to_keep=1)

    return run


def profiled(fn, device, rows: int = 25) -> str:
    """torch.profiler's table of the ops that took the most time in `fn` (self time: where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def measure(i: int, model, shared, docs, score: dict, scores: dict, device, dtype, args) -> dict:
    """Question i: both paths timed, the shared path's FLOPs counted; prints its line, returns its numbers."""
    n_images, encoding = prompt_encoding(shared, docs, i)
    ids = encoding["input_ids"][0]
    visual, p = int((ids == model.config.image_token_id).sum()), len(ids)
    peak = matmul_peak(device, dtype)  # right before the timed scoring: on a shared CPU the load varies
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    # the first scoring of a question this size is slower (the allocator grows, fresh pages fault in: measured
    # 89.4 s against 77.8 s for a rerun at the Qwen2-VL-2B size): timed, printed, and then timed again
    t_first, _, _ = timed(score[True], device)
    t_shared, cpu_shared, _ = timed(score[True], device)
    memory = peak_memory(device)  # CUDA: of the shared scoring alone; CPU: the process's so far
    t_reference, cpu_reference, _ = timed(score[False], device)
    with flop_counter() as counter:
        score[True]()
    flops = counter.get_total_flops()
    ours, ref = scores[True][0], scores[False][0]  # the timed scoring's (the counted one came after)
    k = len(ref)
    c = sum(s.n_tokens for s in ref) / k
    row = {"p": p, "k": k, "c": c, "shared": t_shared, "reference": t_reference, "flops": flops, "peak": peak}
    row["memory"] = memory
    row["parity"] = difference(ours, ref)
    row["limit"] = k * (p + c) / (p + k * c)
    print(
        f"question {i + 1}: {n_images} image(s), {visual} visual tokens, prompt P = {p}, K = {k}, C = {c:.2f} "
        f"| shared {t_shared:.2f} s (first {t_first:.2f} s; cpu {cpu_shared:.1f} s), per candidate {t_reference:.2f} "
        f"s (cpu {cpu_reference:.1f} s), speedup {t_reference / t_shared:.2f} (cpu {cpu_reference / cpu_shared:.2f}; "
        f"FLOP limit {row['limit']:.2f}) | shared-path model FLOPs {flops:.3e} (vision tower "
        f"{vision_flops(counter, model):.3e}), {flops / t_shared / 1e9:.1f} GFLOP/s, matmul peak {peak / 1e9:.1f} "
        f"GFLOP/s, mfu {flops / t_shared / peak:.2f} | peak memory {memory / 2**30:.2f} GiB "
        f"| parity {row['parity']:.2e}",
        flush=True,
    )
    if args.bare:
        run = bare_forward(model, encoding, device, dtype)
        peak = matmul_peak(device, dtype)
        t_bare, _, _ = timed(run, device)
        with flop_counter() as counter:
            run()
        bare = counter.get_total_flops()
        print(
            f"  bare forward of the prompt: {t_bare:.2f} s, {bare:.3e} FLOPs, {bare / t_bare / 1e9:.1f} GFLOP/s, "
            f"matmul peak {peak / 1e9:.1f} GFLOP/s, mfu {bare / t_bare / peak:.2f}",
            flush=True,
        )
    if args.profile:
        print(profiled(score[True], device), flush=True)
    return row


def batched(shared, docs, reference: list, recorded_scores: list, device, args) -> dict:
    """All questions in one `loglikelihood` call on the shared path, batched as `--batch-size` says (the prompts
    right-padded into one prefill, the packed continuations): its parity against the per-candidate scores."""
    recorded_scores.clear()
    before = shared.scorer.stats["prefill_batches"]
    requests = [r for i in range(len(docs)) for r in requests_of(docs, i)]
    seconds, _, _ = timed(lambda: shared.loglikelihood(requests), device)
    parity = max(difference(ours, ref) for ours, ref in zip(recorded_scores, reference))
    print(
        f"batched: the {len(docs)} questions in one call, batch_size {args.batch_size}: "
        f"{shared.scorer.stats['prefill_batches'] - before} prefill batch(es), {seconds:.2f} s, parity {parity:.2e}",
        flush=True,
    )
    return {"parity": parity}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, choices=list(SPECS))
    parser.add_argument("--questions", type=int, default=2, help="synthetic questions (the second has two images)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--batch-size", default="auto", help="radar_hf batch_size of the shared path (the batched pass, N >= 2)"
    )
    parser.add_argument("--num-workers", default="0", help="radar_hf num_workers (background preparation)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--bare", action="store_true", help="also time the bare model forward on each prompt")
    parser.add_argument("--profile", action="store_true", help="also profile one shared scoring per question")
    parser.add_argument("--check-sizes", action="store_true", help="print the parameter counts (meta device), exit")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    if args.check_sizes:
        model, _ = build(args.config, args.device, dtype, meta=True)
        print(f"{args.config}: parameters {parameter_counts(model)}")
        return 0

    from radar_tasks.models.radar_hf import RadarHF

    start = time.perf_counter()
    model, processor = build(args.config, args.device, dtype)
    counts = parameter_counts(model)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"model: {SPECS[args.config].about}; random weights, {counts['total'] / 1e6:.1f}M parameters (vision "
        f"{counts['vision'] / 1e6:.1f}M, language {counts['language'] / 1e6:.1f}M), {dtype}; device {where}; "
        f"built in {time.perf_counter() - start:.1f} s; torch {torch.__version__}",
        flush=True,
    )
    peak = matmul_peak(device, dtype)
    print(f"matmul peak ({args.dtype}, best of a few square matmuls): {peak / 1e9:.1f} GFLOP/s", flush=True)

    wrappers = {
        share: RadarHF.from_model(
            model,
            processor,
            share_prefix=share,
            prompt_style="auto",  # the family's reference prompt (radar_hf's default is `raw`)
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        for share in (True, False)
    }
    scores = {share: recorded(w.scorer) for share, w in wrappers.items()}
    shared = wrappers[True]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_real_size_") as folder:
        docs = make_docs(Path(folder), processor.tokenizer, shared.settings.prompt_style, args.questions)
        warm = make_docs(Path(folder), processor.tokenizer, shared.settings.prompt_style, 1, seed=99, size=WARM_UP_SIZE)
        for w in wrappers.values():
            w.task_dict = {TASK: {SPLIT: docs}, "warm_up": {SPLIT: warm}}
        seconds, _, _ = timed(lambda: shared.loglikelihood(requests_of(warm, 0, "warm_up")), device)
        size = "x".join(map(str, WARM_UP_SIZE))
        print(f"warm-up (the shared path's one-off checks, on one {size} image): {seconds:.1f} s", flush=True)
        for i in range(len(docs)):
            scores[True].clear()
            scores[False].clear()
            score = {share: lambda w=w, i=i: w.loglikelihood(requests_of(docs, i)) for share, w in wrappers.items()}
            rows.append(measure(i, model, shared, docs, score, scores, device, dtype, args))
            rows[-1]["reference_scores"] = scores[False][0]
        if len(docs) > 1:
            rows.append(batched(shared, docs, [r["reference_scores"] for r in rows], scores[True], device, args))
    outcome = shared.scorer.outcome()
    print(f"prefix sharing outcome: {outcome}")
    parity = max(r["parity"] for r in rows)
    rows = [r for r in rows if "k" in r]  # the questions (not the batched pass)
    speedup = sum(r["reference"] for r in rows) / sum(r["shared"] for r in rows)
    limit = sum(r["k"] * (r["p"] + r["c"]) for r in rows) / sum(r["p"] + r["k"] * r["c"] for r in rows)
    mfu = sum(r["flops"] for r in rows) / sum(r["shared"] * r["peak"] for r in rows)
    print(
        f"config {args.config}: parity {parity:.2e}, speedup {speedup:.2f} (limit {limit:.2f}), mfu {mfu:.3f}, "
        f"peak {max(r['memory'] for r in rows) if device.type == 'cuda' else peak_memory(device):.3e}"
    )
    # exit status 1 where any question went the per-candidate way: then the run measured nothing shared
    fell_back = outcome["run_fallback"] or outcome["per_candidate"] or outcome["question_fallbacks"]
    return 1 if fell_back else 0


if __name__ == "__main__":
    sys.exit(main())
