"""Pretraining the tiny Qwen2-VL of `demo --series` on CPU: initialisation, batches, the answer loss, the loop.

`init_model` re-initialises the tiny Qwen2-VL of `tiny_models` with weights scaled for its width (the tiny
checkpoint's `initializer_range` 0.02 suits widths in the thousands; at width 64 it leaves the image path so weak
that colour questions were still at chance after 300 steps, against learnt by step 250 with 0.1). `train` runs a
plain AdamW loop on freshly drawn `synthetic` examples, loss on the answer tokens only, and saves checkpoints
(`save_pretrained` + processor) at the given steps.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from radar_tasks import prompts
from radar_tasks.demo.synthetic import Example, make_example

ARCH = "qwen2_vl"
DEFAULT_STEPS = (0, 250, 500, 750, 1000)
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 2e-3
DEFAULT_INIT_RANGE = 0.15


def init_model(out_dir: str | os.PathLike, seed: int = 0, initializer_range: float = DEFAULT_INIT_RANGE) -> Path:
    """The tiny Qwen2-VL of `tiny_models` (its architecture, processor and tokenizer), re-initialised with
    `initializer_range` (std of every weight matrix; transformers' own `_init_weights`) and saved to `out_dir`."""
    import tempfile

    from transformers import AutoConfig, AutoProcessor

    from radar_tasks.demo.tiny_models import build_tiny_model, save_random_checkpoint

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="radar-tiny-") as tmp:
        build_tiny_model(tmp, ARCH, seed=seed)
        config = AutoConfig.from_pretrained(tmp)
        processor = AutoProcessor.from_pretrained(tmp)
    for c in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        if c is not None and hasattr(c, "initializer_range"):
            c.initializer_range = initializer_range
    return save_random_checkpoint(config, processor, out, seed)


def _placeholder(model, processor) -> str:
    from radar_tasks.models.likelihood import image_placeholder

    return image_placeholder(getattr(model.config, "model_type", None), processor)


def encode_batch(processor, examples: Sequence[Example], placeholder: str) -> dict:
    """Processor inputs of `prompt + " " + answer` per example (right-padded) and `labels` on the answer tokens.

    The answer tokens are the tokens of `" " + answer` alone, as `radar_hf` scores a continuation; they must be
    the tail of the encoded sequence (the byte-level BPE splits before a space), else ValueError.
    """
    import torch

    texts = [e.prompt.replace(prompts.IMAGE_MARKER, placeholder) + " " + e.answer for e in examples]
    images = [im for e in examples for im in e.images]
    inputs = dict(processor(text=texts, images=images or None, return_tensors="pt", padding=True, padding_side="right"))
    labels = torch.full_like(inputs["input_ids"], -100)
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    for i, e in enumerate(examples):
        answer_ids = processor.tokenizer(" " + e.answer, add_special_tokens=False)["input_ids"]
        end, start = lengths[i], lengths[i] - len(answer_ids)
        if inputs["input_ids"][i, start:end].tolist() != answer_ids:
            raise ValueError(f"the tokens of {' ' + e.answer!r} are not the tail of the encoded sequence")
        labels[i, start:end] = torch.tensor(answer_ids)
    inputs["labels"] = labels
    return inputs


def answer_loss(model, inputs: Mapping):
    """Mean next-token cross-entropy over the answer tokens (labels != -100)."""
    import torch.nn.functional as nnf

    labels = inputs["labels"]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
    return nnf.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def train(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    steps: Sequence[int] = DEFAULT_STEPS,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    threads: int | None = 1,
    log_every: int = 50,
    print_fn=print,
) -> list[dict]:
    """Train the checkpoint in `model_dir` for max(steps) AdamW steps (linear warmup, cosine decay to 10%) and
    save `out_dir/step_<n>` (model + processor) at every n in `steps` (0: the starting weights).

    Returns one dict per checkpoint: step, tokens (non-padding tokens seen, image tokens included), examples,
    loss (mean training loss since the previous checkpoint), seconds, path; also written to
    `out_dir/train_log.json`. `weights` overrides the mixture (kind -> weight); `threads` sets torch's intra-op
    threads while training (1 is the fastest for a model this small, above all on a shared CPU).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 0:
        raise ValueError(f"steps must be non-negative integers, got {steps}")
    total, out = steps[-1], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    checkpoints: list[dict] = []
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
            processor = AutoProcessor.from_pretrained(model_dir)
            placeholder = _placeholder(model, processor)
            rng = random.Random(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
            warmup = max(1, min(20, total // 10))

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            tokens, t0, since_save, since_log = 0, time.time(), [], []

            def save(step: int) -> None:
                path = out / f"step_{step}"
                model.save_pretrained(path)
                processor.save_pretrained(path)
                loss = sum(since_save) / len(since_save) if since_save else None
                checkpoints.append(
                    {
                        "step": step,
                        "tokens": tokens,
                        "examples": step * batch_size,
                        "loss": loss,
                        "seconds": round(time.time() - t0, 1),
                        "path": str(path),
                    }
                )
                since_save.clear()

            if steps[0] == 0:
                save(0)
            model.train()
            for step in range(1, total + 1):
                inputs = encode_batch(
                    processor, [make_example(rng, weights=weights) for _ in range(batch_size)], placeholder
                )
                tokens += int(inputs["attention_mask"].sum())
                loss = answer_loss(model, inputs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                since_save.append(loss.item())
                since_log.append(loss.item())
                if log_every and (step % log_every == 0 or step == total):
                    print_fn(
                        f"step {step:5d}/{total}  loss {sum(since_log) / len(since_log):.3f}  "
                        f"tokens {tokens:,}  {time.time() - t0:.0f}s"
                    )
                    since_log.clear()
                if step in steps:
                    model.eval()
                    save(step)
                    model.train()
    finally:
        torch.set_num_threads(old_threads)
    (out / "train_log.json").write_text(
        json.dumps(
            {
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "weights": dict(weights or {}) or None,
                "checkpoints": checkpoints,
            },
            indent=2,
        )
        + "\n"
    )
    return checkpoints
