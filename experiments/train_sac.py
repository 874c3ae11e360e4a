"""Train Stable-Baselines3 SAC on a synthmatch env through the native batched vector env.

Same runs, logs, checkpoints and evaluation as ``train_ppo.py``. The replay buffer holds
spectrogram observations (about 65 KB per transition at the default 64 x 63 mels), so its size
is modest by default; it is not saved in checkpoints, and a resumed run refills it.

    python experiments/train_sac.py --help
    python experiments/train_sac.py --env-id SynthMatch-Easy-v0 --total-timesteps 20000
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.training import RunSettings, train
from synthmatch.cli import given_flags, run


@dataclass
class Args(RunSettings):
    """The shared run settings (env, budget, seed, device, logging, checkpoints) and SAC's."""

    num_envs: int = 8
    """parallel episodes, rendered as one batch"""
    buffer_size: int = 20_000
    """replay buffer transitions (about 65 KB each)"""
    learning_starts: int = 1000
    """steps of random actions before learning"""
    batch_size: int = 256
    """minibatch size"""
    train_freq: int = 1
    """vector-env steps between gradient phases"""
    gradient_steps: int = 1
    """gradient steps per phase"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    gamma: float = 0.99
    """discount factor"""


def main(args: Args) -> None:
    sac = dict(buffer_size=args.buffer_size, learning_starts=args.learning_starts,
               batch_size=args.batch_size, train_freq=args.train_freq,
               gradient_steps=args.gradient_steps, learning_rate=args.learning_rate,
               gamma=args.gamma)
    train("sac", args, sac, given_flags(sys.argv[1:]))


if __name__ == "__main__":
    run(main, Args, "train_sac.py")
