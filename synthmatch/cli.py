"""The command-line contract every script keeps: a user's mistake is one line on stderr and
exit code 2, never a traceback (set ``SYNTHMATCH_DEBUG=1`` to see one); Ctrl-C is exit code
130."""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

import tyro

A = TypeVar("A")

# What a user's mistake raises: bad values, missing or unreadable files, unknown names.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
    PermissionError, zipfile.BadZipFile, EOFError,
)


def given_flags(argv: Sequence[str]) -> set[str]:
    """Names of the fields set on the command line (``--num-envs 8``, ``--num-envs=8``, and
    tyro's ``--no-progress`` for the boolean ``progress``)."""
    names = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    return names | {n[3:] for n in names if n.startswith("no_")}


def require_counts(settings: object, *flags: str) -> None:
    """Refuse a count below 1: raise ``ValueError`` naming the first such field of
    ``settings`` as its command-line flag (``num_envs`` -> ``--num-envs``)."""
    for flag in flags:
        value = getattr(settings, flag)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


def fail(prog: str, message: object) -> NoReturn:
    """Print ``prog: error: message`` to stderr and exit with code 2."""
    if isinstance(message, KeyError) and message.args:
        message = message.args[0]  # KeyError's str() adds quotes
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(main: Callable[[A], int | None], args_type: type[A], prog: str,
        errors: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """Parse ``args_type`` with tyro (``--help`` included), run ``main`` and exit: 0 (or what
    ``main`` returns), 2 with one line for a user's mistake, 130 on Ctrl-C."""
    import gymnasium

    args = tyro.cli(args_type)
    try:
        code = main(args)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (*USER_ERRORS, gymnasium.error.Error, *errors) as err:
        if os.environ.get("SYNTHMATCH_DEBUG"):
            raise  # the traceback, for reporting a bug
        fail(prog, err)
    raise SystemExit(code or 0)
