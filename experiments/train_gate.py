"""Train the gate between a prior trained on synthetic data and its fine-tuning by reward on
sounds without parameters (see synthmatch/agents/gate.py): the leaderboard's
``prior-rlft+gate`` sends each target to the prior the gate picks.

Everything lands in ``runs/gate/<run_name>/``: TensorBoard events, ``history.json`` (per
epoch: the loss and the share of each validation set routed right) and ``gate.pt``, which the
leaderboard takes with ``--gate``.

    python experiments/train_gate.py --help
    python experiments/train_gate.py --prior runs/prior/subtractive/prior.pt \\
        --finetuned runs/finetune/x/prior.pt --pool data/pool3/train --val-pool data/pool/val
    tensorboard --logdir runs/gate
"""

from __future__ import annotations

import json

from synthmatch.agents.gate import GateSettings, check_settings, train_gate
from synthmatch.cli import run
from synthmatch.leaderboard.suites import SuiteError, load_suite


def main(settings: GateSettings) -> None:
    check_settings(settings)
    pool = load_suite(settings.pool).audio
    val = load_suite(settings.val_pool).audio if settings.val_pool else None
    run_dir = train_gate(settings, pool, val)
    last = json.loads((run_dir / "history.json").read_text())[-1]
    shares = ", ".join(f"{key.removesuffix('_routed_right').replace('_', ' ')} "
                       f"{value:.1%}" for key, value in last.items() if key.endswith("right"))
    print(f"Gate: {run_dir / 'gate.pt'}   TensorBoard: {run_dir}")
    print(f"Routed right: {shares}")


if __name__ == "__main__":
    run(main, GateSettings, "train_gate.py", errors=(SuiteError,))
