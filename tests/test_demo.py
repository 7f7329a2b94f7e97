"""`radar-tasks demo`, as a new user runs it: progress and the table on the terminal, lmms-eval's log in a file."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_is_quiet_and_keeps_its_log(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "radar_tasks.cli", "demo", "--out", str(out), "--tasks", "radar_wiki_animal"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) < 20 and any(line.startswith("wiki_animal ") for line in lines), proc.stdout
    log = out / "lmms_eval.log"
    assert f"its log: {log}" in proc.stdout
    assert "Selected Tasks" in log.read_text() and "Selected Tasks" not in proc.stdout + proc.stderr
    assert "scoring: 4/4 questions" in proc.stderr
