"""Takeoff, signal and noise as published, visual gain and consecutive checkpoints (issue 20, items 2-4 and 6).

Expected values come from this file's own code: formulas on hand values, and the paired bootstrap written out here
with its own generator on tiny per-item logs (categories of unequal sizes, items skipped in one run only). The runs
of the report tests are results JSONs and per-item logs written here (no model runs), carrying `bpb` beside `sds`
and `acc`: the metric the catalogue gains in another change, added here for the test when it lacks it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from radar_tasks.analysis import figures, paired, signal_noise, stats, takeoff
from radar_tasks.analysis.report import write_report
from radar_tasks.analysis.runs import Run, RunError, load_runs
from radar_tasks.cli import main as radar_main
from radar_tasks.metrics import catalogue

Z = 1.959963984540054


@pytest.fixture
def with_bpb(monkeypatch):
    """The catalogue with a mean `bpb` (lower is better), as the BPB change declares it."""
    if not any(m.name == "bpb" for m in catalogue.METRICS):
        bpb = catalogue.Metric("bpb", catalogue.MEAN, "bpb", "bits per byte of the correct answer", False, True)
        monkeypatch.setattr(catalogue, "METRICS", (*catalogue.METRICS, bpb))


# ---------------------------------------------------------------------------------------------------------------
# Statistics by hand


def test_relative_noise_signal_and_ratio_by_hand():
    last = [0.40, 0.42, 0.44]
    mean = sum(last) / 3
    std0 = math.sqrt(sum((v - mean) ** 2 for v in last) / 3)  # ddof=0, as the published code
    assert stats.relative_noise(last) == pytest.approx(std0 / mean)
    assert stats.relative_signal([0.42, 0.51, 0.45]) == pytest.approx((0.51 - 0.42) / ((0.42 + 0.51 + 0.45) / 3))
    assert math.isnan(stats.relative_signal([0.42])) and math.isnan(stats.relative_noise([0.4, math.nan, 0.4]))
    assert stats.ratio(0.2, 0.05) == pytest.approx(4.0) and stats.ratio(0.2, 0.0) == math.inf
    assert math.isnan(stats.ratio(0.0, 0.0)) and math.isnan(stats.ratio(math.nan, 0.1))


def test_takeoff_index_is_the_start_of_the_last_run_above():
    assert stats.takeoff_index([0.5, 7.5, 1.0, 10.0, 12.5]) == 3
    assert stats.takeoff_index([3.0, 3.0, 3.0]) == 0
    assert stats.takeoff_index([3.0, 3.0, 1.0]) is None
    assert stats.takeoff_index([3.0, math.nan, 3.0]) == 2  # unknown is not above
    assert stats.takeoff_index([1.0, math.inf]) == 1  # a zero stderr above the reference: certain
    assert stats.takeoff_index([]) is None


# ---------------------------------------------------------------------------------------------------------------
# Takeoff and signal/noise from summary rows (in-memory runs: no files)


def _run(label, order, **labels):
    return Run(
        results_path=Path(f"/nowhere/{label}_results.json"),
        data={"results": {}},
        order=order,
        labels={"label": label, **labels},
    )


def _row(run, level, name, metric, value, se=0.02, chance=math.nan):
    return {
        "run": run,
        "level": level,
        "name": name,
        "metric": metric,
        "value": value,
        "stderr": se,
        "ci_low": value - Z * se,
        "ci_high": value + Z * se,
        "chance": chance,
        "n": 50,
        "ci_method": "bootstrap",
    }


def test_takeoff_on_hand_made_series(with_bpb):
    runs = [_run(f"s{i}", i, step=100 * (i + 1)) for i in range(5)]
    sds = [0.26, 0.40, 0.27, 0.45, 0.50]  # z vs chance 0.25: 0.5, 7.5, 1.0, 10, 12.5 -> from s3
    acc = [0.30, 0.40, 0.50, 0.60, 0.26]  # above, then back at chance at the last checkpoint -> not yet
    bpb = [2.00, 1.99, 1.90, 1.95, 1.80]  # lower is better, vs the first (2.0): z 0, 0.5, 5, 2.5, 10 -> from s2
    flat = [0.30, 0.31, 0.32, 0.33, 0.34]  # no chance level known (no per-item logs) -> unknown
    summary = []
    for i, r in enumerate(runs):
        summary += [
            _row(r.label, "ability", "perception", "sds", sds[i], chance=0.25),
            _row(r.label, "ability", "perception", "acc", acc[i], chance=0.25),
            _row(r.label, "ability", "perception", "bpb", bpb[i]),
            _row(r.label, "ability", "reasoning", "sds", flat[i]),
        ]
    rows = {(t["name"], t["metric"]): t for t in takeoff.takeoff(runs, summary)}
    t = rows[("perception", "sds")]
    assert (t["takeoff"], t["takeoff_x"], t["runs_from_takeoff"], t["reference"]) == ("s3", 400, 2, "chance")
    assert t["z_last"] == pytest.approx((0.50 - 0.25) / 0.02)
    assert rows[("perception", "acc")]["status"] == "not yet" and rows[("perception", "acc")]["takeoff"] is None
    b = rows[("perception", "bpb")]
    assert (b["takeoff"], b["reference"], b["status"]) == ("s2", "first checkpoint", "takeoff")
    assert b["z_last"] == pytest.approx((2.00 - 1.80) / 0.02)
    assert rows[("reasoning", "sds")]["status"] == "unknown"
    header, body = takeoff.table_rows(list(rows.values()))
    assert header == ["series", "task", "SDS takeoff", "accuracy takeoff", "BPB takeoff"]
    assert body == [["all", "perception", "s3", "not yet", "s2"], ["all", "reasoning", "unknown", "–", "–"]]
    # marked on the development curves: a dashed line at the takeoff of each ability that has one
    fig = figures.development_curves(runs, summary, takeoff.takeoff(runs, summary))
    marks = {
        (ax.get_ylabel(), line.get_label()): line.get_xdata()[0]
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_label().startswith("takeoff")
    }
    assert marks == {("SDS", "takeoff, perception"): 400, ("BPB", "takeoff, perception"): 300}


def test_signal_and_noise_on_hand_values(with_bpb):
    series = {"A": [0.30, 0.40, 0.42, 0.44], "B": [0.30, 0.50, 0.52, 0.51]}
    close = {"A": [0.30, 0.50, 0.40, 0.45], "B": [0.30, 0.46, 0.43, 0.44]}  # finals 0.45 / 0.443: SNR < 1
    runs, summary = [], []
    for s, values in series.items():
        for i, v in enumerate(values):
            r = _run(f"{s}{i}", len(runs), series=s, step=i)
            runs.append(r)
            summary += [
                _row(r.label, "subset", "wiki_animal", "sds", v),
                _row(r.label, "subset", "spatial", "sds", close[s][i]),
            ]

    def by_hand(values_of):
        finals = {s: sum(v[-3:]) / 3 for s, v in values_of.items()}
        noise = {s: math.sqrt(sum((x - finals[s]) ** 2 for x in v[-3:]) / 3) / finals[s] for s, v in values_of.items()}
        signal = abs(finals["A"] - finals["B"]) / ((finals["A"] + finals["B"]) / 2)
        return finals, noise, signal

    rows = {(r["name"], r["series"]): r for r in signal_noise.signal_and_noise(runs, summary, last_n=3)}
    for subset, values in (("wiki_animal", series), ("spatial", close)):
        finals, noise, signal = by_hand(values)
        for s in "AB":
            r = rows[(subset, s)]
            assert r["final"] == pytest.approx(finals[s]) and r["noise"] == pytest.approx(noise[s])
            assert r["signal"] == pytest.approx(signal) and r["snr"] == pytest.approx(signal / noise[s])
            assert r["low_snr"] == (signal / noise[s] < 1) and (r["runs"], r["last_n"]) == (4, 3)
    assert not rows[("wiki_animal", "A")]["low_snr"] and rows[("spatial", "A")]["low_snr"]
    # n = 4: every checkpoint; one series alone has a noise but no signal
    four = {(r["name"], r["series"]): r for r in signal_noise.signal_and_noise(runs, summary, last_n=4)}
    assert four[("wiki_animal", "A")]["final"] == pytest.approx(sum(series["A"]) / 4)
    alone = signal_noise.signal_and_noise(runs[:4], summary, last_n=3)
    assert all(math.isnan(r["signal"]) and math.isfinite(r["noise"]) for r in alone)
    with pytest.raises(RunError, match=r"--snr-last 2: .* n >= 3"):
        signal_noise.signal_and_noise(runs, summary, last_n=2)


# ---------------------------------------------------------------------------------------------------------------
# Paired comparisons on per-item logs written here

# (task, subset, category, ability, items): unequal category sizes, MMBench holding both abilities
LEAVES = (
    ("radar_wiki_animal", "wiki_animal", "wiki_animal", "perception", 5),
    ("radar_spatial", "spatial", "spatial", "reasoning", 3),
    ("radar_mmbench_ocr", "mmbench", "ocr", "perception", 4),
    ("radar_mmbench_image_style", "mmbench", "image_style", "perception", 2),
    ("radar_mmbench_future_prediction", "mmbench", "future_prediction", "reasoning", 3),
)
SKIPPED_IN_NONE = ("radar_wiki_animal", 1)  # item 1 of wiki_animal is not scored in the runs without images


def _records(step: int, images: str) -> dict[str, list[dict]]:
    """Per leaf, its item records: p and bpb drawn from (step, images); without images lower p, higher bpb."""
    rng = np.random.default_rng(step + (0 if images == "keep" else 7))
    shift = step / 1000 - (0.15 if images != "keep" else 0.0)
    out = {}
    for task, subset, category, ability, n in LEAVES:
        recs = []
        for i in range(n):
            k = 3 + i % 2
            p = float(np.clip(rng.uniform(0.1, 0.6) + shift, 0.01, 0.99))
            skipped = images != "keep" and (task, i) == SKIPPED_IN_NONE
            recs.append(
                {
                    "id": f"{category}-{i}",
                    "subset": subset,
                    "category": category,
                    "ability": ability,
                    "p": None if skipped else p,
                    "correct": False if skipped else bool(p > 1 / k),
                    "skipped": "a reason" if skipped else None,
                    "n_candidates": k,
                    "bpb": None if skipped else float(3.0 - 2 * p + rng.uniform(0, 0.1)),
                }
            )
        out[task] = recs
    return out


def _write_run(folder: Path, step: int, images: str, stamp: str) -> Path:
    """A results JSON and its per-item logs, as lmms-eval writes them; leaf scores = the means of the records."""
    folder.mkdir(parents=True)
    results = {}
    for task, recs in _records(step, images).items():
        entry = {"items,none": len(recs), "skipped,none": sum(r["p"] is None for r in recs)}
        for metric, field in (("sds", "p"), ("acc", "correct"), ("bpb", "bpb")):
            values = [float(r[field]) for r in recs if r[field] is not None]
            entry[f"{metric},none"] = sum(values) / len(values)
            entry[f"{metric}_stderr,none"] = 0.05
        results[task] = entry
        with open(folder / f"{stamp}_samples_{task}.jsonl", "w") as f:
            for r in recs:
                f.write(json.dumps({"doc_id": 0, "sds": r}) + "\n")
    model = {
        "pretrained": f"/ckpts/step_{step}",
        "model_type": "qwen2_vl",
        "prompt_style": "raw",
        "score": "logprob",
        "protocol": None,
        "dtype": "float32",
        "images": images,
    }
    path = folder / f"{stamp}_results.json"
    path.write_text(json.dumps({"results": results, "configs": {}, "radar_tasks": {"model": model}}))
    return path


@pytest.fixture
def ablation_runs(tmp_path, with_bpb):
    """Three checkpoints, each with its images and without them: six runs, labelled by step."""
    paths, labels = [], []
    for i, step in enumerate((100, 200, 300)):
        for j, images in enumerate(("keep", "none")):
            paths.append(_write_run(tmp_path / f"step_{step}-{images}", step, images, f"20260101_0000{i}{j}"))
            labels.append({"label": f"step {step}" + ("" if images == "keep" else " (none)"), "step": step})
    return paths, labels


def _bootstrap_by_hand(diffs: dict, iters: int, seed: int) -> dict:
    """The paired bootstrap as documented: per stratum, in sorted order, one generator, `iters` resamples of the
    per-item differences; returns stratum -> replicate means."""
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(diffs, key=repr):
        x = np.asarray(diffs[key], dtype=np.float64)
        out[key] = x[rng.integers(0, x.size, size=(iters, x.size))].mean(axis=1)
    return out


def _balanced(parts: dict):
    subsets = {}
    for (subset, _), v in parts.items():
        subsets.setdefault(subset, []).append(v)
    return np.mean([np.mean(v, axis=0) for v in subsets.values()], axis=0)


def _hand_paired(a: dict, b: dict, field: str, iters: int, seed: int):
    """Per-item differences a - b over the items both hold the field of, per (subset, category); the gain and the
    percentile CI of the overall, perception and reasoning levels."""
    diffs, ability = {}, {}
    for task in a:
        for ra, rb in zip(a[task], b[task]):
            if ra[field] is None or rb[field] is None:
                continue
            key = (ra["subset"], ra["category"])
            diffs.setdefault(key, []).append(float(ra[field]) - float(rb[field]))
            ability[key] = ra["ability"]
    reps = _bootstrap_by_hand(diffs, iters, seed)
    out = {}
    for name, keys in (
        ("overall", list(diffs)),
        ("perception", [k for k in diffs if ability[k] == "perception"]),
        ("reasoning", [k for k in diffs if ability[k] == "reasoning"]),
        ("wiki_animal", [k for k in diffs if k[0] == "wiki_animal"]),
    ):
        point = _balanced({k: np.mean(diffs[k]) for k in keys})
        r = _balanced({k: reps[k] for k in keys})
        out[name] = (float(point), *np.quantile(r, [0.025, 0.975]), sum(len(diffs[k]) for k in keys))
    return out


def test_visual_gain_is_the_paired_bootstrap_of_keep_minus_none(ablation_runs):
    paths, labels = ablation_runs
    runs = load_runs(paths, labels=labels)
    assert [r.images for r in runs] == ["keep", "none"] * 3
    assert [r.series for r in runs[:2]] == ["all", "all (images=none)"]
    pairs, notes = paired.image_pairs(runs)
    assert [(a.label, b.label) for a, b in pairs] == [
        ("step 100", "step 100 (none)"),
        ("step 200", "step 200 (none)"),
        ("step 300", "step 300 (none)"),
    ] and notes == []
    rows, _ = paired.visual_gain(runs, ["sds", "acc", "bpb"], iters=300, seed=5)
    keep, none = _records(200, "keep"), _records(200, "none")
    for m_i, (metric, field) in enumerate((("sds", "p"), ("acc", "correct"), ("bpb", "bpb"))):
        expected = _hand_paired(keep, none, field, 300, 5 + m_i)  # compare seeds each metric: seed + its index
        for name, (gain, lo, hi, n) in expected.items():
            [row] = [r for r in rows if r["run"] == "step 200" and r["name"] == name and r["metric"] == metric]
            assert row["gain"] == pytest.approx(gain, abs=1e-12)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
            assert row["n_items"] == n and row["excludes_zero"] == (lo > 0 or hi < 0)
    # the item skipped without images is out of SDS and BPB, in acc (counted wrong)
    wiki = {r["metric"]: r["n_items"] for r in rows if r["run"] == "step 200" and r["name"] == "wiki_animal"}
    assert wiki == {"sds": 4, "acc": 5, "bpb": 4}
    fig = figures.FIGURES["visual_gain"].draw(runs, {"visual_gain": rows})
    assert [ax.get_title() for ax in fig.axes] == [
        "Visual gain per subset (SDS)",
        "Visual gain by ability over training (bands: 95% CI)",
    ]
    bars = [p.get_height() for p in fig.axes[0].patches]  # the last checkpoint's gain per subset
    expected = {r["name"]: r["gain"] for r in rows if r["run"] == "step 300" and r["metric"] == "sds"}
    assert bars == pytest.approx([expected[s] for s in ("mmbench", "spatial", "wiki_animal")])


def test_consecutive_checkpoints_are_paired_on_their_items(ablation_runs):
    paths, labels = ablation_runs
    runs = load_runs(paths, labels=labels)
    rows, notes = paired.consecutive(runs, ["sds", "bpb"], iters=200, seed=1)
    assert notes == []
    steps = {(r["series"], r["from"], r["to"]) for r in rows}
    assert steps == {
        ("all", "step 100", "step 200"),
        ("all", "step 200", "step 300"),
        ("all (images=none)", "step 100 (none)", "step 200 (none)"),
        ("all (images=none)", "step 200 (none)", "step 300 (none)"),
    }
    expected = _hand_paired(_records(300, "keep"), _records(200, "keep"), "bpb", 200, 1 + 1)
    for name in ("perception", "reasoning", "overall"):
        [row] = [r for r in rows if r["to"] == "step 300" and r["name"] == name and r["metric"] == "bpb"]
        delta, lo, hi, n = expected[name]
        assert (row["delta"], row["ci_low"], row["ci_high"], row["n_items"]) == pytest.approx((delta, lo, hi, n))
        assert row["after"] - row["before"] == pytest.approx(delta) and row["x_from"] == 200


def test_a_run_without_its_partner_or_scored_otherwise_is_named(ablation_runs, tmp_path):
    paths, labels = ablation_runs
    # step 100 without images only; step 200's pair scored with another prompt style
    other = json.loads(paths[2].read_text())
    other["radar_tasks"]["model"]["prompt_style"] = "qwen2vl_base"
    paths[2].write_text(json.dumps(other))
    runs = load_runs([paths[1], paths[2], paths[3]], labels=[labels[1], labels[2], labels[3]])
    pairs, notes = paired.image_pairs(runs)
    assert pairs == []
    assert notes[0].startswith("step 100 (none) (images=none): no run of its checkpoint with images (/ckpts/step_100)")
    assert "scored differently (prompt_style)" in notes[1]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # the report's figures: ~20 s on the shared 2-core CPU
def test_report_shows_takeoff_snr_visual_gain_and_consecutive_changes(ablation_runs, tmp_path):
    paths, labels = ablation_runs
    md = write_report(paths, tmp_path / "rep", labels=labels, bootstrap_iters=100).read_text()
    for heading in (
        "## Development",
        "Takeoff: the checkpoint",
        "Consecutive checkpoints:",
        "### Signal and noise, as published",
        "## What the images contribute",
        "Heineman et al., 2025",
        "Chen et al., 2024",
    ):
        assert heading in md, heading
    assert "| series | task | SDS takeoff | accuracy takeoff | BPB takeoff |" in md
    assert "| checkpoint | images | task | SDS with | without | gain [95% CI] |" in md
    gain = _csv(tmp_path / "rep" / "visual_gain.csv")
    assert {r["run"] for r in gain} == {"step 100", "step 200", "step 300"} and {r["metric"] for r in gain} == {
        "sds",
        "acc",
        "bpb",
    }
    snr = _csv(tmp_path / "rep" / "snr.csv")
    assert {r["series"] for r in snr} == {"all", "all (images=none)"} and all(r["last_n"] == "3" for r in snr)
    assert all(r["signal"] == "" for r in snr)  # one series per image mode: no signal, a noise
    assert (tmp_path / "rep" / "figures" / "visual_gain.png").stat().st_size > 5000
    assert _csv(tmp_path / "rep" / "takeoff.csv") and _csv(tmp_path / "rep" / "consecutive.csv")


def test_report_cli_refuses_fewer_than_three_last_checkpoints(ablation_runs, tmp_path, capsys):
    paths, _ = ablation_runs
    code = radar_main(["report", str(paths[0]), "--out", str(tmp_path / "r"), "--snr-last", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: --snr-last 2:") and "n >= 3" in err
    assert not (tmp_path / "r").exists()
