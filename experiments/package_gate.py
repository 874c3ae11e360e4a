"""Ship a gate and the two priors it routes between inside the package, so that
``synthmatch match`` can run ``prior-rlft+gate`` and ``prior-rlft+gate+gradient-patience``.

Writes ``prior-<stem>.pt`` (the synthetic-data prior in float16; kept when it is already the
float16 copy of the gate's), ``prior-rlft-<stem>.pt`` (the fine-tuned prior in float16) and
``gate-<stem>.pt`` (naming both by file name and sha256), and prints how far each prior's
presets moved in float16.

    python experiments/package_gate.py runs/v4/more_gate_s0/gate.pt \\
        --out-dir synthmatch/app/data --stem subtractive
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import tyro

from synthmatch.agents.packaging import package_gate
from synthmatch.cli import run


@dataclass
class Args:
    gate: Annotated[str, tyro.conf.Positional]
    """gate.pt written by train_gate.py"""
    out_dir: str = "synthmatch/app/data"
    """where the three files go"""
    stem: str = "subtractive"
    """the files' common name: prior-<stem>.pt, prior-rlft-<stem>.pt, gate-<stem>.pt"""
    check_items: int = 64
    """random log-mels sampled by each prior and its float16 copy in the check"""


def main(args: Args) -> None:
    for line in package_gate(args.gate, args.out_dir, args.stem, args.check_items):
        print(line)


if __name__ == "__main__":
    run(main, Args, "package_gate.py")
