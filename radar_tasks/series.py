"""`radar-tasks demo --series`: pretrain a tiny vision-language model on CPU and watch perception and reasoning develop.

`run_series(out_dir)`:

1. writes the miniature M3-Bench (`radar_tasks.fixture.make_fixture`) and the tiny Qwen2-VL of
   `radar_tasks.tiny_models`, re-initialised with weights scaled for its width (`init_model`: the tiny
   checkpoint's `initializer_range` 0.02 suits widths in the thousands; at width 64 it leaves the image path so
   weak that colour questions were still at chance after 300 steps, against learnt by step 250 with 0.1);
2. trains it with a plain AdamW loop on freshly drawn synthetic image-question-answer data (`make_example`),
   loss on the answer tokens only, and saves checkpoints (`save_pretrained` + processor) at `steps`
   (default 0, 250, 500, 750, 1000: about two minutes on two CPU cores);
3. evaluates every checkpoint on the fixture with the lmms-eval CLI and the `radar_hf` wrapper, with per-item
   logs (`evaluate`: the CLI's entry point run in this process, or `cli.run_lmms_eval` in a subprocess);
4. writes the analysis report (`radar_tasks.analysis.write_report`) with each checkpoint's step and tokens seen.

The synthetic data uses the fixture's vocabulary, question strings and drawing function (`fixture.draw_scene`),
so the benchmark items are in-distribution, but never its images: every training canvas has a size the fixture
never uses (`TRAIN_SIDES`; the fixture draws 64x64, 96x64 and 64x96), and positions, sizes and dot radii are
jittered, so a checkpoint can only score above chance by having learned the visual concept. The prompt format is
the one `radar_hf` scores: the "<image>" marker(s), a space or newline, the fixture's question, then " " + answer.

Nothing here needs a network or a GPU.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from radar_tasks import fixture as F

ARCH = "qwen2_vl"
# Every subset the synthetic data teaches something about. MMMU-Pro is left out: its image-option and
# multi-image items are beyond a two-minute model, and its 60 items would double the evaluation time.
DEFAULT_TASKS = ("radar_wiki_animal,radar_wiki_plant,radar_wiki_attraction,radar_wiki_celebrity,"
                 "radar_mmbench,radar_mathvista,radar_seephys,radar_spatial")
DEFAULT_STEPS = (0, 250, 500, 750, 1000)
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 2e-3
DEFAULT_INIT_RANGE = 0.15

IMAGE = "<image>"  # = radar_tasks.prompts.IMAGE_MARKER (not imported: that module pulls in jinja2)

# Canvas sides of training images: never the fixture's (64 and 96), but the same visual-token grid after the
# Qwen2-VL processor's resize to multiples of 28 px (60..68 -> 56 px, 88..94 -> 84 px).
TRAIN_SIDES = (60, 62, 66, 68)
TRAIN_LONG_SIDES = (88, 90, 92, 94)

# ---------------------------------------------------------------------------------------------------------------
# Synthetic data


@dataclass
class Example:
    """One training sequence: `prompt` (one IMAGE marker per image) + " " + `answer`."""

    kind: str
    prompt: str
    images: list
    answer: str


def _canvas(rng: random.Random, shape: str | None = None) -> tuple[int, int]:
    """(width, height) of a training image: 'square', 'wide' or 'tall' (None: square half of the time)."""
    shape = shape or rng.choice(("square", "square", "wide", "tall"))
    short, long_ = rng.choice(TRAIN_SIDES), rng.choice(TRAIN_LONG_SIDES)
    return {"square": (short, rng.choice(TRAIN_SIDES)), "wide": (long_, short), "tall": (short, long_)}[shape]


def _box(rng: random.Random, size, cx: float, cy: float, scale: float) -> tuple[int, int, int, int]:
    """A square box of side `scale` x the short side, centred near (cx, cy) (fractions of the canvas)."""
    w, h = size
    s = int(min(w, h) * scale)
    x = int(cx * w) + rng.randint(-3, 3)
    y = int(cy * h) + rng.randint(-3, 3)
    x0 = min(max(0, x - s // 2), w - s - 1)
    y0 = min(max(0, y - s // 2), h - s - 1)
    return (x0, y0, x0 + s, y0 + s)


# where the fixture puts a single shape ('left', ...) or the two shapes of a relation, as canvas fractions
_CENTRES = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8)}
_RELATION_SIDES = {"to the left": ("left", "right"), "to the right": ("right", "left"),
                   "above": ("top", "bottom"), "below": ("bottom", "top")}


def _anywhere(rng: random.Random, size) -> tuple[int, int, int, int]:
    return _box(rng, size, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.28, 0.45))


def _dots(rng: random.Random, n: int, size, colours: Sequence[str]) -> list:
    """n dots in distinct cells of a 3x3 grid (the fixture's counting style), jittered offsets and radius."""
    w, h = size
    r = max(3, min(w, h) // 12 + rng.randint(-1, 1))
    out = []
    for i, cell in enumerate(sorted(rng.sample(range(9), n))):
        cx = (cell % 3) * w // 3 + w // 6 + rng.randint(-3, 3)
        cy = (cell // 3) * h // 3 + h // 6 + rng.randint(-3, 3)
        out.append(("circle", colours[i % len(colours)], (cx - r, cy - r, cx + r, cy + r)))
    return out


def _sep(rng: random.Random) -> str:
    # radar_hf prompts put a newline (MMBench, MathVista) or a space (the others) between image and question
    return rng.choice(("\n", " "))


def _mode(rng: random.Random, colour_matters: bool) -> str:
    # the fixture has grayscale images wherever colour is not asked about
    return "RGB" if colour_matters or rng.random() < 0.7 else "L"


def _single(rng: random.Random, kind: str):
    colour, shape = rng.choice(list(F.COLORS)), rng.choice(F.SHAPES)
    size = _canvas(rng)
    position = rng.choice(F.POSITIONS) if kind == "position" else None
    box = _box(rng, size, *_CENTRES[position], rng.uniform(0.28, 0.4)) if position else _anywhere(rng, size)
    img = F.draw_scene(size, [(shape, colour, box)], _mode(rng, kind == "color"))
    question, answer = {"color": (F.Q_COLOR, colour), "shape": (F.Q_SHAPE, shape),
                        "position": (F.Q_POSITION, position)}[kind]
    return IMAGE + _sep(rng) + question, [img], answer


def _wiki(rng: random.Random, _kind: str):
    kind = rng.choice(F.WIKI_KINDS)
    name = rng.choice(sorted(F.WIKI_ENTITIES[kind]))
    colour, shape = F.WIKI_ENTITIES[kind][name]
    size = _canvas(rng)
    img = F.draw_scene(size, [(shape, colour, _anywhere(rng, size))])
    if rng.random() < 0.75:
        return IMAGE + " " + F.Q_WIKI_NAME.format(kind=kind), [img], name
    return IMAGE + " " + F.Q_WIKI_COLOR.format(kind=kind), [img], colour


def _count(rng: random.Random, _kind: str):
    n = rng.randint(1, 9)
    size = _canvas(rng)
    img = F.draw_scene(size, _dots(rng, n, size, [rng.choice(list(F.COLORS))]), _mode(rng, False))
    question = F.Q_COUNT if rng.random() < 0.7 else f"{F.Q_COUNT[:-1]} in the diagram?"
    return IMAGE + _sep(rng) + question, [img], str(n)


def _sum(rng: random.Random, _kind: str):
    n1, n2 = rng.randint(1, 4), rng.randint(1, 4)
    c1, c2 = rng.sample([c for c in F.COLORS if c != "black"], 2)
    size = _canvas(rng)
    img = F.draw_scene(size, _dots(rng, n1 + n2, size, [c1] * n1 + [c2] * n2))
    return IMAGE + _sep(rng) + f"How many {c1} dots and {c2} dots are there in total?", [img], str(n1 + n2)


def _relation(rng: random.Random, _kind: str):
    c1, c2 = rng.sample(list(F.COLORS), 2)
    s1, s2 = rng.choice(F.SHAPES), rng.choice(F.SHAPES)
    relation = rng.choice(F.RELATIONS)
    first, second = _RELATION_SIDES[relation]
    size = _canvas(rng, rng.choice(("square", "wide" if first in ("left", "right") else "tall")))
    scale = rng.uniform(0.28, 0.38)
    shapes = [(s1, c1, _box(rng, size, *_CENTRES[first], scale)), (s2, c2, _box(rng, size, *_CENTRES[second], scale))]
    img = F.draw_scene(size, shapes)
    return IMAGE + " " + F.Q_RELATION.format(c1=c1, s1=s1, c2=c2, s2=s2), [img], relation


def _multi(rng: random.Random, _kind: str):
    k = rng.randint(2, 3)
    colour = rng.choice(list(F.COLORS))
    images, total = [], 0
    for _ in range(k):
        n = rng.randint(1, 5)
        total += n
        size = _canvas(rng, rng.choice(("square", "tall")))
        images.append(F.draw_scene(size, _dots(rng, n, size, [colour]), _mode(rng, False)))
    question = f"Each of the {k} diagrams shows some dots. How many dots are there in all diagrams?"
    return IMAGE * k + " " + question, images, str(total)


@dataclass(frozen=True)
class Kind:
    make: object  # (rng, kind) -> (prompt, images, answer)
    weight: float  # share of the training mixture
    ability: str  # the ability of the fixture items it teaches
    teaches: str  # which fixture items


# The mixture gives both abilities the same weight (6 + 6): any gap between the curves comes from difficulty.
EXAMPLE_KINDS: dict[str, Kind] = {
    "color": Kind(_single, 1.5, "perception", "MMBench colour questions, Wiki colour questions"),
    "shape": Kind(_single, 1.5, "perception", "MMBench shape questions"),
    "position": Kind(_single, 1.0, "perception", "MMBench position questions"),
    "wiki": Kind(_wiki, 2.0, "perception", "Wiki animal / plant / attraction / celebrity identification"),
    "count": Kind(_count, 2.5, "reasoning", "MMBench counting questions, MathVista and SeePhys single counts"),
    "sum": Kind(_sum, 1.5, "reasoning", "MathVista two-colour sums"),
    "relation": Kind(_relation, 1.5, "reasoning", "spatial reasoning (relation of two shapes)"),
    "multi": Kind(_multi, 0.5, "reasoning", "SeePhys multi-image sums"),
}


def make_example(rng: random.Random, kind: str | None = None, weights: Mapping[str, float] | None = None) -> Example:
    """A freshly drawn example of `kind`, or of a kind drawn from `weights` (default: EXAMPLE_KINDS' weights)."""
    if kind is None:
        weights = weights or {k: v.weight for k, v in EXAMPLE_KINDS.items()}
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    prompt, images, answer = EXAMPLE_KINDS[kind].make(rng, kind)
    return Example(kind, prompt, images, answer)


# ---------------------------------------------------------------------------------------------------------------
# Model, batches, loss, training


def init_model(out_dir: str | os.PathLike, seed: int = 0, initializer_range: float = DEFAULT_INIT_RANGE) -> Path:
    """The tiny Qwen2-VL of `tiny_models` (its architecture, processor and tokenizer), re-initialised with
    `initializer_range` (std of every weight matrix; transformers' own `_init_weights`) and saved to `out_dir`."""
    import tempfile

    from transformers import AutoConfig, AutoProcessor

    from radar_tasks.tiny_models import build_tiny_model, save_random_checkpoint

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

    texts = [e.prompt.replace(IMAGE, placeholder) + " " + e.answer for e in examples]
    images = [im for e in examples for im in e.images]
    inputs = dict(processor(text=texts, images=images or None, return_tensors="pt", padding=True,
                            padding_side="right"))
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


def train(model_dir: str | os.PathLike, out_dir: str | os.PathLike, steps: Sequence[int] = DEFAULT_STEPS, *,
          batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR, seed: int = 0,
          weights: Mapping[str, float] | None = None, threads: int | None = 1, log_every: int = 50,
          print_fn=print) -> list[dict]:
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
                checkpoints.append({"step": step, "tokens": tokens, "examples": step * batch_size, "loss": loss,
                                    "seconds": round(time.time() - t0, 1), "path": str(path)})
                since_save.clear()

            if steps[0] == 0:
                save(0)
            model.train()
            for step in range(1, total + 1):
                inputs = encode_batch(processor, [make_example(rng, weights=weights) for _ in range(batch_size)],
                                      placeholder)
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
                    print_fn(f"step {step:5d}/{total}  loss {sum(since_log) / len(since_log):.3f}  "
                             f"tokens {tokens:,}  {time.time() - t0:.0f}s")
                    since_log.clear()
                if step in steps:
                    model.eval()
                    save(step)
                    model.train()
    finally:
        torch.set_num_threads(old_threads)
    (out / "train_log.json").write_text(json.dumps(
        {"batch_size": batch_size, "lr": lr, "seed": seed, "weights": dict(weights or {}) or None,
         "checkpoints": checkpoints}, indent=2) + "\n")
    return checkpoints


# ---------------------------------------------------------------------------------------------------------------
# Evaluation and report


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _model_args(checkpoint) -> str:
    return f"pretrained={Path(checkpoint).absolute()},device=cpu,dtype=float32"


def evaluate(checkpoint: str | os.PathLike, tasks: str, output_path: str | os.PathLike,
             data_dir: str | os.PathLike, *, in_process: bool = True) -> Path:
    """Evaluate `checkpoint` with `radar_hf` (CPU, float32, per-item logs) on `tasks` through the lmms-eval CLI;
    returns the results JSON under `output_path`.

    `in_process=True` runs the CLI's own entry point (`lmms_eval.__main__.cli_evaluate`, same arguments, same
    output folder) in this process, its output going to `output_path/lmms_eval.log`: it saves the ~25 s of
    importing lmms-eval per checkpoint. `False`: a `python -m lmms_eval` subprocess (`cli.run_lmms_eval`).
    Either way one torch thread: this model's matrices are too small for threads to pay off.
    """
    from radar_tasks.cli import lmms_eval_args, lmms_eval_env, run_lmms_eval
    from radar_tasks.summary import find_results

    output_path, data_dir = Path(output_path).absolute(), Path(data_dir).absolute()
    if not in_process:
        with _env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"):
            return run_lmms_eval(_model_args(checkpoint), tasks, output_path, data_dir)

    import sys

    import torch

    output_path.mkdir(parents=True, exist_ok=True)
    log = output_path / "lmms_eval.log"
    argv = ["lmms-eval", *lmms_eval_args(_model_args(checkpoint), tasks, output_path)]
    threads, old_argv = torch.get_num_threads(), sys.argv
    with _env(**lmms_eval_env(data_dir)), \
            open(log, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        print("$ " + " ".join(argv), flush=True)
        from lmms_eval.__main__ import cli_evaluate

        sys.argv = argv  # cli_evaluate parses sys.argv, as the CLI does
        torch.set_num_threads(1)
        try:
            cli_evaluate()
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"lmms-eval exited with {exc.code}; see {log}") from None
        finally:
            sys.argv = old_argv
            torch.set_num_threads(threads)
            _restore_loguru()
    try:
        return find_results(output_path)
    except FileNotFoundError:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise RuntimeError(f"lmms-eval wrote no results for {checkpoint} (log: {log}):\n{tail}") from None


def _restore_loguru() -> None:
    """cli_evaluate points loguru at the (redirected) stdout; point it back at stderr."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _existing_results(folder: Path) -> Path | None:
    from radar_tasks.summary import find_results

    try:
        return find_results(folder) if folder.exists() else None
    except FileNotFoundError:
        return None


def _load_checkpoints(ckpt_dir: Path, steps: Sequence[int], **settings) -> list[dict] | None:
    """The checkpoints of an earlier `train` into `ckpt_dir` with the same `settings` (batch_size, lr, seed), if it
    saved every one of `steps`; else None."""
    log = ckpt_dir / "train_log.json"
    if not log.exists():
        return None
    data = json.loads(log.read_text())
    if any(data.get(k) != v for k, v in settings.items()) or data.get("weights") is not None:
        return None
    saved = {c["step"]: dict(c, path=str(ckpt_dir / f"step_{c['step']}")) for c in data["checkpoints"]}
    if not all(s in saved and (ckpt_dir / f"step_{s}" / "config.json").exists() for s in steps):
        return None
    return [saved[s] for s in steps]


def _format_tokens(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def run_series(out_dir: str | os.PathLike, steps: Sequence[int] = DEFAULT_STEPS,
               tasks: str | Sequence[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR, seed: int = 0,
               print_fn=print) -> Path:
    """Pretrain, checkpoint, evaluate and report (module docstring); returns the report folder `out_dir/report`.

    Layout of `out_dir`: `M3-Bench/` (fixture), `checkpoints/step_<n>/` (+ `train_log.json`),
    `results/step_<n>/` (lmms-eval output), `report/` (report.md, CSVs, figures). A folder that already holds
    the fixture, the checkpoints of these `steps` or a checkpoint's results reuses them (delete to redo).
    """
    from radar_tasks.analysis import write_report

    tasks = DEFAULT_TASKS if tasks is None else tasks if isinstance(tasks, str) else ",".join(tasks)
    steps = sorted({int(s) for s in steps})
    work = Path(out_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    data = work / "M3-Bench"
    if not data.exists():
        F.make_fixture(data)  # the benchmark: seed 0 whatever the training seed
    ckpt_dir, results_dir = work / "checkpoints", work / "results"
    checkpoints = _load_checkpoints(ckpt_dir, steps, batch_size=batch_size, lr=lr, seed=seed)
    t_train = 0.0
    if checkpoints is None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(results_dir, ignore_errors=True)  # results of other weights
        init = init_model(work / "init", seed=seed)
        print_fn(f"training a tiny {ARCH} on synthetic data for {steps[-1]} steps (batch {batch_size}), "
                 f"checkpoints at steps {', '.join(map(str, steps))}")
        t0 = time.time()
        checkpoints = train(init, ckpt_dir, steps, batch_size=batch_size, lr=lr, seed=seed, print_fn=print_fn)
        t_train = time.time() - t0
    else:
        print_fn(f"reusing the checkpoints in {ckpt_dir}")

    t0 = time.time()
    runs, labels = [], []
    print_fn(f"evaluating {len(checkpoints)} checkpoints with lmms-eval (radar_hf) on {tasks}")
    for c in checkpoints:
        out = results_dir / f"step_{c['step']}"
        results = _existing_results(out)
        if results is None:
            t1 = time.time()
            results = evaluate(c["path"], tasks, out, data)
            print_fn(f"  step {c['step']}: {time.time() - t1:.0f}s, log {out / 'lmms_eval.log'}")
        runs.append(results)
        labels.append({"label": f"step {c['step']}", "model": f"tiny-{ARCH}", "series": f"tiny-{ARCH} demo",
                       "step": c["step"], "tokens": c["tokens"]})
    t_eval = time.time() - t0

    t0 = time.time()
    report = write_report(runs, work / "report", labels=labels)
    t_report = time.time() - t0
    report_dir = Path(report).parent
    timing = {"train_s": round(t_train, 1), "eval_s": round(t_eval, 1), "report_s": round(t_report, 1),
              "total_s": round(time.time() - t_start, 1)}
    (report_dir / "series.json").write_text(json.dumps(
        {"tasks": tasks, "steps": steps, "checkpoints": checkpoints, "timing": timing,
         "mixture": {k: {"weight": v.weight, "ability": v.ability, "teaches": v.teaches}
                     for k, v in EXAMPLE_KINDS.items()}}, indent=2) + "\n")
    print_fn("")
    print_fn(format_development(report_dir, checkpoints))
    print_fn(f"\ntrain {timing['train_s']:.0f}s, evaluation {timing['eval_s']:.0f}s, report {timing['report_s']:.0f}s"
             f"\nreport: {report}")
    return report_dir


def format_development(report_dir: str | os.PathLike, checkpoints: Sequence[Mapping]) -> str:
    """Per checkpoint: tokens seen, SDS of perception and reasoning with their chance levels (asymmetry.csv)."""
    path = Path(report_dir) / "asymmetry.csv"
    if not path.exists():
        return ""
    rows = {r["run"]: r for r in csv.DictReader(path.open(encoding="utf-8")) if r.get("metric", "sds") == "sds"}

    def cell(row, key):
        try:
            return f"{float(row[key]):.3f}"
        except (KeyError, TypeError, ValueError):
            return "-"

    header = (f"{'checkpoint':12s} {'tokens':>7s}  {'SDS perception':>14s} {'(chance)':>8s}  "
              f"{'SDS reasoning':>13s} {'(chance)':>8s}")
    lines = [header]
    for c in checkpoints:
        row = rows.get(f"step {c['step']}", {})
        lines.append(f"{'step ' + str(c['step']):12s} {_format_tokens(c['tokens']):>7s}  "
                     f"{cell(row, 'perception'):>14s} {cell(row, 'chance_perception'):>8s}  "
                     f"{cell(row, 'reasoning'):>13s} {cell(row, 'chance_reasoning'):>8s}")
    return "\n".join(lines)
