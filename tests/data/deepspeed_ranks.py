"""Worker of tests/test_inloop.py: a transformers Trainer under DeepSpeed ZeRO-3 (every parameter partitioned over
the ranks) trains a tiny checkpoint for three steps with `RadarCallback` (evaluating at step 2, training step 3
after it, evaluating again at the end), on every rank of
`torchrun --nproc_per_node N` (CPU: DeepSpeed's CPU accelerator, gloo).

    python -m torch.distributed.run --nproc_per_node 2 deepspeed_ranks.py CHECKPOINT OUT_DIR TASKS

The learning rate is 0, so the weights stay those of CHECKPOINT and the callback's scores must be those of one
process scoring it. Each rank writes OUT_DIR/rank<r>.json: the callback's history, the parameter elements it holds
(its partitions) and the total, and whether the model is back in train mode.
"""

import json
import random
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

from radar_tasks import RadarCallback
from radar_tasks.demo import synthetic, training

ZERO3 = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "zero_optimization": {"stage": 3},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": 0.0, "torch_adam": True}},
}


def main(checkpoint: str, out_dir: str, tasks: str) -> None:
    torch.set_num_threads(1)
    # the arguments first: with ZeRO-3 in them, from_pretrained partitions the weights as it loads them
    args = TrainingArguments(
        output_dir=str(Path(out_dir) / "train"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=0.0,
        report_to=[],
        save_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        deepspeed=ZERO3,
        ddp_backend="gloo",
        disable_tqdm=True,
    )
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(checkpoint)
    rng = random.Random(0)
    examples = [synthetic.make_example(rng, "color") for _ in range(8)]
    placeholder = training._placeholder(model, processor)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=lambda batch: training.encode_batch(processor, batch, placeholder),
    )
    callback = RadarCallback(processor, tasks=tasks, eval_steps=2, trainer=trainer)
    trainer.add_callback(callback)
    trainer.train()
    held = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters())
    total = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    out = {"history": callback.history, "held": held, "total": total, "training": model.training}
    Path(out_dir, f"rank{dist.get_rank()}.json").write_text(json.dumps(out))
    dist.barrier()


if __name__ == "__main__":
    main(*sys.argv[1:])
