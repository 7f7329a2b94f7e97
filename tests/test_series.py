"""radar_tasks.demo (synthetic, training, series): the synthetic pretraining data, the training loop and the
`demo --series` pipeline.

The fast tests check that the data is new (never a fixture image) but in the fixture's vocabulary, that the loss
sits on the answer tokens only, and that a short training run makes the fixture's colour items rise well above
chance when scored exactly as `radar_hf` scores them. The slow test runs `run_series` end to end on a few steps.
"""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from PIL import Image

from radar_tasks.demo import fixture, series, synthetic, training
from radar_tasks.prompts import IMAGE_MARKER

FIXTURE_SIZES = {fixture.SIZE, fixture.WIDE, fixture.TALL}


def _examples(kind: str, n: int = 40, seed: int = 0) -> list[synthetic.Example]:
    rng = random.Random(seed)
    return [synthetic.make_example(rng, kind) for _ in range(n)]


# ------------------------------------------------------------------------------------------------------- the data


def test_fixture_draws_only_its_three_canvas_sizes():
    """The guarantee that training images are new rests on this: the fixture never uses a training canvas."""
    sizes = set()
    for seed in (0, 1):
        for rel, data in fixture.build_files(seed).items():
            if rel.endswith((".jpg", ".png")):
                with Image.open(io.BytesIO(data)) as im:
                    sizes.add(im.size)
    assert sizes == FIXTURE_SIZES
    train_sides = set(synthetic.TRAIN_SIDES) | set(synthetic.TRAIN_LONG_SIDES)
    assert not train_sides & {side for size in FIXTURE_SIZES for side in size}


@pytest.mark.parametrize("kind", list(synthetic.EXAMPLE_KINDS))
def test_examples_are_new_scenes_in_the_fixture_vocabulary(kind):
    vocab = {
        "color": set(fixture.COLORS),
        "shape": set(fixture.SHAPES),
        "position": set(fixture.POSITIONS),
        "wiki": {n for names in fixture.WIKI_ENTITIES.values() for n in names} | set(fixture.COLORS),
        "count": set(fixture.COUNTS),
        "sum": {str(n) for n in range(2, 9)},
        "relation": set(fixture.RELATIONS),
        "multi": {str(n) for n in range(2, 16)},
    }[kind]
    examples = _examples(kind)
    assert {e.kind for e in examples} == {kind}
    for e in examples:
        assert e.answer in vocab
        assert e.prompt.count(IMAGE_MARKER) == len(e.images) >= 1
        assert e.prompt.startswith(IMAGE_MARKER * len(e.images))
        question = e.prompt[len(IMAGE_MARKER) * len(e.images) :]
        assert question[0] in " \n" and question.strip().endswith("?")
        for im in e.images:
            assert im.size not in FIXTURE_SIZES
            assert im.mode in ("RGB", "L")
    assert len({e.answer for e in examples}) > 1  # not a constant answer


def test_questions_are_the_fixture_questions():
    questions = {
        e.prompt.split(IMAGE_MARKER)[-1].strip()
        for kind in ("color", "shape", "position", "count")
        for e in _examples(kind, 20)
    }
    assert {fixture.Q_COLOR, fixture.Q_SHAPE, fixture.Q_POSITION, fixture.Q_COUNT} <= questions
    wiki = {e.prompt.split(IMAGE_MARKER)[-1].strip() for e in _examples("wiki", 60)}
    assert wiki <= {q.format(kind=k) for q in (fixture.Q_WIKI_NAME, fixture.Q_WIKI_COLOR) for k in fixture.WIKI_KINDS}
    for e in _examples("relation", 10):
        assert e.prompt.startswith(IMAGE_MARKER + " Where is the ") and e.prompt.endswith("?")


def test_wiki_examples_draw_each_entity_in_its_signature():
    import numpy as np

    for e in _examples("wiki", 30, seed=3):
        if e.answer in fixture.COLORS:
            continue
        kind = next(k for k, names in fixture.WIKI_ENTITIES.items() if e.answer in names)
        colour, _ = fixture.WIKI_ENTITIES[kind][e.answer]
        pixels = np.asarray(e.images[0].convert("RGB")).reshape(-1, 3)
        non_white = {tuple(p) for p in pixels if tuple(p) != fixture.BACKGROUND}
        assert non_white == {fixture.COLORS[colour]}


def test_mixture_gives_both_abilities_the_same_weight():
    by_ability = {}
    for kind in synthetic.EXAMPLE_KINDS.values():
        by_ability[kind.ability] = by_ability.get(kind.ability, 0) + kind.weight
    assert set(by_ability) == {"perception", "reasoning"}
    assert by_ability["perception"] == pytest.approx(by_ability["reasoning"])


# -------------------------------------------------------------------------------------------- batches and training


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory):
    return training.init_model(tmp_path_factory.mktemp("series") / "init", seed=0)


def test_init_model_rescales_weights(init_checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(init_checkpoint)
    q = model.model.language_model.layers[0].self_attn.q_proj.weight
    assert float(q.detach().std()) == pytest.approx(training.DEFAULT_INIT_RANGE, rel=0.1)
    assert model.config.model_type == "qwen2_vl"
    assert AutoProcessor.from_pretrained(init_checkpoint).tokenizer.convert_tokens_to_ids("<|image_pad|>") > 0


def test_encode_batch_labels_only_the_answer_tokens(init_checkpoint):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(init_checkpoint)
    rng = random.Random(0)
    examples = [synthetic.make_example(rng, kind) for kind in ("wiki", "count", "relation", "multi", "color")]
    inputs = training.encode_batch(processor, examples, "<|vision_start|><|image_pad|><|vision_end|>")
    labels, mask = inputs["labels"], inputs["attention_mask"]
    assert inputs["input_ids"].shape == labels.shape
    assert int(inputs["image_grid_thw"].shape[0]) == sum(len(e.images) for e in examples)
    for i, e in enumerate(examples):
        scored = labels[i][labels[i] != -100].tolist()
        assert processor.tokenizer.decode(scored) == " " + e.answer
        n = int(mask[i].sum())
        assert mask[i, :n].all() and not mask[i, n:].any()  # right padding
        assert (labels[i, n - len(scored) : n] != -100).all()  # the answer ends the sequence


def _colour_items(root) -> list[tuple[str, dict]]:
    """(radar_hf prompt, record) of the fixture's colour questions: MMBench colour categories and Wiki colour items."""
    from radar_tasks import prompts, taxonomy
    from radar_tasks.data import m3bench

    items = []
    for subset in ("mmbench", *(f"wiki_{k}" for k in fixture.WIKI_KINDS)):
        for category in taxonomy.categories(subset):
            files = json.dumps([str(f) for f in m3bench.category_files(root, subset, category)])
            docs = [
                d for d in m3bench.iter_records(str(root), subset, category, files) if d["answer"] in fixture.COLORS
            ]
            items += [(prompts.task_text(d, image_markers=True), d) for d in docs]
    return items


def _score_colour_items(checkpoint, root) -> tuple[float, float, int]:
    """(mean SDS, mean 1/K, items) on the colour items, scored by the likelihood core as radar_hf scores them."""
    import torch

    from radar_tasks.models import likelihood
    from radar_tasks.tasks.hooks import doc_to_visual

    model, processor = likelihood.load_model(str(checkpoint), "cpu", "float32")
    ps, chance = [], []
    for text, doc in _colour_items(root):
        scores = likelihood.score_continuations(
            model, processor, text, doc_to_visual(doc), [" " + c for c in doc["choices"]]
        )
        ps.append(float(torch.softmax(torch.tensor([-s.nll for s in scores]), 0)[0]))
        chance.append(1 / len(scores))
    return sum(ps) / len(ps), sum(chance) / len(chance), len(ps)


def test_a_short_training_run_lifts_the_colour_items_above_chance(init_checkpoint, tmp_path):
    """150 steps (~10 s) on colour scenes drawn on new canvases: the fixture's colour items (images never seen)
    go from about chance to far above it, scored as radar_hf scores them."""
    root = fixture.make_fixture(tmp_path / "M3-Bench")
    checkpoints = training.train(
        init_checkpoint, tmp_path / "ckpt", [0, 150], batch_size=16, lr=3e-3, weights={"color": 1}, log_every=0
    )
    assert [c["step"] for c in checkpoints] == [0, 150]
    assert checkpoints[1]["tokens"] > checkpoints[0]["tokens"] == 0
    log = json.loads((tmp_path / "ckpt" / "train_log.json").read_text())
    assert [c["step"] for c in log["checkpoints"]] == [0, 150]
    before, chance, n = _score_colour_items(checkpoints[0]["path"], root)
    after, _, _ = _score_colour_items(checkpoints[1]["path"], root)
    assert n >= 12
    assert abs(before - chance) < 0.1, (before, chance)
    # seeds 0, 1, 2 gave 0.67, 0.60, 0.68 against a chance of 0.35
    assert after > chance + 0.15 and after > before + 0.15, (before, after, chance)


def test_train_rejects_bad_steps(init_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="non-negative"):
        training.train(init_checkpoint, tmp_path, [-1, 5])


# ------------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_run_series_end_to_end(tmp_path):
    """Fixture, init, 4 training steps, two checkpoints evaluated in process through the lmms-eval CLI entry point,
    each with its images and without them, the analysis report with takeoff and visual gain; a second call reuses
    everything."""
    tasks = "radar_wiki_animal,radar_spatial"
    report_dir = series.run_series(tmp_path, steps=(0, 4), tasks=tasks, batch_size=4, print_fn=lambda *a: None)
    assert report_dir == tmp_path / "report"
    assert (report_dir / "report.md").exists()
    meta = json.loads((report_dir / "series.json").read_text())
    assert meta["steps"] == [0, 4] and meta["tasks"] == tasks
    assert [c["step"] for c in meta["checkpoints"]] == [0, 4]
    for step in (0, 4):
        results = list((tmp_path / "runs" / f"step_{step}").rglob("*_results.json"))
        assert len(results) == 1
        data = json.loads(results[0].read_text())["results"]
        assert {"radar_wiki_animal", "radar_spatial"} <= set(data)
        assert list((tmp_path / "runs" / f"step_{step}").rglob("*_samples_radar_spatial.jsonl"))
    runs = (report_dir / "runs.csv").read_text()
    assert "step 0" in runs and "step 4" in runs
    asym = (report_dir / "asymmetry.csv").read_text().splitlines()
    assert len(asym) >= 3  # header + one row per checkpoint
    table = series.format_development(report_dir, meta["checkpoints"])
    assert "step 4" in table and " - " not in table.splitlines()[1]
    # the image ablation: a second run of each checkpoint without its images, paired with the first in the report
    for step in (0, 4):
        [ablated] = list((tmp_path / "runs" / f"step_{step}.images-none").rglob("*_results.json"))
        assert json.loads(ablated.read_text())["radar_tasks"]["model"]["images"] == "none"
        [logged] = list((tmp_path / "runs" / f"step_{step}.images-none").rglob("*_samples_radar_spatial.jsonl"))
        prompt = json.loads(logged.read_text().splitlines()[0])["sds"]["prompt"]
        assert "<image>" not in prompt  # scored without its images
    lines = (report_dir / "visual_gain.csv").read_text().splitlines()
    gain = [r for r in csv.DictReader(lines) if r["metric"] == "sds"]
    assert {(r["run"], r["level"], r["name"]) for r in gain} >= {
        ("step 4", "ability", "perception"),
        ("step 4", "ability", "reasoning"),
        ("step 4", "subset", "spatial"),
    }
    for r in gain:  # the gain is the difference of the two runs' scores on the same items
        assert float(r["gain"]) == pytest.approx(float(r["with_images"]) - float(r["without"]), abs=1e-9)
    md = (report_dir / "report.md").read_text()
    assert "## What the images contribute" in md and "| series | task | SDS takeoff |" in md
    assert (report_dir / "figures" / "visual_gain.png").exists()
    assert "visual gain" in table and "SDS takeoff" in table

    # everything is reused: no training, no evaluation
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*_results.json")}
    messages = []
    series.run_series(tmp_path, steps=(0, 4), tasks=tasks, batch_size=4, print_fn=messages.append)
    assert any("reusing" in m for m in messages)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*_results.json")} == stamp
