"""Interpolate the weights of a prior and its reward fine-tuning (WiSE-FT) and pick the weight
on validation sounds alone.

Fine-tuning on real-instrument sounds (finetune_prior.py) moves the prior away from its own
synth's presets. Each point on the straight line between the two sets of weights is a prior
too; this script measures a few of them, for each fine-tuned run (seed), on the same
validation figures finetune_prior.py logs (best-of-k distances on held-out synthetic targets
and on a validation pool), and picks the weight with pick_round's rule: the lowest mean
validation-pool distance whose in-domain distance stays within --max-drift of the starting
prior's at every k. Weight 0 is the starting prior, 1 the fine-tuned one.

Writes ``<out>/<run>/history.json`` (one row per weight) and ``<out>/<run>/prior_a<w>.pt`` for
every weight above 0 (each loads like any prior; the leaderboard takes one with
--finetuned-prior).

    python experiments/interpolate_prior.py --help
    python experiments/interpolate_prior.py --base runs/prior/subtractive/prior.pt \\
        runs/finetune/ft_s0/prior.pt runs/finetune/ft_s1/prior.pt --val-pool data/pool/val
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro
from tqdm.auto import tqdm

from synthmatch.agents.matching import prior_synth
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.prior_finetune import Validation, interpolate_priors, pick_round, rows_table
from synthmatch.agents.prior_training import save_checkpoint
from synthmatch.cli import run
from synthmatch.data import DatasetError
from synthmatch.devices import resolve_device
from synthmatch.fileio import write_json_atomic
from synthmatch.leaderboard.suites import SuiteError, load_suite


@dataclass
class Args:
    tuned: Annotated[list[Path], tyro.conf.Positional] = field(default_factory=list)
    """fine-tuned priors of one starting prior (one per seed), e.g. runs/finetune/ft_s0/prior.pt"""
    base: Path = Path("runs/prior/subtractive/prior.pt")
    """the prior they were fine-tuned from"""
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    """interpolation weights, from 0 (the base) upwards"""
    val_pool: Path = Path("data/pool/val")
    """validation sounds (make_sound_pool.py --split val), disjoint from the training pool"""
    in_domain_targets: int = 256
    """held-out synthetic targets (seeds 1,000,000...)"""
    ks: list[int] = field(default_factory=lambda: [1, 16])
    """samples per sound of the validation figures"""
    rank_k: int = 16
    """the validation-pool figure (one of --ks) that ranks the weights"""
    max_drift: float = 0.05
    """largest relative rise of the in-domain distance accepted, at every k"""
    out: Path = Path("runs/interpolate")
    """output directory (one subdirectory per fine-tuned run)"""
    device: str = "cpu"
    """cpu or cuda"""


def check(args: Args) -> None:
    if not args.tuned:
        raise ValueError("give at least one fine-tuned prior")
    if sorted(set(args.alphas)) != args.alphas or args.alphas[0] != 0.0 or args.alphas[-1] > 1:
        raise ValueError("--alphas must rise from 0 to at most 1 without repeats, got "
                         f"{args.alphas}")
    if not args.ks or min(args.ks) < 1 or args.in_domain_targets < 1:
        raise ValueError("--ks and --in-domain-targets must be >= 1")
    if args.rank_k not in args.ks:
        raise ValueError(f"--rank-k must be one of --ks {args.ks}, got {args.rank_k}")
    for path in (args.base, *args.tuned):
        if not path.is_file():
            raise FileNotFoundError(f"no prior checkpoint at {path}")
    if not (args.val_pool / "manifest.json").is_file():
        raise FileNotFoundError(f"--val-pool: no pool at {args.val_pool} (make one with "
                                "experiments/make_sound_pool.py)")
    names = [run_name(p) for p in args.tuned]
    if len(set(names)) != len(names):
        raise ValueError(f"the fine-tuned priors need distinct run names, got {names}")


def run_name(path: Path) -> str:
    """``runs/finetune/ft_s0/rounds/prior_3.pt`` -> ``ft_s0_prior_3``."""
    parent = path.parent.parent if path.parent.name == "rounds" else path.parent
    return f"{parent.name}_{path.stem}"


def main(args: Args) -> None:
    check(args)
    device = resolve_device(args.device)
    base = FlowPrior.load(args.base, device)
    synth = prior_synth(base, device)
    val = load_suite(args.val_pool)
    sources = [t.get("source", "") for t in val.manifest["targets"]]
    validation = Validation(synth, args.in_domain_targets, val.audio,
                            sources if all(sources) else None, tuple(args.ks))
    histories = []
    bar = tqdm(total=len(args.tuned) * (len(args.alphas) - 1) + 1, desc="interpolate",
               unit="prior")
    base_values = validation(base)  # weight 0 is the base itself, for every run
    bar.update()
    for path in args.tuned:
        tuned = FlowPrior.load(path, device)
        run_dir = args.out / run_name(path)
        rows = []
        for i, alpha in enumerate(args.alphas):
            if not alpha:  # weight 0 is --base itself: measured once above, nothing to save
                rows.append({"round": i, "alpha": alpha, **base_values})
            else:
                prior = interpolate_priors(base, tuned, alpha)
                rows.append({"round": i, "alpha": alpha, **validation(prior)})
                ckpt = prior.checkpoint(finetuned={**prior.finetuned, "interpolated": {
                    **prior.finetuned["interpolated"], "base": str(args.base),
                    "tuned": str(path)}})
                save_checkpoint(ckpt, run_dir / f"prior_a{alpha:g}.pt")
            write_json_atomic(run_dir / "history.json", rows)
            bar.update(alpha > 0)
        histories.append(rows)
    bar.close()
    picked = pick_round(histories, args.rank_k, args.max_drift, tuple(args.ks))
    print(f"Mean over {len(histories)} run(s); change against weight 0 (the base)")
    print(rows_table(histories, label="alpha"))
    if picked is None:
        print(f"No weight keeps the in-domain distance within {args.max_drift:.0%} of the "
              "base's at every k")
    else:
        print(f"Picked weight: {args.alphas[picked]:g} "
              f"({args.out}/<run>/prior_a{args.alphas[picked]:g}.pt)")


if __name__ == "__main__":
    run(main, Args, "interpolate_prior.py", errors=(DatasetError, SuiteError))
