"""Make the bench-v1 benchmark suites (run once: published suites never change).

In-domain suites render random presets of a registered env's synth from the suite's own seed
range (``synthmatch.leaderboard.suites.SEED_BASES``). Cross-synth suites play random presets
of real instruments (Nekobi and Kars through VST3, Vital through vita) and keep only the
audio: those sounds have no parameters in any torch synth. Draws quieter than
``--min-peak-db`` are skipped (their seeds are recorded, so the skip is reproducible).

    python experiments/make_suites.py --help
    bash scripts/build_test_plugins.sh           # Nekobi and Kars, for the cross suites
    python experiments/make_suites.py --suites quick subtractive-id fm-id torchsynth-id \
        cross-vst3 cross-vital

An existing suite is never overwritten; the script says so and moves on. Exit status: 0 done,
2 bad arguments or a missing instrument.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

import synthmatch
from synthmatch.data.real_sounds import MIN_PEAK_DB, PLUGIN_DIR, draw_sounds, instrument_synth
from synthmatch.envs.registration import env_synth
from synthmatch.leaderboard.suites import SEED_BASES, SUITE_ROOT, SuiteError, write_suite
from synthmatch.synths import ProbeNote

VERSION = "bench-v1"
# suite -> (env id, number of targets)
IN_DOMAIN = {"quick": ("SynthMatch-v0", 6), "subtractive-id": ("SynthMatch-v0", 128),
             "fm-id": ("SynthMatch-FM-v0", 128),
             "torchsynth-id": ("SynthMatch-TorchSynth-Medium-v0", 128)}
# suite -> [(instrument, targets)]; seeds of cross suites start at 24_000_000 per instrument.
CROSS = {"cross-vst3": [("Nekobi", 16), ("Kars", 16)], "cross-vital": [("vital", 24)]}
CROSS_SEED_BASE = {"Nekobi": 24_000_000, "Kars": 24_100_000, "vital": 24_200_000}


@dataclass
class Args:
    """Make benchmark suites under synthmatch/leaderboard/suite_data/bench-v1/."""

    suites: tuple[str, ...] = (*IN_DOMAIN, *CROSS)
    """suites to make (in-domain: quick, subtractive-id, fm-id, torchsynth-id; cross-synth:
    cross-vst3, cross-vital)"""
    plugin_dir: Path = PLUGIN_DIR
    """where scripts/build_test_plugins.sh put Nekobi.vst3 and Kars.vst3"""
    min_peak_db: float = MIN_PEAK_DB
    """skip draws whose peak is below this (dBFS): nothing to match"""
    root: Path = SUITE_ROOT
    """suite directory root (the package's own by default)"""


def make_in_domain(name: str, args: Args, command: str) -> Path:
    env_id, count = IN_DOMAIN[name]
    synth = env_synth(env_id)
    base = SEED_BASES[name]
    audio, params, seeds = draw_sounds(synth, base, count, args.min_peak_db, name)
    return write_suite(
        f"{VERSION}/{name}", audio, sample_rate=synth.sample_rate, probe=synth.probe.to_dict(),
        description=f"{count} random presets of {env_id} ({synth.num_params} parameters, "
                    "uniform in normalised space, discrete ones snapped)",
        made_by=command, env_id=env_id, params=params, param_names=list(synth.params.names),
        target_info=[{"seed": s, "source": synth.name} for s in seeds],
        extra={"seed_range": [base, seeds[-1]], "min_peak_db": args.min_peak_db,
               "synthmatch_version": synthmatch.__version__, "torch_version": torch.__version__},
        root=args.root)


def make_cross(name: str, args: Args, command: str) -> Path:
    clips, info = [], []
    probe = ProbeNote()
    for instrument, count in CROSS[name]:
        synth = instrument_synth(instrument, args.plugin_dir)
        base = CROSS_SEED_BASE[instrument]
        audio, _, seeds = draw_sounds(synth, base, count, args.min_peak_db,
                                       f"{name}/{instrument}")
        clips.append(audio)
        info += [{"seed": s, "source": instrument,
                  "parameters": list(synth.params.names)} for s in seeds]
        synth.close()
    return write_suite(
        f"{VERSION}/{name}", np.concatenate(clips), sample_rate=probe.sample_rate,
        probe=probe.to_dict(),
        description="random presets of real instruments ("
                    + ", ".join(f"{c} {i}" for i, c in CROSS[name]) + "); no true parameters "
                    "in any torch synth",
        made_by=command, target_info=[{k: v for k, v in t.items() if k != "parameters"}
                                      for t in info],
        extra={"instruments": {i: {"parameters": next(t["parameters"] for t in info
                                                      if t["source"] == i),
                                   "seed_range_start": CROSS_SEED_BASE[i]}
                               for i, _ in CROSS[name]},
               "min_peak_db": args.min_peak_db,
               "synthmatch_version": synthmatch.__version__},
        root=args.root)


def main(args: Args) -> int:
    unknown = [s for s in args.suites if s not in IN_DOMAIN and s not in CROSS]
    if unknown:
        print(f"make_suites.py: error: unknown suite(s) {unknown}; known: "
              f"{', '.join([*IN_DOMAIN, *CROSS])}", file=sys.stderr)
        return 2
    command = "python experiments/make_suites.py " + shlex.join(sys.argv[1:])
    torch.set_num_threads(min(2, torch.get_num_threads()))
    for name in args.suites:
        if (args.root / VERSION / name).exists():
            print(f"{VERSION}/{name} exists: left as it is (published suites never change)")
            continue
        try:
            make = make_in_domain if name in IN_DOMAIN else make_cross
            print(f"wrote {make(name, args, command)}")
        except (SuiteError, ImportError, FileNotFoundError) as err:
            print(f"make_suites.py: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
