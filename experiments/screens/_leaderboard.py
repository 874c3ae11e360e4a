"""What the screens share: each patches one method in-process, then runs
``experiments/leaderboard.py`` with the arguments given after ``--`` (a helper module, not a
screen)."""

from __future__ import annotations

import argparse
import runpy
import sys


def add_leaderboard_args(parser: argparse.ArgumentParser) -> None:
    """Everything after the screen's own options goes to leaderboard.py."""
    parser.add_argument("leaderboard_args", nargs=argparse.REMAINDER,
                        help="-- then leaderboard.py's arguments")


def run_leaderboard(leaderboard_args: list[str]) -> None:
    """leaderboard.py in this process (so the screen's patch applies), with these arguments;
    a leading ``--`` is dropped."""
    if leaderboard_args[:1] == ["--"]:
        leaderboard_args = leaderboard_args[1:]
    sys.argv = ["leaderboard.py", *leaderboard_args]
    runpy.run_path("experiments/leaderboard.py", run_name="__main__")
