"""Compare methods on the same suite targets, paired: the relative change of each method's
median distance against a base method's, with a paired bootstrap 95% interval. Two methods
scored on the same targets share each target's difficulty; pairing removes it, so the
interval answers "is B better than A on this suite", which two separate intervals of the
medians cannot.

Each run is ``DIR:METHOD``, DIR an ``--out`` of experiments/leaderboard.py (its JSON files)
and METHOD a method in it; the first is the base. Runs of one method on other checkpoints
(seeds) live in other output directories. ``DIR:best-found`` is, for each target, the lowest
distance any method in DIR reached at any budget (``DIR1,DIR2:best-found``: in any of them):
what a method would have to match to equal everything tried there (a bound from above on the
synth's best, not the best itself).

    python experiments/compare_methods.py --help
    python experiments/compare_methods.py docs/leaderboard:prior runs/lb_s0:prior-rlft \\
        runs/lb_s1:prior-rlft --suites bench-v1/subtractive-id --budgets 1 16 100
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import tyro

from synthmatch.cli import run
from synthmatch.leaderboard.metrics import median_change_ci
from synthmatch.leaderboard.report import results_path
from synthmatch.leaderboard.suites import suite_dir

BEST_FOUND = "best-found"  # the METHOD of a DIR:METHOD run that takes every method's best


@dataclass
class Args:
    runs: Annotated[list[str], tyro.conf.Positional] = field(default_factory=list)
    """DIR:METHOD for each run, the base first (METHOD best-found: each target's lowest
    distance over every method and budget in DIR, or in DIR1,DIR2,...)"""
    suites: list[str] = field(default_factory=lambda: ["bench-v1/subtractive-id"])
    """suites to compare on"""
    budgets: list[int] = field(default_factory=lambda: [1, 16, 100])
    """renders per target"""
    seed: int = 0
    """seed of the bootstrap resampling"""
    source: str | None = None
    """compare only the targets of this source in the suite's manifest (vital, Nekobi, Kars:
    the instruments of a sound pool given as a suite directory)"""


def manifest(suite: str) -> dict:
    """The manifest of ``suite`` (a published name or a suite directory)."""
    return json.loads((suite_dir(suite) / "manifest.json").read_text())


def distances(run_: str, suite: str, budget: int) -> dict[str, float]:
    """Target name -> distance of ``DIR:METHOD`` on ``suite`` at ``budget``; for
    ``DIR[,DIR...]:best-found``, each target's lowest over every cell of every DIR."""
    directories, _, method = run_.rpartition(":")
    if not directories or not method:
        raise ValueError(f"a run is DIR:METHOD, got {run_!r}")
    if method != BEST_FOUND and "," in directories:
        raise ValueError(f"only {BEST_FOUND} reads several directories, got {run_!r}")
    best: dict[str, float] = {}
    for directory in directories.split(","):
        path = results_path(directory, manifest(suite)["name"])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no leaderboard results for {suite} in {directory}")
        summaries = json.loads(path.read_text())["summaries"]
        cells = [s for s in summaries if method == BEST_FOUND
                 or (s["method"] == method and s["budget"] == budget)]
        if not cells:
            raise ValueError(f"{path} has no {method} at {budget} renders")
        if any("target_distances" not in cell for cell in cells):
            raise ValueError(f"{path} predates per-target results: run its leaderboard.py "
                             "command again (its cache makes that quick)")
        for cell in cells:
            for name, d in cell["target_distances"].items():
                best[name] = min(d, best.get(name, float("inf")))
    return best


def main(args: Args) -> None:
    if len(args.runs) < 2:
        raise ValueError("give a base run and at least one other, each as DIR:METHOD")
    print(f"Change of the median distance against {args.runs[0]}, with a paired bootstrap 95% "
          "interval")
    print("| suite | renders | base median | " + " | ".join(args.runs[1:]) + " |")
    print("|---|---:|---:|" + "---|" * (len(args.runs) - 1))
    for suite in args.suites:
        keep = None
        if args.source is not None:
            targets = manifest(suite)["targets"]
            keep = {t["name"] for t in targets if t.get("source") == args.source}
            if not keep:
                known = ", ".join(sorted({str(t.get("source")) for t in targets}))
                raise ValueError(f"{suite} has no targets of source {args.source!r} "
                                 f"(its sources: {known})")
        for budget in args.budgets:
            base = distances(args.runs[0], suite, budget)
            if keep is not None:
                base = {n: d for n, d in base.items() if n in keep}
            cells = []
            for other_run in args.runs[1:]:
                other = distances(other_run, suite, budget)
                if keep is not None:
                    other = {n: d for n, d in other.items() if n in keep}
                if set(other) != set(base):
                    raise ValueError(f"{other_run} and {args.runs[0]} scored different targets "
                                     f"of {suite}")
                names = sorted(base)
                change, lo, hi = median_change_ci([base[n] for n in names],
                                                  [other[n] for n in names], seed=args.seed)
                cells.append(f"{change:+.1%} [{lo:+.1%}, {hi:+.1%}]")
            median = float(np.median(list(base.values())))
            label = suite if args.source is None else f"{suite} ({args.source})"
            print(f"| {label} | {budget} | {median:.3g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run(main, Args, "compare_methods.py")
