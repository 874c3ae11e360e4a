"""Train the gate between a prior trained on synthetic data and its fine-tuning by reward on
sounds without parameters (see synthmatch/agents/gate.py): the leaderboard's
``prior-rlft+gate`` sends each target to the prior the gate picks.

Everything lands in ``runs/gate/<run_name>/``: TensorBoard events, ``history.json`` (per
epoch: the loss and the share of each validation set routed right) and ``gate.pt``, which the
leaderboard takes with ``--gate``.

    python experiments/train_gate.py --help
    python experiments/train_gate.py --prior runs/prior/subtractive/prior.pt \\
        --finetuned runs/finetune/x/prior.pt --pool data/pool3/train --val-pool data/pool/val
    python experiments/train_gate.py --router-from runs/gate/x/gate.pt \\
        --finetuned runs/finetune/y/prior.pt --run-name y_gate   # same router, new prior
    tensorboard --logdir runs/gate
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from synthmatch.agents.gate import GateSettings, check_settings, repoint_gate, train_gate
from synthmatch.cli import run
from synthmatch.leaderboard.suites import SuiteError, load_suite


@dataclass
class Args(GateSettings):
    router_from: str | None = None
    """reuse this gate.pt's router (it reads only the base prior's log-mel) for --finetuned
    instead of training one; the new gate lands in <log-dir>/<run-name>/gate.pt"""


def main(settings: Args) -> None:
    if settings.router_from is not None:
        if not Path(settings.router_from).is_file():
            raise FileNotFoundError(f"--router-from: no gate at {settings.router_from}")
        if not Path(settings.finetuned).is_file():
            raise FileNotFoundError(f"--finetuned: no prior checkpoint at {settings.finetuned}")
        out = Path(settings.log_dir) / (settings.run_name or
                                        f"{Path(settings.finetuned).parent.name}_gate")
        if (out / "gate.pt").exists():
            raise ValueError(f"{out} already holds a gate; pick another --run-name")
        repoint_gate(settings.router_from, settings.finetuned, out / "gate.pt")
        print(f"Gate: {out / 'gate.pt'} (router of {settings.router_from})")
        return
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
    run(main, Args, "train_gate.py", errors=(SuiteError,))
