"""Screen: how much could a policy that sets the step scale of the noise-space search gain?

``prior+latent-rl`` (PPO) and the SAC screen both failed to beat their untrained rule, the
fixed-scale search ``prior+latent-es`` (sigma 0.3). This screen bounds what any policy over
the step *scale* could have gained, with no learning at all. The search runs on held-out
targets (as ``tune_methods.py`` does, never a suite) with five fixed scales. Every run draws
the same 16 prior samples and the same sequence of unit steps, so only the scale differs.
Three figures, each paired against sigma 0.3 at the same renders:

- *oracle*: each target's best result over the five scales, chosen after the fact. An upper
  bound on a per-target scale policy, inflated by taking the best of five noisy runs. It is
  given twice: with the same unit steps for every scale, and with other unit steps for each
  scale but 0.3 (independent runs, as in the luck figure);
- *luck*: each target's best over five runs of sigma 0.3 with different unit steps (the same
  16 samples). What the best of five independent noisy runs is worth without any choice of
  scale;
- *rule*: a scale chosen by what a policy observes, the starting distance (the best of 16):
  the targets are split in halves; on each half the best scale of each tercile of starting
  distance is picked and applied to the other half. A state-dependent rule fitted the way a
  policy would be, and scored on targets it was not fitted on.

If the oracle is not well clear of luck, choosing the scale per target is worth little, and a
learned scale has nothing to find.

Usage (from the repository root; about 12 minutes on one core for 128 Voice targets):
    python experiments/screens/scale_headroom.py --help
    python experiments/screens/scale_headroom.py --targets 128 --out runs/v18/headroom.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tune_methods import validation_targets  # noqa: E402

from synthmatch.fileio import write_json_atomic  # noqa: E402
from synthmatch.leaderboard.harness import Job, run_chunk  # noqa: E402
from synthmatch.leaderboard.methods.prior import PriorLatentES  # noqa: E402
from synthmatch.leaderboard.metrics import median_change_ci  # noqa: E402

PRIOR = "checkpoints/torchsynth-medium/prior-torchsynth-medium.pt"
SCALES = (0.1, 0.2, 0.3, 0.45, 0.7)
BASE = 0.3
REPEATS = 5


class StepStream(PriorLatentES):
    """``prior+latent-es`` whose unit steps come from stream ``repeat`` (0 is the method's own);
    the 16 prior samples are the method's in every stream."""

    def __init__(self, prior_path: str, sigma: float, repeat: int):
        super().__init__(prior_path, sigma=sigma)
        self.step_stream = PriorLatentES.step_stream + 1000 * repeat


def key(scale: float, repeat: int) -> str:
    """A run's name in the printout and the JSON: its scale and its stream of unit steps."""
    return f"sigma {scale}" if repeat == 0 else f"sigma {scale}, steps {repeat}"


def distances(method, suite, synth, budgets: list[int]) -> dict[int, np.ndarray]:
    cells = run_chunk(Job(suite, method, synth, budgets, 0), 0, suite)["budgets"]
    return {b: np.array([t["distance"] for t in cells[str(b)]["targets"]]) for b in budgets}


def fitted_rule(start: np.ndarray, by_scale: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each target's result under a scale picked per tercile of starting distance on the
    other half of the targets (``by_scale``: ``(scales, targets)``)."""
    n = start.size
    halves = np.array_split(np.random.default_rng(seed).permutation(n), 2)
    out = np.empty(n)
    for fit, apply in ((halves[0], halves[1]), (halves[1], halves[0])):
        edges = np.quantile(start[fit], [1 / 3, 2 / 3])
        fit_bin, apply_bin = np.digitize(start[fit], edges), np.digitize(start[apply], edges)
        for b in range(3):
            pick = int(np.argmin(np.median(by_scale[:, fit[fit_bin == b]], axis=1)))
            chosen = apply[apply_bin == b]
            out[chosen] = by_scale[pick, chosen]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="SynthMatch-TorchSynth-Medium-v0")
    parser.add_argument("--prior", default=PRIOR)
    parser.add_argument("--targets", type=int, default=128)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None, help="per-target results (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite, synth = validation_targets(args.env_id, args.targets)
    budgets = [16, args.budget]

    same = [(s, 0) for s in SCALES]                       # the five scales on one stream
    others = [s for s in SCALES if s != BASE]              # the other four, a stream each
    independent = list(zip(others, range(REPEATS, REPEATS + len(others)), strict=True))
    luck = [(BASE, r) for r in range(REPEATS)]             # 0.3 on five streams
    plan = same + independent + luck[1:]
    runs = {}
    for s, r in plan:
        runs[key(s, r)] = distances(StepStream(args.prior, s, r), suite, synth, budgets)
        print(f"{key(s, r)}: median {np.median(runs[key(s, r)][args.budget]):.3f}", flush=True)

    def final(pairs) -> np.ndarray:
        return np.stack([runs[key(s, r)][args.budget] for s, r in pairs])

    by_scale = final(same)
    base = runs[key(BASE, 0)][args.budget]
    start = runs[key(BASE, 0)][16]
    rows = {f"fixed sigma {s}": by_scale[i] for i, s in enumerate(SCALES)}
    rows["oracle: best scale per target, same steps"] = by_scale.min(0)
    rows["oracle: best scale per target, other steps"] = final([(BASE, 0), *independent]).min(0)
    rows[f"luck: best of {REPEATS} runs of sigma {BASE}"] = final(luck).min(0)
    rows["rule: scale per tercile of starting distance"] = fitted_rule(start, by_scale)

    print(f"\n{args.targets} held-out targets of {args.env_id}, {args.budget} renders; "
          f"paired change of the median against sigma {BASE} (95% bootstrap)")
    print("| scale of the steps | median | change |")
    print("|---|---:|---|")
    for name, d in rows.items():
        c, lo, hi = median_change_ci(base, d)
        print(f"| {name} | {np.median(d):.3f} | {c:+.1%} [{lo:+.1%}, {hi:+.1%}] |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, {
            "settings": vars(args) | {"out": str(args.out)},
            "runs": {k: {str(bb): v.tolist() for bb, v in d.items()} for k, d in runs.items()}})


if __name__ == "__main__":
    main()
