"""Worker of tests/test_inloop.py: every rank of `torchrun --nproc_per_node N` scores a tiny checkpoint with
`radar_tasks.evaluate` and writes what it got.

    python -m torch.distributed.run --nproc_per_node 2 evaluate_ranks.py CHECKPOINT OUT_DIR TASKS MODE

MODE: `ddp` (the model wrapped in DistributedDataParallel, which evaluate takes off) or `fsdp` (FSDP2 `fully_shard`
on every decoder layer, every vision block and the root: every forward is a collective), scored sharded; with
`fsdp`, a second call then scores radar_mathvista with `gather_parameters=True`. Each rank writes
OUT_DIR/rank<r>.json: the scores, the structure of every forward its model ran in order (True: with the vision
tower), its real and dummy forwards, and the peak of its parameter memory while scoring (bytes of its shards plus
the parameters held whole at that moment, sampled at every module's forward); the loss of a training step run
after the first call (`loss_after`); the second call's under `gathered`.
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
from radar_tasks.models.lockstep import runs_vision


def parameter_bytes(model, shards: int) -> int:
    """This rank's shards plus every parameter held whole now (FSDP2 swaps a unit's sharded parameters for whole
    ones while it runs; outside FSDP every parameter is whole)."""
    from torch.distributed.tensor import DTensor

    return shards + sum(p.numel() * p.element_size() for p in model.parameters() if not isinstance(p, DTensor))


def train_step(model, processor) -> float:
    """A training step after an evaluation (forward and backward: collectives under DDP and FSDP, on buffers the
    evaluation's forwards used); its loss."""
    model.train()
    ids = processor.tokenizer(["a red circle above a blue square"], return_tensors="pt")["input_ids"]
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    model.zero_grad()
    model.eval()
    return float(loss)


def main(checkpoint: str, out_dir: str, tasks: str, mode: str) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank = dist.get_rank()
    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(checkpoint)
    module = model
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
    elif mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        for layer in [*model.model.language_model.layers, *model.model.visual.blocks]:
            fully_shard(layer)
        fully_shard(model)
        shards = sum(p._local_tensor.numel() * p.element_size() for p in model.parameters() if isinstance(p, DTensor))
    record = {"structures": [], "peak_parameter_bytes": 0, "full_parameter_bytes": 0}
    if mode == "fsdp":
        record["full_parameter_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())

        def sample(*_):
            record["peak_parameter_bytes"] = max(record["peak_parameter_bytes"], parameter_bytes(model, shards))

        for m in model.modules():
            m.register_forward_pre_hook(sample)
    module.register_forward_pre_hook(
        lambda _m, _args, kwargs: record["structures"].append(runs_vision(kwargs)), with_kwargs=True
    )
    original = inloop.InLoopRadarHF.loglikelihood

    def counted(self, requests):
        out = original(self, requests)
        record.update(forwards=self.lockstep.forwards, dummies=self.lockstep.dummies, requests=len(requests))
        return out

    inloop.InLoopRadarHF.loglikelihood = counted
    scores = radar_tasks.evaluate(model, processor, tasks, log_samples=True)
    out = {"scores": scores, **record, "structures": list(record["structures"])}  # the evaluation's forwards
    out["training"] = (model.module if mode == "ddp" else model).training
    out["loss_after"] = train_step(model, processor)
    if mode == "fsdp":
        record.update(structures=[], peak_parameter_bytes=0)
        scores = radar_tasks.evaluate(model, processor, "radar_mathvista", gather_parameters=True)
        out["gathered"] = {"scores": scores, **record}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
