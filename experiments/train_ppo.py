"""Train Stable-Baselines3 PPO on a synthmatch environment through the native vector env.

All envs are stepped as one torch batch (``--device cuda`` puts envs and policy on the GPU).
TensorBoard logs go to ``runs/<run_name>``; the trained policy to ``runs/<run_name>/model.zip``.

    python experiments/train_ppo.py --help
    python experiments/train_ppo.py --env-id SynthMatch-Easy-v0 --total-timesteps 50000
    tensorboard --logdir runs
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import tyro
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.envs import make_sb3_vec_env


@dataclass
class Args:
    env_id: str = "SynthMatch-Easy-v0"
    """registered environment id (see README for the list)"""
    total_timesteps: int = 8192
    """environment steps to train for (summed over all envs)"""
    num_envs: int = 16
    """parallel episodes, rendered as one batch"""
    seed: int = 0
    """seed for the envs, the policy and torch"""
    device: str = "cpu"
    """device for envs and policy: cpu or cuda"""
    n_steps: int = 64
    """steps per env between PPO updates"""
    batch_size: int = 256
    """PPO minibatch size"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    run_name: str | None = None
    """name of the run directory under runs/ (default: env-id, seed and time)"""
    log_dir: str = "runs"
    """parent directory of TensorBoard runs"""


def main(args: Args) -> None:
    run_name = args.run_name or f"{args.env_id}__ppo__{args.seed}__{int(time.time())}"

    # Seeding: numpy and torch globals, env i with seed + i, SB3's own generators.
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    vec_env = VecMonitor(make_sb3_vec_env(args.env_id, num_envs=args.num_envs, seed=args.seed,
                                          device=args.device))
    model = PPO("MultiInputPolicy", vec_env, n_steps=args.n_steps, batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=args.seed, device=args.device,
                tensorboard_log=args.log_dir, verbose=0)
    model.set_logger(_logger(args, run_name))
    model.learn(total_timesteps=args.total_timesteps, progress_bar=True)
    path = f"{args.log_dir}/{run_name}/model.zip"
    model.save(path)
    print(f"TensorBoard logs: {args.log_dir}/{run_name}   (tensorboard --logdir {args.log_dir})")
    print(f"Policy: {path}")


def _logger(args: Args, run_name: str):
    """An SB3 logger writing TensorBoard events to runs/<run_name>, hyper-parameters as text."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat, configure

    logger = configure(f"{args.log_dir}/{run_name}", ["tensorboard"])
    for fmt in logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            table = "|param|value|\n|-|-|\n" + "\n".join(
                f"|{k}|{v}|" for k, v in asdict(args).items())
            fmt.writer.add_text("hyperparameters", table)
            fmt.writer.add_text("args_json", json.dumps(asdict(args)))
    return logger


if __name__ == "__main__":
    main(tyro.cli(Args))
