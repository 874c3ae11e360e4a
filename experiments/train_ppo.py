"""Train Stable-Baselines3 PPO on a synthmatch env through the native batched vector env.

All envs of a run are rendered and scored as one torch batch (``--device cuda`` puts envs and
policy on the GPU). The policy reads the target and current spectrograms with a small CNN
(``SpectrogramExtractor``). Everything lands in ``runs/<run_name>/``: TensorBoard events,
``checkpoints/latest.zip``, ``model.zip`` and ``eval.json`` (held-out evaluation).

    python experiments/train_ppo.py --help
    python experiments/train_ppo.py --env-id SynthMatch-v0 --total-timesteps 200000
    python experiments/train_ppo.py --resume runs/<run_name>/checkpoints/latest.zip
    tensorboard --logdir runs
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.training import RunSettings, train
from synthmatch.cli import given_flags, run


@dataclass
class Args(RunSettings):
    """The shared run settings (env, budget, seed, device, logging, checkpoints) and PPO's."""

    n_steps: int = 64
    """steps per env between PPO updates"""
    batch_size: int = 256
    """PPO minibatch size"""
    n_epochs: int = 5
    """PPO epochs per update (the CNN updates, not the envs, dominate training time)"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""
    ent_coef: float = 0.0
    """entropy bonus"""
    log_std_init: float = 0.0
    """initial log standard deviation of the Gaussian policy (lower explores less: useful
    when episodes start close to the target, as with --warm-start)"""


def main(args: Args) -> None:
    # log_std_init reaches the policy through training.policy_kwargs (from the run's settings).
    ppo = dict(n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
               learning_rate=args.learning_rate, gamma=args.gamma, ent_coef=args.ent_coef)
    train("ppo", args, ppo, given_flags(sys.argv[1:]))


if __name__ == "__main__":
    run(main, Args, "train_ppo.py")
