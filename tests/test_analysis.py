"""`radar-tasks report` / `compare` on result folders of real lmms-eval runs of the fixture with tiny models.

Three lmms-eval runs, once per session, through lmms-eval's CLI entry point in this process (`runner.run_in_process`,
as a sweep runs them):
  A: tiny qwen2_vl, seed 0, `radar_mmbench,radar_wiki_animal,radar_mathvista,radar_spatial` (4 subsets, one group)
  B: the same architecture, seed 1 (another "checkpoint"), the same tasks
  C: seed 1, `radar_wiki_animal,radar_mathvista --limit 2` (items present in one run only)
Every other case (a run without per-item logs, several runs in one folder, an identical rerun) copies those
real outputs; nothing here writes a results JSON by hand.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest

from radar_tasks import taxonomy
from radar_tasks.analysis import figures
from radar_tasks.analysis.compare import compare_runs
from radar_tasks.analysis.report import analyse, draw_figures, write_report
from radar_tasks.analysis.runs import RunError, load_runs
from radar_tasks.cli import main as radar_main
from radar_tasks.results import find_results
from radar_tasks.runner import run_in_process

pytestmark = pytest.mark.slow

TASKS = "radar_mmbench,radar_wiki_animal,radar_mathvista,radar_spatial"
SUBSETS = ["mmbench", "mathvista", "spatial", "wiki_animal"]


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory) -> dict[str, Path]:
    """Output folders of three real lmms-eval runs (see the module docstring)."""
    from radar_tasks.demo.fixture import make_fixture
    from radar_tasks.demo.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("analysis-runs")
    data = make_fixture(root / "M3-Bench")
    m0 = build_tiny_model(root / "ckpt-a", "qwen2_vl", seed=0)
    m1 = build_tiny_model(root / "ckpt-b", "qwen2_vl", seed=1)
    plan = {
        "a": (m0, TASKS, ()),
        "b": (m1, TASKS, ()),
        "c": (m1, "radar_wiki_animal,radar_mathvista", ("--limit", "2")),
    }
    outs = {}
    for k, (model, tasks, extra) in plan.items():
        outs[k] = root / f"out-{k}"
        run_in_process(f"pretrained={model},device=cpu,dtype=float32", tasks, outs[k], data, extra)
    # a copy of B without its per-item logs (as a run without --log_samples)
    nologs = root / "out-b-nologs"
    shutil.copytree(outs["b"], nologs, ignore=shutil.ignore_patterns("*_samples_*.jsonl"))
    outs["b_nologs"] = nologs
    outs["root"] = root
    return outs


def _results(folder: Path) -> dict:
    [path] = list(folder.rglob("*_results.json"))
    return json.loads(path.read_text())


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def report(real_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(
        [real_runs["a"], real_runs["b"]],
        out,
        labels=[{"label": "ckpt-1M", "tokens": "1M"}, {"label": "ckpt-2M", "tokens": "2M"}],
    )
    return path


# ---------------------------------------------------------------------------------------------------------------
# Reading runs


def test_runs_are_found_and_labelled(real_runs):
    runs = load_runs([real_runs["a"], real_runs["b"]])
    # default label: the model name lmms-eval recorded (sanitized: the last two path parts joined by "__")
    assert [r.label for r in runs] == [r.model for r in runs]
    assert runs[0].model.endswith("__ckpt-a") and runs[1].model.endswith("__ckpt-b")
    assert all(r.has_logs for r in runs)
    assert set(runs[0].sample_files) == {taxonomy.task_name("mmbench", c) for c in taxonomy.MMBENCH_CATEGORIES} | {
        "radar_wiki_animal",
        "radar_mathvista",
        "radar_spatial",
    }
    items = runs[0].items()
    assert len(items) == 40 + 4 + 5 + 5 and all("task" in r and "n_candidates" in r for r in items)


def test_several_runs_in_one_folder_are_ordered_by_file_timestamp(real_runs, tmp_path):
    # the same real outputs under one folder, their date stamps set so that B is older than A
    for key, stamp in (("a", "20250102_000000"), ("b", "20250101_000000")):
        src = find_results(real_runs[key])[0]
        dest = tmp_path / "all" / src.parent.name
        dest.mkdir(parents=True)
        old = src.name[: -len("_results.json")]
        for f in src.parent.iterdir():
            shutil.copy(f, dest / f.name.replace(old, stamp, 1))
    runs = load_runs([tmp_path / "all"])
    assert [r.model[-6:] for r in runs] == ["ckpt-b", "ckpt-a"]
    assert [r.date_id for r in runs] == ["20250101_000000", "20250102_000000"]
    assert all(len(r.sample_files) == 23 for r in runs)


def test_manifest_yaml_and_csv(real_runs, tmp_path):
    (tmp_path / "m.yaml").write_text(
        f"runs:\n  - run: {real_runs['b']}\n    step: 2000\n    size: 0.5B\n    strategy: full\n"
        f"  - run: {real_runs['a']}\n    step: 1000\n    size: 7B\n    strategy: projector\n"
    )
    runs = load_runs(manifest=tmp_path / "m.yaml")  # no RUN arguments: the manifest's runs, in its order
    assert [(r.model[-6:], r.step, r.size, r.strategy) for r in runs] == [
        ("ckpt-b", 2000, 5e8, "full"),
        ("ckpt-a", 1000, 7e9, "projector"),
    ]
    (tmp_path / "m.csv").write_text(f"run,label,tokens\n{real_runs['a']},early,1B\n{real_runs['b']},late,2B\n")
    runs = load_runs([real_runs["b"], real_runs["a"]], manifest=tmp_path / "m.csv")
    assert [(r.label, r.tokens) for r in runs] == [("late", 2e9), ("early", 1e9)]
    (tmp_path / "bad.csv").write_text(f"run,tokns\n{real_runs['a']},1B\n")
    with pytest.raises(RunError, match="unknown field"):
        load_runs([real_runs["a"]], manifest=tmp_path / "bad.csv")
    with pytest.raises(RunError, match="2 value"):
        load_runs([real_runs["a"]], flags={"step": "1,2"})
    with pytest.raises(RunError, match="no such file"):
        load_runs([tmp_path / "missing"])


# ---------------------------------------------------------------------------------------------------------------
# Report tables


def test_report_writes_every_file(report):
    out = report.parent
    for name in (
        "report.md",
        "report.html",
        "results.csv",
        "summary.csv",
        "asymmetry.csv",
        "asymmetry_steps.csv",
        "signal.csv",
        "runs.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    for name in ("radar_sds", "development", "sds_vs_acc", "heatmap_sds", "asymmetry"):
        png = out / "figures" / f"{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = report.read_text()
    for section in ("## Runs", "## Scores", "## Asymmetry", "## Signal checks", "## Figures"):
        assert section in md
    assert "figures/radar_sds.png" in md and "ckpt-1M" in md
    # absent labels: the figures are skipped with a note, not faked
    assert not (out / "figures" / "scaling.png").exists() and not (out / "figures" / "strategies.png").exists()
    assert "`scaling`: scaling needs runs labelled with at least 2 different sizes" in md
    assert "`strategies`: a strategy comparison needs" in md
    assert "## Notes" not in md  # logs and results JSON agree; groups match their leaves; same items


def test_tidy_results_csv_is_the_results_json(report, real_runs):
    rows = _csv(report.parent / "results.csv")
    for key, label in (("a", "ckpt-1M"), ("b", "ckpt-2M")):
        res = _results(real_runs[key])["results"]
        mine = {(r["task"], r["metric"]): r for r in rows if r["run"] == label}
        for task, entry in res.items():
            for metric in ("sds", "acc", "sds_perception", "sds_reasoning"):
                if f"{metric},none" not in entry:
                    continue
                row = mine[(task, metric)]
                assert float(row["value"]) == pytest.approx(entry[f"{metric},none"], abs=1e-9)
                assert float(row["stderr"]) == pytest.approx(entry[f"{metric}_stderr,none"], abs=1e-9)
        wiki = mine[("radar_wiki_animal", "acc")]
        assert wiki["kind"] == "leaf" and wiki["ability"] == "perception" and int(wiki["n"]) == 4
        assert mine[("radar_mmbench", "sds")]["kind"] == "group"
        assert int(mine[("radar_mmbench", "sds_perception")]["n"]) == 24


def test_summary_levels_match_the_results_json(report, real_runs):
    rows = _csv(report.parent / "summary.csv")
    res = _results(real_runs["a"])["results"]
    cell = {(r["level"], r["name"], r["metric"]): r for r in rows if r["run"] == "ckpt-1M"}
    for metric in ("sds", "acc"):
        for s in SUBSETS:
            task = "radar_mmbench" if s == "mmbench" else taxonomy.task_name(s)
            assert float(cell[("subset", s, metric)]["value"]) == pytest.approx(res[task][f"{metric},none"])
        # an ability = unweighted mean over subsets (MMBench contributes its categories of that ability)
        per = (res["radar_mmbench"][f"{metric}_perception,none"] + res["radar_wiki_animal"][f"{metric},none"]) / 2
        rea = (
            res["radar_mmbench"][f"{metric}_reasoning,none"]
            + res["radar_mathvista"][f"{metric},none"]
            + res["radar_spatial"][f"{metric},none"]
        ) / 3
        assert float(cell[("ability", "perception", metric)]["value"]) == pytest.approx(per)
        assert float(cell[("ability", "reasoning", metric)]["value"]) == pytest.approx(rea)
        overall = sum(float(cell[("subset", s, metric)]["value"]) for s in SUBSETS) / 4
        assert float(cell[("overall", "overall", metric)]["value"]) == pytest.approx(overall)
    for r in rows:  # bootstrap intervals around every value
        assert r["ci_method"] == "bootstrap"
        assert float(r["ci_low"]) - 1e-12 <= float(r["value"]) <= float(r["ci_high"]) + 1e-12, r
    # the bootstrap stderr of a leaf is close to the one lmms-eval reported (both resample the items)
    wiki = cell[("subset", "wiki_animal", "sds")]
    assert float(wiki["stderr"]) == pytest.approx(res["radar_wiki_animal"]["sds_stderr,none"], rel=0.25)


def test_chance_is_mean_inverse_candidate_count(report, real_runs):
    rows = _csv(report.parent / "summary.csv")
    cell = {(r["level"], r["name"], r["metric"]): r for r in rows if r["run"] == "ckpt-1M"}
    [log] = list(real_runs["a"].rglob("*_samples_radar_wiki_animal.jsonl"))
    ks = [json.loads(line)["sds"]["n_candidates"] for line in log.read_text().splitlines()]
    assert float(cell[("subset", "wiki_animal", "sds")]["chance"]) == pytest.approx(sum(1 / k for k in ks) / len(ks))
    asym = {r["run"]: r for r in _csv(report.parent / "asymmetry.csv")}["ckpt-1M"]
    p, cp = float(asym["perception"]), float(asym["chance_perception"])
    q, cq = float(asym["reasoning"]), float(asym["chance_reasoning"])
    assert float(asym["gap"]) == pytest.approx((p - cp) - (q - cq))
    assert float(asym["gap_raw"]) == pytest.approx(p - q)
    [step] = _csv(report.parent / "asymmetry_steps.csv")
    assert (step["from"], step["to"], step["x"]) == ("ckpt-1M", "ckpt-2M", "tokens")


def test_signal_checks_cover_every_subset_and_ability(report):
    rows = _csv(report.parent / "signal.csv")
    names = {(r["level"], r["name"]) for r in rows}
    assert {("subset", s) for s in SUBSETS} | {
        ("ability", "perception"),
        ("ability", "reasoning"),
        ("overall", "overall"),
    } <= names
    for r in rows:
        assert r["runs"] == "2" and r["x"] == "tokens"
        assert r["kendall_tau"] in ("1", "-1", "")  # two runs: tau is +-1 (or undefined on a tie)
        assert r["no_signal"] in ("true", "false")
    # random-weight tiny models do not beat chance: their SDS carries no signal, and the report says so
    overall = next(r for r in rows if r["name"] == "overall" and r["metric"] == "sds")
    assert overall["no_signal"] == "true" and "at chance" in overall["flags"]
    assert "**Tasks without signal (SDS):**" in report.read_text()


def test_run_without_logs_falls_back_to_stderr(real_runs, tmp_path):
    path = write_report([real_runs["a"], real_runs["b_nologs"]], tmp_path, labels=[{"step": 1}, {"step": 2}])
    rows = [r for r in _csv(tmp_path / "summary.csv") if r["run"].endswith("ckpt-b")]
    assert rows and all(r["ci_method"] == "1.96*stderr" and r["chance"] == "" for r in rows)
    res = _results(real_runs["b"])["results"]
    wiki = next(r for r in rows if r["name"] == "wiki_animal" and r["metric"] == "sds")
    se = res["radar_wiki_animal"]["sds_stderr,none"]
    assert float(wiki["stderr"]) == pytest.approx(se)
    assert float(wiki["ci_high"]) - float(wiki["ci_low"]) == pytest.approx(2 * 1.959964 * se, rel=1e-5)
    asym = {r["run"][-6:]: r for r in _csv(tmp_path / "asymmetry.csv")}
    assert asym["ckpt-b"]["gap"] == "" and asym["ckpt-b"]["gap_raw"] != ""
    assert asym["ckpt-a"]["gap"] != ""
    md = path.read_text()
    assert "Chance levels need per-item logs" in md and "±1.96 × results-JSON stderr" in md


# ---------------------------------------------------------------------------------------------------------------
# Figures


def test_figures_have_titles_and_axis_labels(real_runs):
    runs = load_runs([real_runs["a"], real_runs["b"]], flags={"label": "a,b", "tokens": "1M,2M"})
    data = analyse(runs, bootstrap_iters=200)
    figs, skipped = draw_figures(runs, data)
    assert set(skipped) == {"scaling", "strategies", "visual_gain"}  # no sizes, no strategies, no run without images
    assert set(figs) == {"radar_sds", "development", "sds_vs_acc", "heatmap_sds", "asymmetry"}
    for name, fig in figs.items():
        described = figures.describe(fig)
        assert described, name
        for ax in described:
            assert ax["title"] and ax["xlabel"] and ax["ylabel"], (name, ax)
    radar = figs["radar_sds"]
    assert [t.get_text() for t in radar.axes[0].get_xticklabels()] == SUBSETS
    assert len([line for line in radar.axes[0].get_lines() if line.get_label() in ("a", "b")]) == 2
    dev = figs["development"]
    # one panel per mean metric the runs report (radar_hf's logs carry bpb and brier)
    assert [ax.get_xlabel() for ax in dev.axes] == ["tokens seen"] * 4
    assert [ax.get_ylabel() for ax in dev.axes] == ["SDS", "accuracy", "BPB", "Brier"]


def test_scaling_and_strategy_figures_with_labels(real_runs, tmp_path):
    (tmp_path / "m.csv").write_text(f"run,size,strategy\n{real_runs['a']},0.5B,projector\n{real_runs['b']},7B,full\n")
    path = write_report([], tmp_path / "rep", manifest=tmp_path / "m.csv", bootstrap_iters=200)
    figs = tmp_path / "rep" / "figures"
    assert (figs / "scaling.png").stat().st_size > 5000 and (figs / "strategies.png").stat().st_size > 5000
    # two series of one run each: no development curve, and the report says why
    assert not (figs / "development.png").exists()
    assert "`development`: development curves need a series of at least 2 runs" in path.read_text()
    runs = load_runs([], manifest=tmp_path / "m.csv")
    data = analyse(runs, bootstrap_iters=200)
    for fig in (
        figures.scaling(runs, data["summary"]),
        figures.strategy_comparison(runs, data["summary"], data["asymmetry"]),
    ):
        for ax in figures.describe(fig):
            assert ax["title"] and ax["xlabel"] and ax["ylabel"]
    with pytest.raises(figures.FigureSkipped):
        figures.development_curves(runs, data["summary"])


# ---------------------------------------------------------------------------------------------------------------
# Compare


def test_compare_paired_bootstrap(real_runs):
    a, b = load_runs([real_runs["a"]])[0], load_runs([real_runs["b"]])[0]
    out = compare_runs(a, b, iters=1000)
    assert out["counts"]["matched"] == 54 and out["counts"]["only_a"] == 0 and out["counts"]["only_b"] == 0
    ra, rb = _results(real_runs["a"])["results"], _results(real_runs["b"])["results"]
    rows = {(r["level"], r["name"], r["metric"]): r for r in out["rows"]}
    for s in SUBSETS:
        task = "radar_mmbench" if s == "mmbench" else taxonomy.task_name(s)
        row = rows[("subset", s, "sds")]
        # the same items in both runs: the paired difference is the difference of the results-JSON scores
        assert row["diff"] == pytest.approx(ra[task]["sds,none"] - rb[task]["sds,none"], abs=1e-9)
        assert row["a"] == pytest.approx(ra[task]["sds,none"]) and row["b"] == pytest.approx(rb[task]["sds,none"])
        assert row["ci_low"] <= row["diff"] <= row["ci_high"]
    ov = rows[("overall", "overall", "sds")]
    assert ov["diff"] == pytest.approx(sum(rows[("subset", s, "sds")]["diff"] for s in SUBSETS) / 4)
    assert ov["n_items"] == 54
    assert {r["level"] for r in out["rows"]} == {"category", "subset", "ability", "overall"}


def test_bpb_and_brier_of_real_runs_from_their_per_item_logs(real_runs):
    """Each logged item's bpb is its `nll_sum / (ln 2 x bytes)`, `bytes` the UTF-8 bytes of " " + the correct
    candidate (the raw style's continuation); each leaf's bpb and brier the mean over its scored items; `compare`
    gives the results-JSON differences and names the run with the lower BPB as the better one."""
    ra, rb = _results(real_runs["a"])["results"], _results(real_runs["b"])["results"]
    a, b = load_runs([real_runs["a"]])[0], load_runs([real_runs["b"]])[0]
    by_task: dict = {}
    for rec in a.items():
        by_task.setdefault(rec["task"], []).append(rec)
        if rec["p"] is None:
            assert rec["bpb"] is None and rec["brier"] is None
            continue
        assert rec["bytes"] == len((" " + rec["candidates"][0]).encode("utf-8"))
        assert rec["bpb"] == pytest.approx(rec["nll_sum"] / (math.log(2) * rec["bytes"]), rel=1e-12)
        p = [math.exp(s - max(rec["scores"])) for s in rec["scores"]]
        p = [x / sum(p) for x in p]
        assert rec["brier"] == pytest.approx((p[0] - 1) ** 2 + sum(x * x for x in p[1:]), abs=1e-12)
    for task, recs in by_task.items():
        scored = [r for r in recs if r["p"] is not None]
        for metric in ("bpb", "brier"):
            assert ra[task][f"{metric},none"] == pytest.approx(sum(r[metric] for r in scored) / len(scored), abs=1e-12)
    rows = {(r["level"], r["name"], r["metric"]): r for r in compare_runs(a, b, iters=500)["rows"]}
    for s in SUBSETS:
        task = "radar_mmbench" if s == "mmbench" else taxonomy.task_name(s)
        for metric in ("bpb", "brier"):
            row = rows[("subset", s, metric)]
            assert row["diff"] == pytest.approx(ra[task][f"{metric},none"] - rb[task][f"{metric},none"], abs=1e-9)
            lower = "A" if row["diff"] < 0 else "B"  # lower is better
            assert row["better"] == (lower if row["ci_low"] > 0 or row["ci_high"] < 0 else "")


def test_compare_identical_rerun_has_zero_difference(real_runs, tmp_path):
    copy = shutil.copytree(real_runs["a"], tmp_path / "rerun")
    a, a2 = load_runs([real_runs["a"]])[0], load_runs([copy])[0]
    for r in compare_runs(a, a2, iters=200)["rows"]:
        assert r["diff"] == 0 and r["ci_low"] == 0 and r["ci_high"] == 0


def test_compare_cli_counts_items_in_one_run_only(real_runs, tmp_path, capsys):
    csv_path = tmp_path / "cmp" / "compare.csv"
    assert (
        radar_main(["compare", str(real_runs["a"]), str(real_runs["c"]), "--out", str(csv_path), "--iters", "300"]) == 0
    )
    printed = capsys.readouterr().out
    # C scored the first 2 items of wiki_animal and mathvista only
    assert "4 matched by (task, id); 50 only in A, 0 only in B (left out)" in printed
    rows = _csv(csv_path)
    assert {r["name"] for r in rows if r["level"] == "subset"} == {"wiki_animal", "mathvista"}
    assert all(int(r["n_items"]) <= 4 for r in rows)
    assert {"run_a", "run_b", "diff", "ci_low", "ci_high", "p_value"} <= set(rows[0])


def test_compare_cli_refuses_runs_without_logs(real_runs, capsys):
    assert radar_main(["compare", str(real_runs["a"]), str(real_runs["b_nologs"])]) == 2
    assert "--log_samples" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The report command


def test_report_cli(real_runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert (
        radar_main(
            [
                "report",
                str(real_runs["a"]),
                str(real_runs["b"]),
                "--steps",
                "1000,2000",
                "--labels",
                "early,late",
                "--bootstrap-iters",
                "200",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    runs = {r["run"]: r for r in _csv(out / "runs.csv")}
    assert runs["early"]["step"] == "1000" and runs["late"]["model"].endswith("ckpt-b")
    assert "| BPB overall | Brier overall |" in (out / "report.md").read_text()
    assert {r["metric"] for r in _csv(out / "summary.csv")} == {"sds", "acc", "bpb", "brier"}
    assert radar_main(["report", str(real_runs["a"]), "--steps", "1,2", "--out", str(out)]) == 2
    assert "1 run(s)" in capsys.readouterr().err
    assert radar_main(["report", str(tmp_path / "nothing"), "--out", str(out)]) == 2


def test_report_notes_runs_that_score_different_items(real_runs, tmp_path):
    path = write_report([real_runs["a"], real_runs["c"]], tmp_path, bootstrap_iters=200)
    md = path.read_text()
    assert "## Notes" in md and "lacks" in md and "different numbers of items" in md
    assert math.isfinite(
        float(
            next(r for r in _csv(tmp_path / "summary.csv") if r["run"].endswith("ckpt-b") and r["level"] == "overall")[
                "value"
            ]
        )
    )
