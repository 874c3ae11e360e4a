"""Make a pool of real-instrument sounds to learn from: random presets of Nekobi and Kars
(VST3) and Vital, from seeds no benchmark suite uses (``synthmatch.data.real_sounds``). An env
id instead (``--instruments SynthMatch-v0``) makes an in-domain pool of its synth's sounds.

The pool is written like a suite (16-bit FLAC and a manifest with every seed), so
``finetune_prior.py`` and ``leaderboard.py --suites <dir>`` both read it. Make a training
split and a validation split; tune on the validation split, never on bench-v1.

    python experiments/make_sound_pool.py --help
    bash scripts/build_test_plugins.sh           # Nekobi and Kars
    python experiments/make_sound_pool.py --split train --count 256 --out data/pool
    python experiments/make_sound_pool.py --split val --count 32 --out data/pool
    python experiments/make_sound_pool.py --split train --count 256 --after data/pool/train \
        --out data/pool_more                     # 256 more, none shared with data/pool

Exit status: 0 done, 2 bad arguments, a missing instrument or an existing pool.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import synthmatch
from synthmatch.cli import run
from synthmatch.data.real_sounds import (
    INSTRUMENT_SEED_STRIDE,
    INSTRUMENTS,
    MIN_PEAK_DB,
    PLUGIN_DIR,
    draw_sounds,
    instrument_synth,
    pool_seed,
)
from synthmatch.envs.registration import env_ids, env_synth
from synthmatch.leaderboard.suites import write_suite
from synthmatch.synths import ProbeNote


@dataclass
class Args:
    """Write <out>/<split>/ (FLAC files and manifest.json) of real-instrument sounds."""

    split: str = "train"
    """train or val (each has its own seed range)"""
    count: int = 256
    """sounds per instrument"""
    count_of: tuple[str, ...] = ()
    """INSTRUMENT=N: another count for some instruments, e.g. vital=2304"""
    instruments: tuple[str, ...] = INSTRUMENTS
    """instruments to play: Nekobi, Kars, vital; or a registered env id (SynthMatch-v0...),
    whose synth's random presets make an in-domain pool (their parameters are not kept)"""
    out: Path = Path("data/pool")
    """parent directory of the splits"""
    plugin_dir: Path = PLUGIN_DIR
    """where scripts/build_test_plugins.sh put Nekobi.vst3 and Kars.vst3"""
    min_peak_db: float = MIN_PEAK_DB
    """skip draws whose peak is below this (dBFS)"""
    after: Path | None = None
    """a pool of the same split to continue: each instrument's seeds start after the last one
    it used, so the new pool shares no sound with it (grow a pool without redrawing it)"""


def counts_of(args: Args) -> dict[str, int]:
    """Sounds to draw per instrument: ``--count``, or its ``--count-of`` entry."""
    counts = dict.fromkeys(args.instruments, args.count)
    for entry in args.count_of:
        name, _, number = entry.partition("=")
        if name not in counts or not number.isdigit():
            raise ValueError(f"--count-of takes INSTRUMENT=N for one of "
                             f"{', '.join(args.instruments)}, got {entry!r}")
        counts[name] = int(number)
    # Each instrument's seeds start INSTRUMENT_SEED_STRIDE after the previous one's; half of
    # that leaves room for the quiet draws that are skipped.
    bad = {i: n for i, n in counts.items() if not 1 <= n <= INSTRUMENT_SEED_STRIDE // 2}
    if bad:
        raise ValueError(f"counts must be in 1..{INSTRUMENT_SEED_STRIDE // 2:,}, got {bad}")
    return counts


def first_seeds(args: Args, counts: dict[str, int]) -> dict[str, int]:
    """Each instrument's first seed: its split's start, or one past its last seed in the pool
    that ``--after`` names."""
    firsts = {i: pool_seed(args.split, i) for i in args.instruments}
    if args.after is None:
        return firsts
    manifest = args.after / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"--after: no pool at {args.after}")
    before = json.loads(manifest.read_text())
    if before.get("pool_split") != args.split:
        raise ValueError(f"--after: {args.after} is a {before.get('pool_split')!r} pool, not "
                         f"{args.split!r}")
    for instrument in args.instruments:
        seeds = [t["seed"] for t in before["targets"] if t.get("source") == instrument]
        if not seeds:
            raise ValueError(f"--after: {args.after} has no {instrument} sounds to continue")
        firsts[instrument] = max(seeds) + 1
        used = firsts[instrument] - pool_seed(args.split, instrument) + counts[instrument]
        if used > INSTRUMENT_SEED_STRIDE // 2:
            raise ValueError(f"{instrument}: {used:,} sounds from the split's start would run "
                             f"into the next instrument's seeds (at most "
                             f"{INSTRUMENT_SEED_STRIDE // 2:,})")
    return firsts


def source_synth(source: str, plugin_dir: Path):
    """The synth that plays ``source``: an instrument, or a registered env's synth."""
    if source in INSTRUMENTS:
        return instrument_synth(source, plugin_dir)
    synth = env_synth(source)
    if synth.probe.to_dict() != ProbeNote().to_dict():
        raise ValueError(f"{source} plays another note than the pool's default probe")
    return synth


def main(args: Args) -> None:
    unknown = [i for i in args.instruments if i not in INSTRUMENTS and i not in env_ids()]
    if unknown:
        raise ValueError(f"unknown instrument(s) {unknown}; known: {', '.join(INSTRUMENTS)} "
                         "or a registered env id")
    if sum(i not in INSTRUMENTS for i in args.instruments) > 1:
        raise ValueError("one env id per pool: their sounds would share seeds")
    counts = counts_of(args)
    firsts = first_seeds(args, counts)
    if (args.out / args.split).exists():
        raise ValueError(f"{args.out / args.split} exists; a pool is never overwritten")
    clips, info = [], []
    for instrument in args.instruments:
        synth = source_synth(instrument, args.plugin_dir)
        try:
            audio, _, seeds = draw_sounds(synth, firsts[instrument], counts[instrument],
                                          args.min_peak_db, f"{args.split}/{instrument}")
        finally:
            synth.close()
        clips.append(audio)
        info += [{"seed": s, "source": instrument} for s in seeds]
    probe = ProbeNote()
    path = write_suite(
        args.split, np.concatenate(clips), sample_rate=probe.sample_rate,
        probe=probe.to_dict(),
        description="pool of sounds ("
                    + ", ".join(f"{n} of {i}" for i, n in counts.items()) + "), seeds from "
                    f"{min(firsts.values()):,}; no true parameters",
        made_by="python experiments/make_sound_pool.py " + shlex.join(sys.argv[1:]),
        target_info=info,
        extra={"pool_split": args.split, "first_seeds": firsts,
               "min_peak_db": args.min_peak_db, "synthmatch_version": synthmatch.__version__},
        root=args.out)
    print(f"wrote {path} ({len(info)} sounds)")


if __name__ == "__main__":
    run(main, Args, "make_sound_pool.py")
