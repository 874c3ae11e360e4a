"""Screen: restarts that skip the prior's samples lying near an earlier start.

``prior+gradient-patience`` and ``prior-rlft+gate+gradient-patience`` start Adam from each
target's closest sample and restart from the next-closest whenever a run stalls. A narrow
prior's next-closest sample is often a near copy of a start already searched, so its run
ends where that one did. Here the starts are reordered before the search: after the closest,
each next start is the closest remaining sample at least ``--radius`` away (root mean square
over the normalised parameters) from every earlier start, or the closest remaining when none
is. ``--radius 0`` is the shipped order.

It runs ``experiments/leaderboard.py`` with that order in every restart search (the rows
keep their names; give them their own ``--out``).

Usage (from the repository root):
    python experiments/screens/diverse_restarts.py --help
    python experiments/screens/diverse_restarts.py --radius 0.1 -- --suites data/vtune/val \\
        --methods prior-rlft+gate+gradient-patience prior+gradient-patience --budgets 100 \\
        --prior synthmatch/app/data/prior-subtractive.pt \\
        --gate synthmatch/app/data/gate-subtractive.pt --no-progress --out runs/v23/r0.1
"""

from __future__ import annotations

import argparse


def diverse_order(starts, radius: float):
    """``(B, K)`` order of each target's ranked ``starts`` ``(B, K, P)`` (closest first):
    the first, then repeatedly the earliest-ranked remaining start whose RMS distance to
    every chosen one is at least ``radius`` (the earliest remaining if none is)."""
    import torch

    b, k, _ = starts.shape
    gap = torch.cdist(starts, starts) / starts.shape[2] ** 0.5  # (B, K, K) RMS distances
    rows = torch.arange(b)
    taken = torch.zeros(b, k, dtype=torch.bool)
    taken[:, 0] = True
    nearest = gap[:, 0].clone()  # each start's distance to the nearest chosen one
    order = [torch.zeros(b, dtype=torch.long)]
    rank = torch.arange(k).expand(b, k)
    for _ in range(1, k):
        far = ~taken & (nearest >= radius)
        fallback = ~taken
        pool = torch.where(far.any(dim=1, keepdim=True), far, fallback)
        pick = torch.where(pool, rank, k).argmin(dim=1)
        taken[rows, pick] = True
        nearest = torch.minimum(nearest, gap[rows, pick])
        order.append(pick)
    return torch.stack(order, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--radius", type=float, required=True,
                        help="smallest RMS distance (normalised parameters) from every "
                             "earlier start that a restart prefers (0: the shipped order)")
    parser.add_argument("--report", action="store_true",
                        help="print, per search (chunk of targets), the median RMS distance "
                             "between its two closest samples, the share of targets whose "
                             "second start the order changes, and at the end how many "
                             "restarts each target took")
    from _leaderboard import add_leaderboard_args, run_leaderboard

    add_leaderboard_args(parser)
    args = parser.parse_args()
    if not args.radius >= 0:
        parser.error(f"--radius must be >= 0, got {args.radius}")

    import torch

    from synthmatch.agents import restarts

    shipped, searches = restarts.RestartingAdam, []

    class DiverseRestartingAdam(shipped):
        def __init__(self, starts, start_distance, lr, redraw=None):
            order = diverse_order(starts.cpu(), args.radius).to(starts.device)
            if args.report:
                gap = (starts[:, 0] - starts[:, 1]).square().mean(dim=1).sqrt()
                print(f"starts: median RMS distance of the two closest "
                      f"{float(gap.median()):.3f}; second start changed for "
                      f"{float((order[:, 1] != 1).float().mean()):.0%} of targets")
            starts = starts.gather(1, order[..., None].expand_as(starts))
            start_distance = start_distance.gather(1, order.to(start_distance.device))
            super().__init__(starts, start_distance, lr, redraw=redraw)
            searches.append(self)

    restarts.RestartingAdam = DiverseRestartingAdam
    try:
        run_leaderboard(args.leaderboard_args)
    finally:  # leaderboard.py may end by SystemExit
        if args.report and searches:
            counts = torch.cat([s.restarts.cpu() for s in searches])
            print("targets by restarts taken (0, 1, 2, ...):", torch.bincount(counts).tolist())


if __name__ == "__main__":
    main()
