"""Shrink a trained prior to float16 weights for shipping inside the package.

Writes a checkpoint that ``FlowPrior.load`` reads (weights are cast back to float32 on load)
at half the size, and checks it against the original: both sample the same random log-mels
from the same noise, and the largest difference of the presets is printed.

    python experiments/package_prior.py runs/prior/subtractive/prior.pt \
        --out synthmatch/app/data/prior-subtractive.pt
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

from synthmatch.agents.prior import FlowPrior
from synthmatch.cli import run
from synthmatch.fileio import temporary_name


@dataclass
class Args:
    prior: Annotated[str, tyro.conf.Positional]
    """prior.pt written by train_prior.py"""
    out: str
    """the float16 checkpoint to write"""
    check_items: int = 64
    """random log-mels sampled by both priors in the check"""


def main(args: Args) -> None:
    prior = FlowPrior.load(args.prior)
    ckpt = prior.checkpoint(source_sha256=hashlib.sha256(Path(args.prior).read_bytes())
                            .hexdigest())
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(out)
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    small = FlowPrior.load(out)
    cfg = prior.config
    gen = torch.Generator().manual_seed(0)
    mel = torch.tensor(cfg.mel_mean).reshape(-1, 1) + torch.tensor(cfg.mel_std).reshape(
        -1, 1) * torch.randn(args.check_items, *cfg.mel_shape, generator=gen)
    noise = torch.randn(args.check_items, cfg.num_params, generator=gen)
    with torch.no_grad():
        ref = prior.to_unit(prior.sample_flow(prior.embed(mel), noise, 16))
        got = small.to_unit(small.sample_flow(small.embed(mel), noise, 16))
    before = Path(args.prior).stat().st_size / 1e6
    diff = (ref - got).abs()
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB (from {before:.1f} MB); presets of "
          f"{args.check_items} random log-mels differ by at most {float(diff.max()):.2e} "
          f"(median {float(diff.median()):.2e})")


if __name__ == "__main__":
    run(main, Args, "package_prior.py")
