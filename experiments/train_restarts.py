"""Train a policy that decides when gradient descent from the prior's samples restarts (the
``prior+gradient+rl`` method; see synthmatch/agents/restarts.py), with SB3's PPO.

Everything lands in ``runs/restarts/<run_name>/``: ``config.json``, TensorBoard events,
``history.json`` (per episode: the median best distance and restarts per target) and
``policy.pt``, which the leaderboard takes with ``--restart-policy``.

    python experiments/train_restarts.py --help
    python experiments/train_restarts.py --prior runs/prior/subtractive/prior.pt --seed 0
    tensorboard --logdir runs/restarts
"""

from __future__ import annotations

import json

from synthmatch.agents.restarts import RestartSettings, train_restart_policy
from synthmatch.cli import run


def main(settings: RestartSettings) -> None:
    run_dir = train_restart_policy(settings)
    history = json.loads((run_dir / "history.json").read_text())
    first, last = history[0], history[-1]
    print(f"Policy: {run_dir / 'policy.pt'}   TensorBoard: {run_dir}")
    print(f"Median best distance after {settings.k + settings.episode_steps} renders: "
          f"{first['median_best_distance']:.3f} in the first episode, "
          f"{last['median_best_distance']:.3f} in the last; restarts per target "
          f"{first['restarts_per_target']:.1f} -> {last['restarts_per_target']:.1f}")


if __name__ == "__main__":
    run(main, RestartSettings, "train_restarts.py")
