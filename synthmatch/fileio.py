"""Files written so that a crash or Ctrl-C never leaves a half-written file under the real name.

Every writer goes through a temporary name in the same directory and :func:`os.replace`,
which is atomic on POSIX and Windows when source and destination share a file system.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any


def load_weights(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain values only, so
    nothing from the file runs.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an empty, truncated or foreign file, or one with pickled objects; the
            message names the file (and, unlike torch's, never suggests
            ``weights_only=False``).
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile,
            ValueError, TypeError, AttributeError, ImportError):
        size = path.stat().st_size
        state = "empty" if size == 0 else f"{size} bytes"
        raise ValueError(f"{path} is not a readable {what} ({state}: truncated, damaged, not "
                         "made by synthmatch, or holding objects other than tensors)") from None


def file_stamp(path: str | Path) -> tuple[int, int]:
    """A file's modification time (ns) and size: a rewritten file changes them, so they key
    caches of what was read from it."""
    st = Path(path).stat()
    return st.st_mtime_ns, st.st_size


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: str | Path) -> str:
    """:func:`sha256_file`, read once per process while the file's :func:`file_stamp` stays
    (a leaderboard run hashes each checkpoint for its cache key and for the checks of the
    methods that pin one file to another)."""
    path = Path(path)
    return _cached_sha256(str(path.resolve()), file_stamp(path))


@functools.lru_cache(maxsize=64)
def _cached_sha256(path: str, stamp: tuple[int, int]) -> str:
    return sha256_file(path)


def temporary_name(path: Path, tag: str = "tmp") -> Path:
    """A hidden sibling of ``path`` to write before renaming: ``dir/.name.<tag>``."""
    return path.with_name(f".{path.name}.{tag}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def named_prior(meta: dict[str, Any], key: str, owner: Path | str, what: str) -> Path:
    """The prior that checkpoint ``owner`` names under ``key`` (with its sha256 under
    ``<key>_sha256``), refused if it is gone or has changed since ``what`` was trained on it.
    A shipped checkpoint (``names_relative``) names a file beside it."""
    path = Path(owner).parent / meta[key] if meta.get("names_relative") else Path(meta[key])
    if not path.is_file():
        raise FileNotFoundError(f"{owner} was trained on the prior at {path}, which is not "
                                "there")
    if cached_sha256(path) != meta[f"{key}_sha256"]:
        raise ValueError(f"{path} has changed since {owner} was trained on it; train {what} "
                         "again")
    return path
