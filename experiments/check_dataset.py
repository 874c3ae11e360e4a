"""Verify a dataset directory written by make_dataset.py: every shard opened and checked.

Checks rows, datasets, dtypes and shapes, attributes against ``dataset.json``, parameters in
``[0, 1]``, finite values, duplicate shards, leftover temporary files, missing shards, that
``splits.json`` lists every shard exactly once and that ``stats.json`` is there.

    python experiments/check_dataset.py --help
    python experiments/check_dataset.py data/subtractive

Exit status: 0 when the dataset is sound, 1 when a problem was found.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from synthmatch.data import check_dataset


@dataclass
class Args:
    """Check a sharded HDF5 dataset and print a per-shard summary."""

    root: tyro.conf.Positional[Path]
    """dataset directory (the --out of make_dataset.py)"""


def main(args: Args) -> int:
    report = check_dataset(args.root)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
