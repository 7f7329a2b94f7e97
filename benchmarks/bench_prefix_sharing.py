"""Benchmark: scoring the K candidates of a multiple-choice question three ways, side by side in one process.

(a) one forward per candidate (prompt + candidate, images included): what lmms-eval wrappers do, and our reference
    (`likelihood.score_continuations`);
(b) the authors' style: one left-padded batch of the K sequences (prompt and images repeated K times); here with
    `logits_to_keep` (only the candidate positions reach the LM head), i.e. a stronger baseline than the scripts,
    which compute every position's logits;
(c) ours (`prefix_sharing`): images and prompt once (prefill with cache), the K candidates in one forward on top of
    the cache (layout `packed` under sdpa, `prefix_sharing.layouts`); (c, B=4) the same with 4 questions per prefill
    batch.

Default model (`--config small`): a random-weight Qwen2-VL of realistic proportions, built offline in seconds:
language model 256 wide, 4 layers (GQA 8/2 heads, MLP 1024), vision tower 128 wide, 4 layers; 448x448 images give 256
merged visual tokens (Qwen2-VL's own image processor, `min_pixels = max_pixels = 256*28*28`). Proportions as in
Qwen2-VL-2B: the vision tower on one image costs ~1.6x the language model's prefill of the 282-token prompt (2B:
~1.9x, counting attention), and the vocabulary (2560) makes the LM head ~17% of a token's layer FLOPs (2B: 18%).
`--config qwen2-vl-2b` builds the real Qwen2-VL-2B sizes (1.5B language model, 675M vision tower; random weights, no
download) - for a GPU: `--device cuda --dtype bfloat16 --config qwen2-vl-2b`.

Printed per K (2, 4, 10; candidates of 1 to 8 tokens): median time per question of each method over interleaved
rounds (a, b, c run one after the other on the same question, so that load from other processes hits all alike), the
speed-ups (medians of the per-question paired ratios), the FLOP limit K(P+C)/(P+KC) (P = prompt tokens, C = mean
candidate tokens: what sharing saves at best in the language model; the vision tower is saved K-fold on top), the
max |score difference| of (b) and (c) against (a),
and peak memory of scoring one question: on CUDA `torch.cuda.max_memory_allocated` above the loaded model; on CPU the
growth of the resident set (RSS, sampled every 0.5 ms from /proc/self/statm) above the loaded model after one warm-up
question, each method in a fresh subprocess with glibc's mmap threshold at 64 KiB (so that freed tensors leave the
RSS; otherwise the allocator keeps them and a later peak hides in memory freed earlier).

    python benchmarks/bench_prefix_sharing.py                 # CPU, small model, ~2-4 minutes on 2 cores
    python benchmarks/bench_prefix_sharing.py --device cuda --dtype bfloat16 --config qwen2-vl-2b
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from radar_tasks.models import likelihood
from radar_tasks.models.prefix_sharing import SharedPrefixScorer

# Qwen2-VL-2B (Qwen/Qwen2-VL-2B-Instruct config.json), written out here: no download
QWEN2_VL_2B = {
    "text": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "hidden_act": "silu",
    },
    "vision": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 1536,
        "mlp_ratio": 4,
        "num_heads": 16,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_act": "quick_gelu",
    },
    "tie_word_embeddings": True,
}
SMALL = {
    "text": {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 2560,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
        "hidden_act": "silu",
    },
    "vision": {
        "depth": 4,
        "embed_dim": 128,
        "hidden_size": 256,
        "mlp_ratio": 4,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_act": "quick_gelu",
    },
    "tie_word_embeddings": False,
}
CONFIGS = {"small": SMALL, "qwen2-vl-2b": QWEN2_VL_2B}
VISUAL_TOKENS = 256
WORDS = """
    the quick brown fox jumps over lazy dog cat sitting on a red sofa which animal bird horse tiger plant
    sunflower rose oak tree value equation answer people walking park river sunset force block velocity ball
    image picture scene shown select correct option
""".split()


def build(config_name: str, device: str, dtype: torch.dtype):
    """(model, processor): Qwen2-VL with the named sizes, random weights (seed 0), the tiny BPE tokenizer."""
    from transformers import AutoModelForImageTextToText, Qwen2VLConfig

    from radar_tasks.demo import tiny_models

    base_config, processor = tiny_models._BUILDERS["qwen2_vl"]()  # the tokenizer, processor and token ids
    sizes = CONFIGS[config_name]
    pixels = VISUAL_TOKENS * 28 * 28  # one 448x448 image = 32x32 patches = 16x16 merged tokens
    processor.image_processor.min_pixels = processor.image_processor.max_pixels = pixels
    processor.image_processor.size = {"shortest_edge": pixels, "longest_edge": pixels}
    ids = {
        k: getattr(base_config, k)
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    text = dict(sizes["text"], eos_token_id=base_config.text_config.eos_token_id, bos_token_id=None)
    config = Qwen2VLConfig(
        text_config=text, vision_config=sizes["vision"], tie_word_embeddings=sizes["tie_word_embeddings"], **ids
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    return model.eval(), processor


def make_questions(processor, n_questions: int, k: int, seed: int = 0):
    """n questions: one 448x448 noise image, a short question, k candidates of 1 to 8 tokens (spread evenly)."""
    from PIL import Image

    rng = np.random.default_rng(seed + k)
    tok = processor.tokenizer
    questions = []
    for q in range(n_questions):
        image = Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8), "RGB")
        context = f"<image>\nQuestion {q}: which animal is shown in the picture? Answer:"
        cands = []
        for j in range(k):
            target = 1 + (j * 7) // max(1, k - 1) if k > 1 else 4  # 1 .. 8 tokens
            words = []
            while True:
                cand = " " + " ".join(words) if words else ""
                n = len(tok(context + cand)["input_ids"]) - len(tok(context)["input_ids"])
                if n >= target:
                    break
                words.append(str(rng.choice(WORDS)))
            cands.append(cand)
        questions.append((context, [image], cands))
    return questions


# ------------------------------------------------------------------------------------------------------ methods
def method_a(model, processor, questions, device, dtype):
    return [
        likelihood.score_continuations(model, processor, c, im, conts, device=device, dtype=dtype)
        for c, im, conts in questions
    ]


@torch.inference_mode()
def method_b(model, processor, questions, device, dtype):
    """One left-padded batch of the K full sequences per question (prompt and images repeated)."""
    placeholder = likelihood.image_placeholder(model.config.model_type, processor)
    out = []
    for context, images, conts in questions:
        prompt = likelihood.build_prompt(context, len(images), placeholder)
        n_prompt = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"].shape[1]
        enc = processor(
            text=[prompt + c for c in conts],
            images=images * len(conts),
            return_tensors="pt",
            padding=True,
            padding_side="left",
        )
        lengths = enc["attention_mask"].sum(1) - n_prompt  # scored tokens per row (the tail of each row)
        keep = int(lengths.max()) + 1
        model.model.rope_deltas = None
        logits = model(**likelihood.to_device(enc, device, dtype), use_cache=False, logits_to_keep=keep).logits
        labels = enc["input_ids"][:, -keep + 1 :].clone()
        for r, n in enumerate(lengths.tolist()):
            labels[r, : keep - 1 - n] = -100
        scores = likelihood.token_scores(logits[:, :-1], labels.to(logits.device))
        out.append([likelihood.ContinuationScore(nll, g, n, ml, True) for nll, g, n, ml in scores])
    return out


_SCORERS: dict = {}


def method_c(model, processor, questions, device, dtype, batch_size=1):
    # one scorer per run, as radar_hf holds one: its one-off tokenisation self-check is not timed per question
    key = (id(model), batch_size)
    if key not in _SCORERS:
        _SCORERS[key] = SharedPrefixScorer(model, processor, device=device, dtype=dtype, batch_size=batch_size)
    return _SCORERS[key].score(questions)


METHODS = {"a": method_a, "b": method_b, "c": method_c, "c4": lambda *a: method_c(*a, batch_size=4)}
LABELS = {"a": "(a) per candidate", "b": "(b) K-batch", "c": "(c) shared", "c4": "(c, B=4) shared"}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_methods(model, processor, questions, device, dtype, rounds: int, c_reps: int = 3):
    """Median seconds per question of each method, and the medians of the paired ratios a/c and b/c.

    Each round runs a, b and c on each question one right after the other (in a rotating order), so that a burst of
    load from other processes hits a pair rather than one method.
    """
    times = {m: [] for m in METHODS}
    ratios = {"a": [], "b": []}
    results = {}
    for r in range(rounds):
        for qi, q in enumerate(questions):
            order = ["a", "b", "c"]
            order = order[(r + qi) % 3 :] + order[: (r + qi) % 3]
            this = {}
            for m in order:
                samples = []
                # (c) is K times shorter than (a) and (b): the median of 3 calls, so that one burst of load from
                # other processes does not weigh more on it than on the long calls (which average bursts out)
                for _ in range(c_reps if m == "c" else 1):
                    sync(device)
                    t0 = time.perf_counter()
                    res = METHODS[m](model, processor, [q], device, dtype)
                    sync(device)
                    samples.append(time.perf_counter() - t0)
                this[m] = statistics.median(samples)
                times[m].append(this[m])
                results.setdefault(m, []).extend(res if r == 0 else [])
            ratios["a"].append(this["a"] / this["c"])
            ratios["b"].append(this["b"] / this["c"])
        # batched across questions: per question = batch time / batch size
        sync(device)
        t0 = time.perf_counter()
        res = METHODS["c4"](model, processor, questions, device, dtype)
        sync(device)
        times["c4"].append((time.perf_counter() - t0) / len(questions))
        if r == 0:
            results["c4"] = res
    medians = {m: statistics.median(t) for m, t in times.items()}
    return medians, {m: statistics.median(v) for m, v in ratios.items()}, results


def max_diff(ref, other) -> float:
    worst = 0.0
    for qa, qb in zip(ref, other):
        for a, b in zip(qa, qb):
            assert a.n_tokens == b.n_tokens, (a, b)
            worst = max(worst, abs(a.nll - b.nll), abs(a.mean_logit - b.mean_logit))
    return worst


# ------------------------------------------------------------------------------------------------------- memory
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn, device) -> int:
    """Bytes above the state before `fn`: CUDA max allocated, or sampled RSS growth on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base, peak, stop = _rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    fn()
    stop.set()
    thread.join()
    return max(peak[0], _rss()) - base


def memory_child(args) -> None:
    """In a fresh process: build the model, one warm-up on another question, then the peak of one question."""
    dtype = likelihood.resolve_dtype(args.dtype, args.device)
    model, processor = build(args.config, args.device, dtype)
    warm = make_questions(processor, 1, args.k, seed=99)
    questions = make_questions(processor, 1, args.k)
    fn = METHODS[args.memory_child]
    fn(model, processor, warm, args.device, dtype)
    print(json.dumps({"peak": peak_memory(lambda: fn(model, processor, questions, args.device, dtype), args.device)}))


def memory_of(args, method: str, k: int) -> int:
    if torch.device(args.device).type == "cuda":
        return -1  # measured in-process (see main)
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        method,
        "--k",
        str(k),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--config",
        args.config,
        "--threads",
        str(torch.get_num_threads()),
    ]
    # glibc: allocations from 64 KiB up are mmapped and go back to the OS when freed, so the RSS follows the live
    # tensors (with its default, the heap keeps freed blocks and a later peak may not show at all)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
    }
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak"]


# --------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--ks", default="2,4,10", help="numbers of candidates")
    parser.add_argument("--questions", type=int, default=4, help="questions per K (distinct images)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds over the questions")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)

    dtype = likelihood.resolve_dtype(args.dtype, args.device)
    t0 = time.perf_counter()
    model, processor = build(args.config, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    device_name = (
        torch.cuda.get_device_name(args.device)
        if torch.device(args.device).type == "cuda"
        else (f"CPU, {torch.get_num_threads()} threads")
    )
    print(
        f"model: random-weight Qwen2-VL '{args.config}', {n_params / 1e6:.1f}M parameters, {dtype}; "
        f"device: {device_name}; built in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}"
    )
    warm = make_questions(processor, 1, 4, seed=99)
    for method in METHODS.values():  # also the scorers' one-off check of their first question (once per run)
        method(model, processor, warm, args.device, dtype)

    header = (
        f"{'K':>3} {'P':>4} {'C':>4} | {'(a) ms':>8} {'(b) ms':>8} {'(c) ms':>8} {'(c,B=4)':>8} | "
        f"{'a/c':>5} {'b/c':>5} {'0.8K':>5} {'FLOP lim':>8} | {'diff b':>7} {'diff c':>7} | "
        f"{'peak MiB a / b / c':>20}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for k in [int(x) for x in args.ks.split(",")]:
        questions = make_questions(processor, args.questions, k)
        times, paired, results = time_methods(model, processor, questions, args.device, dtype, args.rounds)
        prompt = likelihood.build_prompt(questions[0][0], 1, likelihood.image_placeholder("qwen2_vl", processor))
        p = processor(text=[prompt], images=questions[0][1], return_tensors="pt")["input_ids"].shape[1]
        c = statistics.mean(s.n_tokens for q in results["a"] for s in q)
        flop_limit = k * (p + c) / (p + k * c)
        if torch.device(args.device).type == "cuda":
            one = questions[:1]
            peaks = [
                peak_memory(lambda m=m, one=one: METHODS[m](model, processor, one, args.device, dtype), args.device)
                for m in ("a", "b", "c")
            ]
        else:
            peaks = [-1, -1, -1] if args.no_memory else [memory_of(args, m, k) for m in ("a", "b", "c")]
        row = {
            "K": k,
            "P": p,
            "C": round(c, 2),
            **{f"ms_{m}": 1000 * t for m, t in times.items()},
            "a_over_c": paired["a"],
            "b_over_c": paired["b"],
            "flop_limit": flop_limit,
            "diff_b": max_diff(results["a"], results["b"]),
            "diff_c": max_diff(results["a"], results["c"]),
            "diff_c4": max_diff(results["a"], results["c4"]),
            "peak_mib": [x / 2**20 if x >= 0 else None for x in peaks],
        }
        rows.append(row)
        mem = " / ".join("-" if x is None else f"{x:.0f}" for x in row["peak_mib"])
        print(
            f"{k:>3} {p:>4} {c:>4.1f} | {row['ms_a']:>8.1f} {row['ms_b']:>8.1f} {row['ms_c']:>8.1f} "
            f"{row['ms_c4']:>8.1f} | {row['a_over_c']:>5.2f} {row['b_over_c']:>5.2f} {0.8 * k:>5.1f} "
            f"{flop_limit:>8.2f} | {row['diff_b']:>7.1e} {row['diff_c']:>7.1e} | {mem:>20}",
            flush=True,
        )
    print(json.dumps({"config": args.config, "device": device_name, "dtype": str(dtype), "rows": rows}))


if __name__ == "__main__":
    main()
