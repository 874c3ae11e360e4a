"""Files written so that a crash or Ctrl-C never leaves a half-written file under the real name.

Every writer goes through a temporary name in the same directory and :func:`os.replace`,
which is atomic on POSIX and Windows when source and destination share a file system.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
