"""Screen: SAC instead of PPO for the steps of the search in the prior's noise space.

Not a shipped method: the seventeenth session's screen (docs/results.md), kept so its figures
can be made again. ``train`` runs SB3's SAC on the env ``experiments/train_latent.py`` trains
PPO on, its actor starting as the untrained rule (step ``3 tanh(0.1 eps)``, about
``0.3 eps``). ``eval`` runs ``experiments/leaderboard.py`` with ``prior+latent-es``'s steps
drawn from a trained actor, with the task's normals.

Usage (from the repository root):
    python experiments/screens/sac_latent.py train --seed 0 --timesteps 200000 \\
        --out runs/v17/sac_s0 [--ent-coef auto_0.001]
    python experiments/screens/sac_latent.py eval --model runs/v17/sac_s0/model.zip \\
        -- <leaderboard.py arguments>
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from synthmatch.agents.latent import SIGMA, STEP_BOUND, LatentEnv
from synthmatch.agents.matching import prior_synth
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.search_env import EpisodeLog

PRIOR = "checkpoints/torchsynth-medium/prior-torchsynth-medium.pt"


def train(args: argparse.Namespace) -> None:
    from stable_baselines3 import SAC
    from stable_baselines3.common.vec_env import VecMonitor

    args.out.mkdir(parents=True, exist_ok=True)
    prior = FlowPrior.load(args.prior, "cpu")
    env = LatentEnv(prior_synth(prior, "cpu"), prior, 64, 16, 84, args.seed)
    model = SAC("MlpPolicy", VecMonitor(env), learning_starts=0, batch_size=256, gamma=0.98,
                ent_coef=args.ent_coef, buffer_size=200_000,
                policy_kwargs={"net_arch": [256, 256]}, seed=args.seed,
                tensorboard_log=str(args.out), verbose=0)
    actor = model.actor
    with torch.no_grad():  # start as the untrained rule
        actor.mu.weight.zero_()
        actor.mu.bias.zero_()
        actor.log_std.weight.zero_()
        actor.log_std.bias.fill_(math.log(SIGMA / STEP_BOUND))

    def ent_coef() -> float:
        return float(torch.exp(model.log_ent_coef.detach()).item())

    model.learn(args.timesteps, callback=EpisodeLog(args.out, ent_coef=ent_coef),
                tb_log_name="sac", progress_bar=True)
    model.save(args.out / "model.zip")


def evaluate(args: argparse.Namespace) -> None:
    from _leaderboard import run_leaderboard
    from stable_baselines3 import SAC

    from synthmatch.leaderboard.methods.prior import PriorLatentES

    actor = SAC.load(args.model, device="cpu").actor.eval()

    def step(self, search, generator):
        with torch.no_grad():
            mean, log_std, _ = actor.get_action_dist_params(search.observation())
            eps = torch.randn(mean.shape, generator=generator)
            return STEP_BOUND * torch.tanh(mean + log_std.exp() * eps)

    PriorLatentES.step = step
    run_leaderboard(args.leaderboard_args)


def main() -> None:
    from _leaderboard import add_leaderboard_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train SAC's proposal policy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--timesteps", type=int, default=200_000, help="renders to train on")
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--ent-coef", default="auto", help="SB3's ent_coef (auto starts at 1.0)")
    t.add_argument("--prior", default=PRIOR)
    e = sub.add_parser("eval", help="leaderboard.py with the trained actor's steps")
    e.add_argument("--model", type=Path, required=True, help="model.zip of train")
    add_leaderboard_args(e)
    args = parser.parse_args()
    if args.command == "train":
        train(args)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
