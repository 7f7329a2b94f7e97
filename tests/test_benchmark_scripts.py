"""Every script under benchmarks/ runs in a smoke mode (tiny model or no model, a question or a few items, seconds),
so a renamed function cannot break one unseen. In this process where the script allows (lmms-eval and torch are
imported once per session); no timing assertion: the scripts measure, these tests only run them.
bench_inloop has its own file (test_bench_inloop.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    """benchmarks/<name>.py as a module (its folder on sys.path, as when run: the scripts import their siblings)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: a dataclass with string annotations looks its module up
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_script_has_a_smoke_test():
    tested = {"bench_inloop", *SMOKE}
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


NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
LAST_LINE = re.compile(
    rf"config (\S+): parity {NUMBER}, speedup {NUMBER} \(limit {NUMBER}\), mfu {NUMBER}, peak {NUMBER}"
)


def test_bench_real_size_ends_with_the_summary_line(capsys):
    """A tiny model through the real-size script's path (two questions, the second with two images); no timing
    assertion: only the last line's shape and the numbers that do not depend on speed."""
    assert script("bench_real_size").main(["--config", "tiny-qwen2-vl", "--questions", "2"]) == 0  # 1: a fallback
    lines = capsys.readouterr().out.strip().splitlines()
    match = LAST_LINE.fullmatch(lines[-1])
    assert match, lines[-1]
    config, parity, speedup, limit, mfu, peak = match.groups()
    assert config == "tiny-qwen2-vl"
    assert float(parity) <= 1e-5  # float32: the two paths agree (measured <= 1e-6)
    assert 1 < float(limit) < 4  # K(P+C)/(P+KC) with K = 4 and P, C > 0
    assert float(speedup) > 0 and float(mfu) > 0
    assert float(peak) > 2**20  # bytes
    # one line per question, the second with two images
    questions = [line for line in lines if line.startswith("question ")]
    assert [q.split(":")[0] for q in questions] == ["question 1", "question 2"]
    assert "1 image(s)" in questions[0] and "2 image(s)" in questions[1]
    # and both in one call: the tiny prompts fit one prefill batch of the `auto` token budget
    batched = next(line for line in lines if line.startswith("batched: "))
    assert "batch_size auto: 1 prefill batch(es)" in batched


SMOKE = {
    "synthetic_m3bench",
    "report_size",
    "bench_prefix_sharing",
    "paper_deviations",
    "bench_pipeline",
    "bench_real_size",
}
