"""Worker of tests/test_inloop.py: every rank of `torchrun --nproc_per_node N` scores a tiny checkpoint with
`radar_tasks.evaluate` and writes what it got.

    python -m torch.distributed.run --nproc_per_node 2 evaluate_ranks.py CHECKPOINT OUT_DIR TASKS {ddp,fsdp}

ddp: the model wrapped in DistributedDataParallel (evaluate takes the wrapper off); fsdp: FSDP2 `fully_shard` on
every decoder layer, every vision block and the root (every forward is a collective). Each rank writes
OUT_DIR/rank<r>.json: the scores, its model forwards and the forwards it repeated to match the other ranks.
"""

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForImageTextToText, AutoProcessor

import radar_tasks
from radar_tasks import inloop


def main(checkpoint: str, out_dir: str, tasks: str, mode: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(checkpoint)
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    elif mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in [*model.model.language_model.layers, *model.model.visual.blocks]:
            fully_shard(layer)
        fully_shard(model)
    counts = {}
    original = inloop.InLoopRadarHF.loglikelihood

    def counted(self, requests):
        out = original(self, requests)
        counts.update(forwards=self.forwards, padded=self.forwards_padded, requests=len(requests))
        return out

    inloop.InLoopRadarHF.loglikelihood = counted
    scores = radar_tasks.evaluate(model, processor, tasks, log_samples=True)
    training = (model.module if mode == "ddp" else model).training
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"scores": scores, **counts, "training": training}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
