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

from dataclasses import asdict, dataclass

import tyro

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.training import RunSettings, train


@dataclass
class Args:
    env_id: str = "SynthMatch-Easy-v0"
    """registered environment id (see README for the list)"""
    total_timesteps: int = 60_000
    """environment steps to train for, summed over envs (a resumed run continues to this);
    the default takes about 5 minutes on a 2-core CPU"""
    num_envs: int = 16
    """parallel episodes, rendered as one batch (16 suits a 2-core CPU)"""
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


def main(args: Args) -> None:
    run = RunSettings(**{k: v for k, v in asdict(args).items()
                         if k in RunSettings.__dataclass_fields__})
    ppo = dict(n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
               learning_rate=args.learning_rate, gamma=args.gamma, ent_coef=args.ent_coef)
    train("ppo", run, ppo, asdict(args))


if __name__ == "__main__":
    main(tyro.cli(Args))
