"""Search training settings as Ray Tune trials: a grid, random draws, or both, at every seed.

Each trial is an ordinary run of train_ppo.py, train_sac.py or train_prior.py with the trial's
settings as flags, in ``<out>/runs/<trial>/`` (config.json, TensorBoard events, checkpoints,
eval.json or val.json; its output in ``<out>/logs/<trial>.log``). When every trial has
finished, ``<out>/summary.md`` (and .csv, .json) holds each trial's final held-out distance
and, per setting, its median, mean, min and max over the seeds. Running the same command again
reuses finished runs; a trial whose worker dies is restarted from its last checkpoint.

    python experiments/sweep.py --help
    python experiments/sweep.py --algo ppo --grid learning_rate=1e-4,3e-4,1e-3 --seeds 0 1 2 \
        --settings env_id=SynthMatch-Easy-v0 total_timesteps=60000 --out runs/sweeps/ppo_lr
    python experiments/sweep.py --algo sac --sample learning_rate=loguniform:1e-5:1e-3 \
        gamma=choice:0.9,0.99 --num-samples 8 --seeds 0 1 2 --out runs/sweeps/sac
    python experiments/sweep.py --algo prior --grid hidden=256,512 --seeds 0 1 2 \
        --settings data=data/subtractive steps=20000 --out runs/sweeps/prior
    tensorboard --logdir runs/sweeps/ppo_lr/runs

Without ``--ray-address`` the trials run on a Ray instance started on this machine (or the
cluster in ``RAY_ADDRESS``). On a cluster, every node needs this checkout, the data and the
sweep directory at the same paths (a shared file system). Needs ``pip install
'synthmatch[ray]'``. Exit status: 0 every trial finished, 1 some failed (see the summary), 2 bad
arguments or no Ray, 130 Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from synthmatch.agents.sweep import (
    ALGOS,
    SweepSpec,
    check_names,
    parse_assignments,
    parse_distribution,
    parse_value,
    run_sweep,
    write_summary,
)
from synthmatch.cli import run
from synthmatch.distributed import RayMissingError

EXPERIMENTS = Path(__file__).resolve().parent


@dataclass
class Args:
    """Search training settings as Ray Tune trials, each an ordinary run directory."""

    algo: Literal["ppo", "sac", "prior"] = "ppo"
    """what to train: ppo (train_ppo.py), sac (train_sac.py) or prior (train_prior.py)"""
    grid: tuple[str, ...] = ()
    """NAME=V1,V2,...: settings whose every value is tried (the grid of all of them)"""
    sample: tuple[str, ...] = ()
    """NAME=DIST: settings drawn at random, DIST one of uniform:LO:HI, loguniform:LO:HI,
    randint:LO:HI (HI excluded) or choice:V1,V2,..."""
    num_samples: int = 1
    """random draws of the --sample settings (each draw runs the whole grid, every seed)"""
    seeds: tuple[int, ...] = (0,)
    """training seeds: every setting runs once per seed"""
    settings: tuple[str, ...] = ()
    """NAME=VALUE: settings every trial shares, e.g. env_id=SynthMatch-v0
    total_timesteps=20000 (names as in the training script's --help, with _ or -)"""
    out: Path = Path("runs/sweeps/sweep")
    """sweep directory: runs/, logs/, tune/ (Tune's own records), summary.md/.csv/.json"""
    cpus_per_trial: float = 1
    """CPUs Ray reserves for each trial (its torch threads)"""
    gpus_per_trial: float = 0
    """GPUs Ray reserves for each trial (a fraction shares one; add device=cuda to
    --settings)"""
    max_concurrent: int | None = None
    """trials at once (default: as many as the cluster's resources allow)"""
    max_failures: int = 2
    """restarts of a trial whose worker died (it resumes from its last checkpoint)"""
    search_seed: int = 0
    """seed of the random draws of --sample"""
    ray_address: str | None = None
    """Ray cluster to use: the address `ray start --head` prints, or auto; default: the
    RAY_ADDRESS variable, else a Ray instance started on this machine"""
    verbose: int = 1
    """Tune's progress output: 0 silent, 1 a status table now and then, 2 more"""


def script_fields(algo: str) -> dict[str, dataclasses.Field]:
    """The settings of ``algo``'s training script, by name."""
    if algo == "prior":
        from synthmatch.agents.prior_training import PriorSettings

        return {f.name: f for f in dataclasses.fields(PriorSettings)}
    path = EXPERIMENTS / ALGOS[algo][0]
    spec = importlib.util.spec_from_file_location(f"sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the module up while building Args
    spec.loader.exec_module(module)
    return {f.name: f for f in dataclasses.fields(module.Args)}


def is_bool(f: dataclasses.Field) -> bool:
    return f.type in (bool, "bool")


def main(args: Args) -> int:
    if args.num_samples < 1 or args.max_failures < 0 or not args.seeds:
        raise ValueError("--num-samples must be >= 1, --max-failures >= 0 and --seeds not "
                         "empty")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    fixed = {k: parse_value(v) for k, v in parse_assignments(args.settings,
                                                              "--settings").items()}
    grid = {k: [parse_value(x) for x in v.split(",") if x]
            for k, v in parse_assignments(args.grid, "--grid").items()}
    sample = {k: parse_distribution(k, v)
              for k, v in parse_assignments(args.sample, "--sample").items()}
    twice = (set(fixed) & set(grid)) | (set(fixed) & set(sample)) | (set(grid) & set(sample))
    if twice:
        raise ValueError(f"{sorted(twice)} given in more than one of --settings, --grid and "
                         "--sample")
    fields = script_fields(args.algo)
    check_names([*fixed, *grid, *sample], list(fields), args.algo)

    from synthmatch.distributed import connect

    connect(args.ray_address, tune=True, device="cuda" if args.gpus_per_trial else "cpu")
    out = args.out.resolve()
    spec = SweepSpec(algo=args.algo, script=str(EXPERIMENTS / ALGOS[args.algo][0]),
                     out=str(out), cwd=str(Path.cwd()), python=sys.executable, fixed=fixed,
                     bool_settings=tuple(n for n, f in fields.items() if is_bool(f)))
    rows = run_sweep(spec, grid, sample, args.seeds, num_samples=args.num_samples,
                     cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                     max_concurrent=args.max_concurrent, max_failures=args.max_failures,
                     search_seed=args.search_seed, verbose=args.verbose)
    command = "python experiments/sweep.py " + shlex.join(sys.argv[1:])
    print(write_summary(rows, out, args.algo, [*grid, *sample], command))
    print(f"summary: {out / 'summary.md'}   runs: {out / 'runs'}   "
          f"(tensorboard --logdir {out / 'runs'})")
    failed = [r for r in rows if "error" in r]
    for row in failed:
        print(f"sweep.py: trial {row['trial']} failed: {row['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    run(main, Args, "sweep.py", errors=(RayMissingError, ConnectionError))
