"""Measure priors on the validation figures that finetune_prior.py logs after every round:
the median best-of-k distance on held-out synthetic targets of the prior's synth and on a
validation pool (per instrument too), and how far apart each sound's k samples lie (the mean
per-parameter standard deviation, ``spread_of_<k>``). Each row is one prior (at one sampling
temperature, the scale of the starting noise, and by one sampler), with its change against
the first. Nothing here reads a benchmark suite.

    python experiments/validate_priors.py --help
    python experiments/validate_priors.py runs/prior/subtractive/prior.pt \\
        runs/finetune/ft_s0/prior.pt --val-pool data/pool/val --only vital
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro
from tqdm.auto import tqdm

from synthmatch.agents.matching import prior_synth
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.prior_finetune import Validation, rows_table
from synthmatch.cli import run
from synthmatch.data import DatasetError
from synthmatch.devices import resolve_device
from synthmatch.leaderboard.suites import SuiteError, load_suite


@dataclass
class Args:
    priors: Annotated[list[Path], tyro.conf.Positional] = field(default_factory=list)
    """prior checkpoints of one synth (the first is the row the others are compared with)"""
    val_pool: Path = Path("data/pool/val")
    """validation sounds (make_sound_pool.py --split val)"""
    in_domain_targets: int = 64
    """held-out synthetic targets (seeds 1,000,000...)"""
    ks: list[int] = field(default_factory=lambda: [1, 16])
    """samples per sound of the figures"""
    temperatures: list[float] = field(default_factory=lambda: [1.0])
    """scales of the sampling noise, each measured for every prior (1: as trained, as the
    leaderboard samples)"""
    samplers: list[Literal["midpoint", "sde"]] = field(default_factory=lambda: ["midpoint"])
    """how samples are drawn, each measured for every prior: midpoint (the flow's ODE, as the
    leaderboard samples) or sde (the SDE with the same marginals, noise scale 0.7, 16
    Euler-Maruyama steps: the sampler policy-gradient fine-tuning trains)"""
    seed: int = 1
    """seed of the sampling noise (1: the draw finetune_prior.py's logs use; another seed
    shows how much the figures move between draws)"""
    only: str | None = None
    """keep the figures whose name contains this (e.g. vital, spread)"""
    device: str = "cpu"
    """cpu or cuda"""


def main(args: Args) -> None:
    if not args.priors:
        raise ValueError("give at least one prior checkpoint")
    if not args.ks or min(args.ks) < 1 or args.in_domain_targets < 1:
        raise ValueError("--ks and --in-domain-targets must be >= 1")
    if not args.temperatures or min(args.temperatures) < 0:
        raise ValueError("--temperatures must be >= 0")
    for path in args.priors:
        if not path.is_file():
            raise FileNotFoundError(f"no prior checkpoint at {path}")
    if not (args.val_pool / "manifest.json").is_file():
        raise FileNotFoundError(f"--val-pool: no pool at {args.val_pool} (make one with "
                                "experiments/make_sound_pool.py)")
    device = resolve_device(args.device)
    priors = [FlowPrior.load(path, device) for path in args.priors]
    synth = prior_synth(priors[0], device)
    if any(p.param_names != priors[0].param_names for p in priors):
        raise ValueError("the priors play different synths or parameters")
    val = load_suite(args.val_pool)
    sources = [t.get("source", "") for t in val.manifest["targets"]]
    validations = {(t, m): Validation(synth, args.in_domain_targets, val.audio,
                                      sources if all(sources) else None,
                                      tuple(sorted(set(args.ks))), temperature=t,
                                      seed=args.seed, method=m)
                   for t in args.temperatures for m in args.samplers}
    rows = []
    with tqdm(total=len(priors) * len(validations), desc="validate", unit="prior") as bar:
        for path, prior in zip(args.priors, priors, strict=True):
            for (t, m), validation in validations.items():
                values = validation(prior)
                label = str(path)
                if len(args.temperatures) > 1:
                    label += f" at {t:g}"
                if len(args.samplers) > 1:
                    label += f" by {m}"
                rows.append({"prior": label, **{k: v for k, v in values.items()
                                                if args.only is None or args.only in k}})
                bar.update()
    if len(rows[0]) == 1:
        raise ValueError(f"--only {args.only!r} matches no figure")
    print(f"Change against {args.priors[0]}")
    print(rows_table([rows], label="prior"))


if __name__ == "__main__":
    run(main, Args, "validate_priors.py", errors=(DatasetError, SuiteError))
