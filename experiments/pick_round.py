"""Pick the round of fine-tuning runs (finetune_prior.py, one run per seed) to put on the
leaderboard, from their validation figures alone: the round with the lowest mean
validation-pool distance whose mean in-domain distance stays within --max-drift of the start.
Prints every round's figures (mean over the runs) and the pick.

The drift is measured against round 0, the run's starting checkpoint. For a run that
continues another fine-tuning run, that is not the prior trained on synthetic data alone: to
measure against that one, give both to interpolate_prior.py (``--base <first prior>
<chosen round> --alphas 0 1``).

    python experiments/pick_round.py --help
    python experiments/pick_round.py runs/finetune/ft_s0 runs/finetune/ft_s1 \\
        runs/finetune/ft_s2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from synthmatch.agents.prior_finetune import pick_round, rows_table
from synthmatch.cli import run


@dataclass
class Args:
    runs: Annotated[list[Path], tyro.conf.Positional] = field(default_factory=list)
    """fine-tuning run directories (each with history.json)"""
    val_k: int = 16
    """the runs' --val-k"""
    max_drift: float = 0.05
    """largest relative rise of the in-domain distance accepted"""
    domain_ks: list[int] = field(default_factory=list)
    """in-domain best-of-k figures that must stay within --max-drift (default: every one the
    runs logged)"""


def main(args: Args) -> None:
    if not args.runs:
        raise ValueError("give at least one run directory")
    histories = []
    for path in args.runs:
        if not (path / "history.json").is_file():
            raise FileNotFoundError(f"{path} has no history.json (not a finetune_prior.py run)")
        histories.append(json.loads((path / "history.json").read_text()))
    picked = pick_round(histories, args.val_k, args.max_drift, tuple(args.domain_ks) or None)
    print(f"Mean over {len(histories)} run(s); change against round 0")
    print(rows_table(histories))
    print(f"Picked round: {picked}" if picked is not None else
          f"No round keeps the in-domain distance within {args.max_drift:.0%} of the start")


if __name__ == "__main__":
    run(main, Args, "pick_round.py")
