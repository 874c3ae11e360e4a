"""Train a critic that ranks a prior's proposals before they are rendered (the value function
of the one-step bandit view, learned from rewards alone; see synthmatch/agents/critic.py).

Everything lands in ``runs/critic/<run_name>/``: TensorBoard events, ``history.json`` (per
epoch: the loss and held-out figures) and ``critic.pt``, which the leaderboard takes with
``--critic`` (the ``prior+critic`` method).

    python experiments/train_critic.py --help
    python experiments/train_critic.py --prior runs/prior/subtractive/prior.pt --seed 0
    python experiments/train_critic.py --prior runs/finetune/x/prior.pt --pool data/pool/train
    tensorboard --logdir runs/critic
"""

from __future__ import annotations

import json

from synthmatch.agents.critic import CriticSettings, check_settings, train_critic
from synthmatch.cli import run
from synthmatch.leaderboard.suites import SuiteError, load_suite


def main(settings: CriticSettings) -> None:
    pool = None
    if settings.pool is not None:  # sounds without parameters (make_sound_pool.py)
        check_settings(settings)
        pool = load_suite(settings.pool).audio
    run_dir = train_critic(settings, pool)
    last = json.loads((run_dir / "history.json").read_text())[-1]
    print(f"Critic: {run_dir / 'critic.pt'}   TensorBoard: {run_dir}")
    print(f"Held-out targets: rank correlation {last['rank_correlation']:.3f}; median distance "
          f"of its first choice {last['first_choice']:.3f}, of a random proposal "
          f"{last['random_choice']:.3f}, of the most central {last['central_choice']:.3f}, of "
          f"the best {last['best']:.3f}")


if __name__ == "__main__":
    run(main, CriticSettings, "train_critic.py", errors=(SuiteError,))
