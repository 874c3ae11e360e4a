"""Chunk sizes on CPU: the subtractive synth's audio-rate blocks and the env core's feature
chunks.

Times, in interleaved rounds (medians), a render of random presets with the synth's
``cpu_audio_chunk`` (items whose audio-rate work runs together) set to each candidate, and the
reward-feature path of an env step (features of the rendered batch + distance to cached
targets) computed in chunks of each candidate size. These numbers chose
``SubtractiveSynth.cpu_audio_chunk`` and ``synthmatch.devices.CPU_FEATURE_CHUNK``.

Usage:
    python benchmarks/bench_chunks.py --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from synthmatch.rewards import PerceptualDistance
from synthmatch.synths.subtractive import SubtractiveSynth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--chunks", type=int, nargs="+", default=[4, 8, 16, 32, 0],
                        help="candidate chunk sizes; 0 means the whole batch at once")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    synth = SubtractiveSynth()
    distance = PerceptualDistance(synth.sample_rate)
    cases = {}
    for b in args.batches:
        params = synth.params.sample(b, torch.Generator().manual_seed(1))
        audio = synth.render(params)
        targets = distance.features(synth.render(synth.params.sample(
            b, torch.Generator().manual_seed(2))))
        for c in args.chunks:
            size = c or b

            def render(size=size, params=params):
                synth.cpu_audio_chunk = size
                synth.render(params)

            def features(size=size, audio=audio, targets=targets, b=b):
                for start in range(0, b, size):
                    stop = min(start + size, b)
                    distance.distance(distance.features(audio[start:stop]),
                                      targets.rows(start, stop))

            cases["render", b, c] = render
            cases["features", b, c] = features
    times = {key: [] for key in cases}
    with torch.inference_mode():
        for fn in cases.values():
            fn()
        for _ in range(args.rounds):
            for key, fn in cases.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of "
          f"{args.rounds} interleaved rounds\n")
    print("| work | batch | chunk | ms |")
    print("|---|---:|---:|---:|")
    for (work, b, c), ts in times.items():
        print(f"| {work} | {b} | {c or 'whole batch'} | {1e3 * statistics.median(ts):.1f} |")


if __name__ == "__main__":
    main()
