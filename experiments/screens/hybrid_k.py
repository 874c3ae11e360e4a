"""Screen: how many prior samples a search draws before Adam starts, per prior.

``prior+gradient-patience`` and ``prior-rlft+gate+gradient-patience`` draw the best of 16
samples (``HYBRID_K``) and spend the rest of the budget on Adam from them. 16 was chosen for the
synthetic-data prior on synthetic targets. A prior fine-tuned on sounds of other instruments
draws closer samples there, so it may be worth drawing more of them before searching. Part 2
of issue 13 compares the two priors at the same renders; this asks whether each prior's own
best split changes that comparison.

It runs ``experiments/leaderboard.py`` with ``HYBRID_K`` replaced for every method built on it
(the rows keep their names, and their settings record the ``k``; give them their own ``--out``).

Usage (from the repository root):
    python experiments/screens/hybrid_k.py --help
    python experiments/screens/hybrid_k.py --k 32 -- --suites data/vtune/val \\
        --methods prior-rlft+gate+gradient-patience prior+gradient-patience --budgets 100 \\
        --prior synthmatch/app/data/prior-subtractive.pt \\
        --gate synthmatch/app/data/gate-subtractive.pt --no-progress --out runs/v21/k32
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, required=True,
                        help="samples drawn before the search starts (the shipped 16)")
    from _leaderboard import add_leaderboard_args, run_leaderboard

    add_leaderboard_args(parser)
    args = parser.parse_args()
    if args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    from synthmatch.leaderboard.methods import prior

    prior.HYBRID_K = args.k
    run_leaderboard(args.leaderboard_args)


if __name__ == "__main__":
    main()
