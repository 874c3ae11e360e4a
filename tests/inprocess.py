"""Run a script or the console command inside the test's own interpreter.

A subprocess pays Python's and torch's start-up (2 to 3 s of a CI core) before it parses a
flag. The checks that a script answers ``--help`` and turns a user's mistake into one line
on stderr with exit code 2 are many and end within a second of that, so they run here: the
same module run as ``__main__`` (``runpy``), the same argument parsing, the same error
handling in :mod:`synthmatch.cli`, the same exit code. Runs that do real work, start worker
processes or must prove a fresh interpreter stay subprocesses.
"""

from __future__ import annotations

import io
import os
import runpy
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


@dataclass
class Result:
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have returned."""

    returncode: int
    stdout: str
    stderr: str


def run_in_process(target: str | Path | Callable[[list[str]], int | None], *args,
                   cwd: str | Path = ROOT) -> Result:
    """Run ``experiments/<target>`` (a script name or path) as ``__main__`` with ``args``,
    or call ``target(argv)`` (a console entry point such as ``synthmatch.app.cli.main``);
    capture its output and exit code. It runs in ``cwd`` (the repository's root, as the
    scripts' subprocesses do); ``sys.argv``, ``sys.path``, the working directory and torch's
    thread count are restored afterwards, whatever the run set."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_path, threads = sys.argv, list(sys.path), torch.get_num_threads()
    saved_cwd = os.getcwd()
    code: int | str | None = 0
    try:
        os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            if callable(target):
                code = target(argv) or 0
            else:
                script = Path(target) if Path(target).is_absolute() else EXPERIMENTS / target
                sys.argv = [str(script), *argv]
                sys.path.insert(0, str(script.parent))  # as `python script.py` does
                runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
        torch.set_num_threads(threads)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message") prints it and exits with 1
        err.write(f"{code}\n")
        code = 1
    return Result(code, out.getvalue(), err.getvalue())
