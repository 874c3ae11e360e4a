"""Train Stable-Baselines3 SAC on a synthmatch env through the native batched vector env.

Same runs, logs, checkpoints and evaluation as ``train_ppo.py``. The replay buffer holds
spectrogram observations (about 65 KB per transition at the default 64 x 63 mels), so its size
is modest by default; it is not saved in checkpoints, and a resumed run refills it.

    python experiments/train_sac.py --help
    python experiments/train_sac.py --env-id SynthMatch-Easy-v0 --total-timesteps 20000
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tyro

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.training import RunSettings, train


@dataclass
class Args:
    env_id: str = "SynthMatch-Easy-v0"
    """registered environment id (see README for the list)"""
    total_timesteps: int = 8192
    """environment steps to train for, summed over envs (a resumed run continues to this)"""
    num_envs: int = 8
    """parallel episodes, rendered as one batch"""
    seed: int = 0
    """seed of the envs (env i gets seed + i), the policy and torch"""
    device: str = "cpu"
    """device of envs and policy: cpu or cuda"""
    run_name: str | None = None
    """run directory name under log-dir (default: env id, algorithm, seed and time)"""
    log_dir: str = "runs"
    """parent directory of the runs"""
    checkpoint_every: int = 4096
    """steps between checkpoints (one is also written at the end and on Ctrl-C)"""
    media_every: int = 4096
    """steps between audio clips and spectrogram pictures in TensorBoard"""
    eval_targets: int = 64
    """held-out targets for the evaluation at the end"""
    resume: str | None = None
    """checkpoint to continue from (its run directory and step counter are kept)"""
    features_dim: int = 256
    """size of the spectrogram extractor's output"""
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
    run = RunSettings(**{k: v for k, v in asdict(args).items()
                         if k in RunSettings.__dataclass_fields__})
    sac = dict(buffer_size=args.buffer_size, learning_starts=args.learning_starts,
               batch_size=args.batch_size, train_freq=args.train_freq,
               gradient_steps=args.gradient_steps, learning_rate=args.learning_rate,
               gamma=args.gamma)
    train("sac", run, sac, asdict(args))


if __name__ == "__main__":
    main(tyro.cli(Args))
