"""make_dataset.py with 1 and 2 Ray workers against the local worker processes.

Times the whole command, as a user runs it, in interleaved rounds (medians), for each worker
count (``--workers``, which with ``--ray`` bounds the shards at once):

- ``local``: the default path, spawned worker processes;
- ``ray, own instance``: ``--ray``, which starts a Ray instance for the run and stops it after;
- ``ray, running cluster``: ``--ray --ray-address ADDR`` against a Ray instance this script
  started once before the rounds (two CPUs), as on a cluster that is already up.

Every run writes a fresh dataset of the same config; one Ray run's shards are checked equal to
the local one's (parameters bit for bit).

Usage:
    python benchmarks/bench_ray_dataset.py --n 8192 --shard-size 512 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import ray
import torch

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(out: Path, args: argparse.Namespace, extra: list[str]) -> float:
    """Run make_dataset.py once into ``out``; returns its wall time in seconds."""
    command = [sys.executable, str(ROOT / "experiments" / "make_dataset.py"), "--synth",
               args.synth, "--n", str(args.n), "--shard-size", str(args.shard_size),
               "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def same_params(a: Path, b: Path) -> bool:
    for shard in sorted(a.glob("shard-*.h5")):
        with h5py.File(shard) as x, h5py.File(b / shard.name) as y:
            if not np.array_equal(x["params"][...], y["params"][...]):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synth", default="subtractive")
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--shard-size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    ray.init(num_cpus=2, include_dashboard=False)
    address = ray.get_runtime_context().gcs_address
    modes = {"local": [], "ray, own instance": ["--ray"],
             "ray, running cluster": ["--ray-address", address]}
    cases = {(mode, w): [*flags, "--workers", str(w)]
             for w in args.workers for mode, flags in modes.items()}
    times: dict[tuple[str, int], list[float]] = {key: [] for key in cases}
    scratch = Path(tempfile.mkdtemp(prefix="bench_ray_dataset_"))
    try:
        for r in range(args.rounds):
            for (mode, w), extra in cases.items():
                out = scratch / f"{mode.split(',')[0]}-{w}-{r}"
                times[mode, w].append(make_dataset(out, args, extra))
                if r == 0 and w == args.workers[0] and mode != "local":
                    assert same_params(out, scratch / f"local-{w}-0"), "shards differ"
                if r > 0 or mode != "local":
                    shutil.rmtree(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        ray.shutdown()

    print(f"{args.synth}, {args.n} presets in {-(-args.n // args.shard_size)} shards of "
          f"{args.shard_size}; {os.cpu_count()} cores, torch {torch.__version__}, "
          f"ray {ray.__version__}; medians of {args.rounds} interleaved rounds\n")
    print("| path | workers | s | presets/s | speed vs local, same workers |")
    print("|---|---:|---:|---:|---:|")
    median = {key: statistics.median(v) for key, v in times.items()}
    for (mode, w), t in median.items():
        print(f"| {mode} | {w} | {t:.1f} | {args.n / t:.0f} | "
              f"{median['local', w] / t:.2f}x |")
    if len(args.workers) > 1:
        lo, hi = min(args.workers), max(args.workers)
        print(f"\n{hi} workers / {lo} worker: "
              + ", ".join(f"{mode} {median[mode, lo] / median[mode, hi]:.2f}x"
                          for mode in modes))


if __name__ == "__main__":
    main()
