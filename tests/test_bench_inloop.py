"""Smoke test of `benchmarks/bench_inloop.py` in its fast mode (one small task, two calls, in this process): it runs,
prints its table, and the repeated call gives the first call's scores. It asserts no timing (the script measures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # ~5 s in a session that imported lmms-eval already, ~12 s alone
BENCH = Path(__file__).parent.parent / "benchmarks" / "bench_inloop.py"


def test_bench_inloop_runs_in_fast_mode(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_inloop", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--fast", "--work", str(tmp_path / "work")]) == 0  # 0: every call's scores equal
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[0] for row in rows] == ["1", "2"] and all("same" in row for row in rows)
    assert "wall/fwd" in out and "prepared questions kept across calls" in out
