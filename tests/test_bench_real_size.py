"""benchmarks/bench_real_size.py in its smoke mode (a tiny model, two questions): it runs radar_hf's scoring path
both ways and ends with the one line a script reads. No timing assertion: only the line's shape and the numbers
that do not depend on speed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real_size.py"
NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
LAST_LINE = re.compile(
    rf"config (\S+): parity {NUMBER}, speedup {NUMBER} \(limit {NUMBER}\), mfu {NUMBER}, peak {NUMBER}"
)


@pytest.mark.slow
def test_smoke_run_ends_with_the_summary_line():
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", "tiny-qwen2-vl", "--questions", "2", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]  # 1: some question went the per-candidate way
    lines = run.stdout.strip().splitlines()
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
