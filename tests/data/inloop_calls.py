"""Worker of tests/test_inloop.py: `radar_tasks.evaluate` called again and again in one fresh process, as a
training loop calls it, with everything it writes captured.

    python inloop_calls.py CHECKPOINT DATA_DIR TASKS OUT_JSON

The model is given 120 positions, so that a long SeePhys question is not scored (a problem the calls must report
once). The job logs INFO with loguru, as a training script may. Calls 1-3 are quiet (the default), call 4 is
verbose. OUT_JSON: per call, the scores, the cost and what file descriptors 1 and 2 received during the call.
"""

import contextlib
import json
import os
import sys
import tempfile

import torch
from loguru import logger
from transformers import AutoModelForImageTextToText, AutoProcessor

import radar_tasks

POSITIONS = 120


@contextlib.contextmanager
def captured(into: list):
    """What file descriptors 1 and 2 receive inside (loguru, tqdm, warnings, prints, forked workers)."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
            sink.seek(0)
            into.append(sink.read().decode(errors="replace"))


def main(checkpoint: str, data_dir: str, tasks: str, out: str) -> None:
    torch.set_num_threads(1)
    import lmms_eval.evaluator  # noqa: F401  (its import replaces loguru's sinks: the job's sink comes after)

    logger.add(sys.stderr, level="INFO", format="{level} {message}")
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(checkpoint)
    model.config.get_text_config().max_position_embeddings = POSITIONS
    calls = []
    for verbose in (False, False, False, True):
        written: list[str] = []
        with captured(written):
            scores = radar_tasks.evaluate(model, processor, tasks, data_dir=data_dir, verbose=verbose)
        cost = scores.pop("cost")
        calls.append({"scores": scores, "cost": cost, "written": written[0]})
    with open(out, "w") as f:
        json.dump(calls, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
