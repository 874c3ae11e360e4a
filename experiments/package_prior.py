"""Shrink a trained prior to float16 weights for shipping inside the package.

Writes a checkpoint that ``FlowPrior.load`` reads (weights are cast back to float32 on load)
at half the size, and checks it against the original: both sample the same random log-mels
from the same noise, and the largest difference of the presets is printed.

    python experiments/package_prior.py runs/prior/subtractive/prior.pt \
        --out synthmatch/app/data/prior-subtractive.pt
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import tyro

from synthmatch.agents.packaging import package_prior
from synthmatch.cli import run


@dataclass
class Args:
    prior: Annotated[str, tyro.conf.Positional]
    """prior.pt written by train_prior.py"""
    out: str
    """the float16 checkpoint to write"""
    check_items: int = 64
    """random log-mels sampled by both priors in the check"""


def main(args: Args) -> None:
    print(package_prior(args.prior, args.out, args.check_items))


if __name__ == "__main__":
    run(main, Args, "package_prior.py")
