"""Ship what ``synthmatch match`` runs beyond the prior, inside the package: a gate with the
two priors it routes between (``prior-rlft+gate`` and ``prior-rlft+gate+gradient-patience``),
and a restart policy (``prior+gradient+rl``).

Writes ``prior-<stem>.pt`` (the synthetic-data prior in float16, unless it is already the
float16 copy of the one named), ``prior-rlft-<stem>.pt`` (the fine-tuned prior in float16)
and ``gate-<stem>.pt`` for ``--gate``, ``restarts-<stem>.pt`` for ``--restart-policy``. Each
names its priors by file name and sha256. Prints how far each prior's presets moved in
float16.

    python experiments/package_match.py --gate runs/v4/more_gate_s0/gate.pt \\
        --restart-policy runs/restarts/sub_s0/policy.pt --out-dir synthmatch/app/data
"""

from __future__ import annotations

from dataclasses import dataclass

from synthmatch.agents.packaging import package_gate, package_restart_policy
from synthmatch.cli import run


@dataclass
class Args:
    gate: str | None = None
    """gate.pt written by train_gate.py"""
    restart_policy: str | None = None
    """policy.pt written by train_restarts.py"""
    out_dir: str = "synthmatch/app/data"
    """where the files go"""
    stem: str = "subtractive"
    """the files' common name: prior-<stem>.pt, prior-rlft-<stem>.pt, gate-<stem>.pt,
    restarts-<stem>.pt"""
    check_items: int = 64
    """random log-mels sampled by each prior and its float16 copy in the check"""


def main(args: Args) -> None:
    if args.gate is None and args.restart_policy is None:
        raise ValueError("give --gate, --restart-policy or both")
    lines = []
    if args.gate is not None:
        lines += package_gate(args.gate, args.out_dir, args.stem, args.check_items)
    if args.restart_policy is not None:
        lines += package_restart_policy(args.restart_policy, args.out_dir, args.stem,
                                        args.check_items)
    for line in lines:
        print(line)


if __name__ == "__main__":
    run(main, Args, "package_match.py")
