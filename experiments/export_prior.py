"""Export a trained prior to ONNX (encoder and velocity network) and check it against torch.

Writes ``encoder.onnx``, ``velocity.onnx`` and ``prior.json`` to ``--out``, then samples the
same targets with torch and with ONNX Runtime from the same noise and prints the largest
differences (embedding and presets).

    python experiments/export_prior.py runs/prior/<run_name>/prior.pt --out prior_onnx
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import tyro

from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.prior_export import OnnxPrior, export_onnx


@dataclass
class Args:
    prior: Annotated[str, tyro.conf.Positional]
    """prior.pt (or checkpoints/latest.pt) written by train_prior.py"""
    out: str = "prior_onnx"
    """output directory"""
    steps: int = 16
    """ODE steps of the parity check"""
    check_items: int = 8
    """random log-mels sampled by both runtimes in the parity check"""


def main(args: Args) -> None:
    prior = FlowPrior.load(args.prior)
    folder = export_onnx(prior, args.out)
    onnx_prior = OnnxPrior(folder)
    gen = torch.Generator().manual_seed(0)
    cfg = prior.config
    mel = torch.tensor(cfg.mel_mean).reshape(-1, 1) + torch.tensor(cfg.mel_std).reshape(
        -1, 1) * torch.randn(args.check_items, *cfg.mel_shape, generator=gen)
    noise = torch.randn(args.check_items, cfg.num_params, generator=gen)
    with torch.no_grad():
        emb = prior.embed(mel)
        ref = prior.to_unit(prior.sample_flow(emb, noise, args.steps)).numpy()
    emb_onnx = onnx_prior.embed(mel.numpy())
    got = onnx_prior.to_unit(onnx_prior.integrate(emb_onnx, noise.numpy(), args.steps))
    print(f"Exported to {folder}/ (encoder.onnx, velocity.onnx, prior.json)")
    print(f"Parity on {args.check_items} random log-mels: embedding max |diff| "
          f"{np.abs(emb.numpy() - emb_onnx).max():.2e}, presets max |diff| "
          f"{np.abs(ref - got).max():.2e}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
