"""Train a policy that proposes the steps of a search in the prior's noise space (the
``prior+latent-rl`` method; see synthmatch/agents/latent.py), with SB3's PPO.

Everything lands in ``runs/latent/<run_name>/``: ``config.json``, TensorBoard events,
``history.json`` (per episode: the median best distance and the policy's mean step scale)
and ``policy.pt``, which the leaderboard takes with ``--latent-policy``.

    python experiments/train_latent.py --help
    python experiments/train_latent.py --prior runs/prior/subtractive/prior.pt --seed 0
    tensorboard --logdir runs/latent
"""

from __future__ import annotations

import json

from synthmatch.agents.latent import LatentSettings, train_latent_policy
from synthmatch.cli import run


def main(settings: LatentSettings) -> None:
    run_dir = train_latent_policy(settings)
    history = json.loads((run_dir / "history.json").read_text())
    first, last = history[0], history[-1]
    print(f"Policy: {run_dir / 'policy.pt'}   TensorBoard: {run_dir}")
    print(f"Median best distance after {settings.k + settings.episode_steps} renders: "
          f"{first['median_best_distance']:.3f} in the first episode, "
          f"{last['median_best_distance']:.3f} in the last; step scale "
          f"{first['step_scale']:.3f} -> {last['step_scale']:.3f}")


if __name__ == "__main__":
    run(main, LatentSettings, "train_latent.py")
