"""Seconds per sound of ``synthmatch match``'s searches, one sound at a time as the command runs.

The leaderboard searches 32 targets per batch, so its elapsed times hide what one sound costs.
A user matching one file gets a batch of one: the (1+1) search in the prior's noise
(``prior+latent-es``) then decodes and renders one proposal per call, where a CMA-ES renders a
whole population per call. This script matches ``--sounds`` random presets of the synth, each
alone, with every method in turn (interleaved, so load on the machine falls on all alike), and
prints each method's median seconds per sound, its ratio to the first method, and the median
distance reached.

The sounds are random presets drawn from ``--seed`` (41,000,000 by default: no suite's or
validation pool's seed), rendered at the synth's probe note.

Usage:
    python benchmarks/bench_match.py --synth torchsynth --budget 1000 \\
        --methods prior+cmaes prior+latent-es prior+latent-cmaes
"""

from __future__ import annotations

import argparse
import statistics

import torch

from synthmatch.app.match import MATCH_METHODS, SYNTHS, Matcher, MatchSettings
from synthmatch.app.targets import Target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synth", default="torchsynth", choices=SYNTHS)
    parser.add_argument("--methods", nargs="+", choices=MATCH_METHODS,
                        default=["prior+cmaes", "prior+latent-es", "prior+latent-cmaes"])
    parser.add_argument("--budget", type=int, default=1000, help="renders per sound")
    parser.add_argument("--sounds", type=int, default=3, help="sounds, each matched alone")
    parser.add_argument("--seed", type=int, default=41_000_000, help="seed of the sounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    matchers = {m: Matcher(MatchSettings(synth=args.synth, method=m, budget=args.budget),
                           log=lambda _: None) for m in args.methods}
    synth = matchers[args.methods[0]].base
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        audio = synth.render(synth.params.sample(args.sounds, gen)).cpu().numpy()
    note = synth.probe.midi_pitch
    targets = [Target(f"sound{i}", a, f"seed {args.seed}", note) for i, a in enumerate(audio)]
    seconds = {m: [] for m in args.methods}
    distances = {m: [] for m in args.methods}
    for i, target in enumerate(targets):
        for m in args.methods:
            (result,) = matchers[m].match([target])
            seconds[m].append(result.seconds)
            distances[m].append(result.distance)
            print(f"sound {i} {m}: {result.seconds:.1f} s, distance {result.distance:.3f}",
                  flush=True)
    base = statistics.median(seconds[args.methods[0]])
    print(f"\n{args.sounds} random {args.synth} presets, {args.budget} renders each, one sound "
          f"per match, {args.threads} torch thread(s)")
    print(f"| method | s per sound (median) | vs {args.methods[0]} | median distance |")
    print("|---|---:|---:|---:|")
    for m in args.methods:
        s = statistics.median(seconds[m])
        print(f"| {m} | {s:.1f} | {s / base:.2f}x | {statistics.median(distances[m]):.3f} |")


if __name__ == "__main__":
    main()
