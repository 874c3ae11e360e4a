"""Tune the leaderboard methods' settings on validation targets, never on a benchmark suite.

Validation targets are random presets of an env drawn from its held-out evaluation seeds
(``1_000_000 + i``, the targets ``evaluate.py`` uses), so they share the suites' distribution
but none of their seeds. Each setting runs once at the largest budget and is read at every
smaller one; the output is a table of median perceptual distances.

    python experiments/tune_methods.py --help
    python experiments/tune_methods.py --env-id SynthMatch-v0 --grid gradient-lr
    python experiments/tune_methods.py --grid prior-cmaes-sigma0 --prior runs/prior/x/prior.pt
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from synthmatch.agents.evaluation import HELD_OUT_SEED, held_out_presets
from synthmatch.devices import set_cpu_threads
from synthmatch.envs.registration import env_synth
from synthmatch.leaderboard.harness import Job, run_chunk
from synthmatch.leaderboard.methods.gradient import Gradient
from synthmatch.leaderboard.methods.prior import (
    PriorCentral,
    PriorCMAES,
    PriorCritic,
    PriorES,
    PriorGradient,
    PriorLatentCMAES,
    PriorLatentES,
    PriorRestarts,
)
from synthmatch.leaderboard.methods.rl import PriorGradientRL, PriorLatentRL, load_rl
from synthmatch.leaderboard.methods.search import CMAES
from synthmatch.leaderboard.suites import Suite


def _lr(args: Args) -> dict[str, float]:
    return {} if args.lr is None else {"lr": args.lr}


def _latent_rl(args: Args) -> list:
    """The untrained noise-space search on the first policy's prior, then each policy."""
    policies = [PriorLatentRL(p) for p in args.latent_policy]
    return [PriorLatentES(policies[0].prior_path), *policies]


GRIDS = {
    "gradient-lr": lambda a: [Gradient(lr=v) for v in (0.003, 0.01, 0.03, 0.1)],
    "cmaes-sigma0": lambda a: [CMAES(sigma0=v) for v in (0.1, 0.2, 0.3, 0.5)],
    "prior-cmaes-sigma0": lambda a: [PriorCMAES(a.prior, sigma0=v)
                                     for v in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)],
    "prior-gradient-lr": lambda a: [PriorGradient(a.prior, lr=v)
                                    for v in (0.001, 0.003, 0.01, 0.03)],
    "prior-es-sigma": lambda a: [PriorES(a.prior, sigma=v)
                                 for v in (0.002, 0.005, 0.01, 0.02)],
    "prior-latent-es-sigma": lambda a: [PriorLatentES(a.prior, sigma=v)
                                        for v in (0.1, 0.3, 0.5, 1.0)],
    "prior-latent-cmaes-sigma0": lambda a: [PriorLatentCMAES(a.prior, sigma=v)
                                            for v in (0.1, 0.3, 0.5, 1.0)],
    "prior-latent-cmaes-popsize": lambda a: [PriorLatentCMAES(a.prior, popsize=v)
                                             for v in (6, 10, None, 24)],
    "prior-latent-rl": _latent_rl,
    "prior-rl": lambda a: [load_rl(p) for p in a.rl_checkpoint],
    "prior-gradient-restarts": lambda a: [
        PriorGradient(a.prior, **_lr(a)),
        *(PriorRestarts(a.prior, patience=v, **_lr(a)) for v in (5, 10, 20)),
        *(PriorGradientRL(p) for p in a.restart_policy)],
    "prior-critic-proposals": lambda a: [
        *(PriorCritic(a.critic, proposals=v) for v in (64, 256, 1024)),
        PriorCentral(PriorCritic(a.critic).prior_path)],  # the untrained control
}


@dataclass
class Args:
    """Compare settings of one method on an env's held-out validation targets."""

    grid: str = "gradient-lr"
    """which setting to vary: gradient-lr, cmaes-sigma0, prior-cmaes-sigma0,
    prior-gradient-lr, prior-es-sigma, prior-latent-es-sigma, prior-latent-cmaes-sigma0,
    prior-latent-cmaes-popsize, prior-latent-rl (the untrained rule and each
    --latent-policy), prior-rl (each --rl-checkpoint), prior-critic-proposals (--critic) or
    prior-gradient-restarts (the patience rule, and each --restart-policy)"""
    env_id: str = "SynthMatch-v0"
    """env whose synth makes the targets and matches them"""
    targets: int = 32
    """validation targets (held-out seeds 1,000,000...)"""
    budgets: tuple[int, ...] = (16, 100)
    """renders per target at which results are read"""
    prior: Path | None = None
    """prior checkpoint, for the prior-* grids (prior-rl: each run's own)"""
    rl_checkpoint: tuple[Path, ...] = ()
    """refiners to compare (model.zip of train_ppo.py --accept improve), for --grid prior-rl"""
    restart_policy: tuple[Path, ...] = ()
    """restart policies to compare with the patience rule (policy.pt of train_restarts.py),
    for --grid prior-gradient-restarts"""
    latent_policy: tuple[Path, ...] = ()
    """proposal policies of the noise-space search (policy.pt of train_latent.py), for --grid
    prior-latent-rl (the untrained rule runs on the first one's prior)"""
    critic: Path | None = None
    """critic to tune (critic.pt of train_critic.py), for --grid prior-critic-proposals"""
    seed: int = 0
    """seed of the methods' random draws"""
    threads: int = 1
    """torch threads (as in leaderboard.py: results depend on the count)"""
    lr: float | None = None
    """Adam's step size of the patience rule and restarts every 100 renders, for --grid
    prior-gradient-restarts (default: the leaderboard's; a restart policy has its own)"""


def validation_targets(env_id: str, n: int) -> tuple[Suite, object]:
    synth = env_synth(env_id)
    u = held_out_presets(synth, n)
    with torch.no_grad():
        audio = synth.render(u)
    suite = Suite("validation", audio, [f"v{i:03d}" for i in range(n)], synth.sample_rate,
                  synth.probe.to_dict(), env_id, u, list(synth.params.names), {})
    return suite, synth


def main(args: Args) -> int:
    if args.grid not in GRIDS:
        print(f"tune_methods.py: error: unknown grid {args.grid!r}; known: {', '.join(GRIDS)}",
              file=sys.stderr)
        return 2
    if args.grid == "prior-rl" and not args.rl_checkpoint:
        print("tune_methods.py: error: --rl-checkpoint is needed for this grid", file=sys.stderr)
        return 2
    if args.grid == "prior-latent-rl" and not args.latent_policy:
        print("tune_methods.py: error: --latent-policy is needed for this grid", file=sys.stderr)
        return 2
    if args.grid == "prior-critic-proposals" and args.critic is None:
        print("tune_methods.py: error: --critic is needed for this grid", file=sys.stderr)
        return 2
    if (args.grid.startswith("prior")
            and args.grid not in ("prior-rl", "prior-latent-rl", "prior-critic-proposals")
            and args.prior is None):
        print("tune_methods.py: error: --prior is needed for this grid", file=sys.stderr)
        return 2
    try:
        set_cpu_threads(args.threads)
    except ValueError as err:
        print(f"tune_methods.py: error: {err}", file=sys.stderr)
        return 2
    suite, synth = validation_targets(args.env_id, args.targets)
    budgets = sorted(args.budgets)
    print(f"{args.targets} validation targets of {args.env_id} (seeds {HELD_OUT_SEED}...), "
          f"median perceptual distance")
    print("| setting | " + " | ".join(f"{b} renders" for b in budgets) + " |")
    print("|---|" + "---:|" * len(budgets))
    for method in GRIDS[args.grid](args):
        result = run_chunk(Job(suite, method, synth, budgets, args.seed), 0, suite)["budgets"]
        medians = [np.median([t["distance"] for t in result[str(b)]["targets"]])
                   for b in budgets]
        print(f"| {method.settings()} | " + " | ".join(f"{m:.3f}" for m in medians) + " |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
