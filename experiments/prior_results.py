"""Compare a trained prior with random search on a dataset's held-out targets.

For each target of ``--split`` (the test shards by default) the prior proposes K presets
(K=1: one shot; K=16: best of 16 by the perceptual distance), and random search keeps the best
of R uniform random presets. Every method is scored the same way: the env's perceptual
distance of the chosen preset's render to the target (which also picks the best of K or R),
its multi-resolution STFT term alone, and the mean absolute error of its normalised
parameters. Prints a Markdown table and writes the numbers as JSON.

    python experiments/prior_results.py runs/prior/<run_name>/prior.pt --data data/subtractive
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

from synthmatch.agents.matching import OneShotMatcher
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.search import MatchResult, random_search
from synthmatch.data import DatasetError, open_dataset
from synthmatch.envs.core import SUCCESS_THRESHOLD
from synthmatch.rewards import PerceptualDistance


@dataclass
class Args:
    prior: Annotated[str, tyro.conf.Positional]
    """prior.pt (or checkpoints/latest.pt) written by train_prior.py"""
    data: str
    """dataset directory the targets come from (the prior's, or another of the same synth)"""
    split: str = "test"
    """dataset split of the targets"""
    targets: int = 256
    """targets to match (the split's first)"""
    k: tuple[int, ...] = (1, 16)
    """prior candidates per target to compare"""
    random: tuple[int, ...] = (1, 16, 100)
    """random-search budgets (renders per target) to compare"""
    steps: int = 16
    """ODE steps per prior sample"""
    seed: int = 0
    """seed of prior noise and random search"""
    device: str = "cpu"
    """cpu or cuda"""
    out: str | None = None
    """JSON output (default: prior_results_<split>.json beside the prior)"""


def summarise(name: str, result: MatchResult, target_params: torch.Tensor,
              stft: np.ndarray, threshold: float) -> dict:
    d = result.distance.cpu().numpy()
    mae = (result.params - target_params).abs().mean(1).cpu().numpy()
    return {"method": name, "renders": result.renders,
            "median_distance": float(np.median(d)), "mean_distance": float(np.mean(d)),
            "median_mrstft": float(np.median(stft)),
            "median_param_mae": float(np.median(mae)), "mean_param_mae": float(np.mean(mae)),
            "success_rate": float(np.mean(d < threshold))}


@torch.no_grad()
def mrstft(synth, distance: PerceptualDistance, params: torch.Tensor,
           target_audio: torch.Tensor) -> np.ndarray:
    """The multi-resolution STFT term alone (auraloss's definition) of each chosen preset."""
    out = [distance.components(synth.render(params[i:i + 256]), target_audio[i:i + 256])["stft"]
           for i in range(0, params.shape[0], 256)]
    return torch.cat(out).cpu().numpy()


def main(args: Args) -> None:
    device = torch.device(args.device)
    ds = open_dataset(args.data)
    prior = FlowPrior.load(args.prior, device)
    target_params = torch.from_numpy(ds.load(args.split, ("params",))["params"][:args.targets])
    target_params = target_params.to(device)
    synth = ds.make_synth(device)
    with torch.no_grad():
        target_audio = torch.cat([synth.render(target_params[i:i + 256])
                                  for i in range(0, target_params.shape[0], 256)])
    distance = PerceptualDistance(synth.sample_rate).to(device)
    threshold = SUCCESS_THRESHOLD

    rows = []
    methods = [("prior", k) for k in args.k] + [("random search", r) for r in args.random]
    for name, budget in tqdm(methods, desc="methods", disable=None):
        if name == "prior":
            matcher = OneShotMatcher(prior, synth, k=budget, steps=args.steps, device=device,
                                     seed=args.seed)
            result = matcher.match(target_audio)
        else:
            gen = torch.Generator().manual_seed(args.seed)
            result = random_search(synth, distance, target_audio, budget, gen)
        stft = mrstft(synth, distance, result.params, target_audio)
        rows.append(summarise(f"{name}, {'K' if name == 'prior' else 'R'}={budget}", result,
                              target_params, stft, threshold))

    summary = {"prior": args.prior, "data": args.data, "split": args.split,
               "targets": int(target_params.shape[0]), "synth": ds.config.synth,
               "params": len(ds.param_names), "steps": args.steps, "seed": args.seed,
               "success_threshold": threshold, "results": rows}
    out = Path(args.out) if args.out else Path(args.prior).parent / \
        f"prior_results_{args.split}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{summary['targets']} {args.split} targets of {ds.config.synth} "
          f"({summary['params']} parameters); JSON: {out}\n")
    print("| method | renders per target | median distance | median MR-STFT | "
          "median param MAE | success |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['renders']} | {r['median_distance']:.3f} | "
              f"{r['median_mrstft']:.3f} | {r['median_param_mae']:.3f} | "
              f"{r['success_rate']:.0%} |")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except (DatasetError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
