"""One step of the noise-space search (``prior+latent-es``) on TorchSynth's full Voice, by part.

Times, in interleaved rounds (medians, one thread), what a step costs for ``n`` proposals: the
flow's decode of ``n`` noises to presets (16 midpoint ODE steps), the Voice's render of ``n``
presets, and the perceptual distance of ``n`` renders to a target. The (1+1) search makes one
proposal per step, where CMA-ES renders its whole population in one call, so the ratios say
what a search that proposed several noises per step would save.

Usage:
    python benchmarks/bench_latent_step.py --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synthmatch.agents.prior import FlowPrior
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import make_synth

PRIOR = "synthmatch/app/data/prior-torchsynth.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 13])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=10, help="calls timed per round")
    args = parser.parse_args()

    torch.set_num_threads(1)
    prior = FlowPrior.load(PRIOR, "cpu")
    synth = make_synth("torchsynth")
    distance = PerceptualDistance(synth.sample_rate)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        target = synth.render(synth.params.sample(1, gen))
        embedding = prior.embed(prior.mel(target))
    cases = {}
    for n in args.sizes:
        noise, embeddings = prior.draw_noise(n, gen), embedding.expand(n, -1)
        presets = synth.params.sample(n, gen)
        audio = synth.render(presets)
        cases[f"decode {n}"] = lambda e=embeddings, z=noise: prior.decode(e, z)
        cases[f"render {n}"] = lambda p=presets: synth.render(p)
        cases[f"distance {n}"] = lambda a=audio: distance(a, target.expand(len(a), -1))
    times = {name: [] for name in cases}
    with torch.no_grad():
        for fn in cases.values():
            fn()  # warm up
        for _ in range(args.rounds):
            for name, fn in cases.items():
                start = time.perf_counter()
                for _ in range(args.repeats):
                    fn()
                times[name].append((time.perf_counter() - start) / args.repeats)
    print(f"| part | ms per call (median of {args.rounds} rounds) |")
    print("|---|---:|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t) * 1000:.1f} |")


if __name__ == "__main__":
    main()
