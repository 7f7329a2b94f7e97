"""The `radar-tasks` command line: every argument explained, usage errors on one line."""

from __future__ import annotations

import argparse
import subprocess
import sys

from radar_tasks.cli import build_parser


def _actions(parser, path="radar-tasks"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_argument_has_help():
    missing = [f"{path} {a.dest}" for path, a in _actions(build_parser()) if not a.help]
    assert not missing


def test_usage_errors_are_one_line(tmp_path):
    for argv, expected in (
        (["tiny-model", str(tmp_path / "m"), "--arch", "foo"], "invalid choice: 'foo'"),
        (["check-data", str(tmp_path), "--subset", "radar_nothing"], "neither a subset"),
    ):
        proc = subprocess.run([sys.executable, "-m", "radar_tasks.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr and "Traceback" not in proc.stderr
