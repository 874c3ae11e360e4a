"""Screen: does a search's result depend on torch's thread count?

Runs ``prior+latent-cmaes`` on 64 held-out Voice targets (as ``tune_methods.py`` does) on one
thread, on two, and on one again after another setting, and prints how many targets' best
distances at 300 renders differ from the first run and by how much at most (the seventeenth
session's check, docs/results.md).

Usage (from the repository root):
    python experiments/screens/thread_check.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

sys.path.insert(0, "experiments")
from tune_methods import validation_targets  # noqa: E402

from synthmatch.leaderboard.harness import Job, run_chunk  # noqa: E402
from synthmatch.leaderboard.methods.prior import PriorLatentCMAES  # noqa: E402

PRIOR = "checkpoints/torchsynth-medium/prior-torchsynth-medium.pt"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    suite, synth = validation_targets("SynthMatch-TorchSynth-Medium-v0", 64)

    def distances(method, threads: int) -> np.ndarray:
        torch.set_num_threads(threads)
        cell = run_chunk(Job(suite, method, synth, [300], 0), 0, suite)["budgets"]["300"]
        return np.array([t["distance"] for t in cell["targets"]])

    first = distances(PriorLatentCMAES(PRIOR), 1)
    two = distances(PriorLatentCMAES(PRIOR), 2)
    distances(PriorLatentCMAES(PRIOR, sigma=0.1), 1)
    again = distances(PriorLatentCMAES(PRIOR), 1)
    for name, d in (("two threads", two), ("one thread again", again)):
        print(f"{name}: {(d != first).sum()} of 64 targets differ, "
              f"by at most {np.abs(d - first).max():.3f}")


if __name__ == "__main__":
    main()
