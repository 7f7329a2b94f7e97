"""Every script under benchmarks/ runs in a smoke mode (tiny model or no model, a question or a few items, seconds),
so a renamed function cannot break one unseen. In this process where the script allows (lmms-eval and torch are
imported once per session); no timing assertion: the scripts measure, these tests only run them.
bench_inloop and bench_real_size have their own files (test_bench_inloop.py, test_bench_real_size.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    """benchmarks/<name>.py as a module (its folder on sys.path, as when run: the scripts import their siblings)."""
    import sys

    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_script_has_a_smoke_test():
    tested = {"bench_inloop", "bench_real_size", *SMOKE}
    assert {p.stem for p in BENCHMARKS.glob("*.py")} == tested


def test_synthetic_m3bench_and_report_size(tmp_path, capsys):
    root = tmp_path / "m3"
    script("synthetic_m3bench").main([str(root), "--items", "40"])
    # report_size reads every item of the folder the way the tasks do: the released layout, readable
    script("report_size").main([str(root), str(tmp_path / "size"), "--checkpoints", "2"])
    out = capsys.readouterr().out
    assert "81 items x 2 checkpoints" in out  # 40 items spread over the files, at least one each
    assert (tmp_path / "size" / "report" / "report.html").stat().st_size > 0


def test_bench_prefix_sharing(capsys):
    script("bench_prefix_sharing").main(["--ks", "2", "--questions", "1", "--rounds", "1", "--no-memory"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = result["rows"]
    assert row["K"] == 2 and row["diff_c"] < 1e-5 and row["diff_b"] < 1e-5  # float32: the three ways agree


def test_paper_deviations(tmp_path, tiny_checkpoint, capsys):
    model = tiny_checkpoint("qwen2_vl")
    out = tmp_path / "deviations.json"
    argv = ["--work", str(tmp_path), "--families", "qwen2_vl", "--items", "3", "--out", str(out)]
    script("paper_deviations").main([*argv, "--pretrained", f"qwen2_vl={model}"])
    result = json.loads(out.read_text())["qwen2_vl"]
    assert result["ab_draw_paper"]["items"] == 3 and result["ab_draw_paper"]["items_with_block"] > 0
    assert result["transparency"]["mmmu_pro/qwen_vl_utils"]["max_abs_dp"] == 0  # the script's own conversion
    assert "| qwen2_vl |" in capsys.readouterr().out


def test_bench_pipeline(tmp_path, capsys):
    # one run through the lmms-eval CLI (a child process) with one background worker, a few questions
    argv = ["run", "--work", str(tmp_path), "--items", "40", "--tasks", "radar_wiki_animal", "--limit", "4"]
    assert script("bench_pipeline").main([*argv, "--workers", "1", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "run num_workers=1:" in out, out[-2000:]


SMOKE = {"synthetic_m3bench", "report_size", "bench_prefix_sharing", "paper_deviations", "bench_pipeline"}
