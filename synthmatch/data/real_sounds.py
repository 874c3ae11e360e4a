"""Sounds of real instruments (Nekobi and Kars through VST3, Vital through vita), drawn as
random presets seed by seed: the cross-synth benchmark suites and the training pools of
sounds that have no parameters in any torch synth are both made here, from disjoint seeds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from synthmatch.synths import ProbeNote, Synth, make_synth

INSTRUMENTS = ("Nekobi", "Kars", "vital")
# Draws with a quieter peak (dBFS) have nothing to match: suites and pools skip them.
MIN_PEAK_DB = -40.0
# First seed of each pool split; instrument i starts i * 100,000 later. Disjoint from the
# benchmark suites (20,000,000-24,299,999), held-out targets (1,000,000...) and env seeds.
POOL_SEED_BASES = {"train": 30_000_000, "val": 31_000_000}
INSTRUMENT_SEED_STRIDE = 100_000


# Where a pool's synthetic sounds start within a split (a torch synth's random presets, for
# learning in domain from sounds alone): past every instrument's range.
SYNTHETIC_SEED_OFFSET = 9 * INSTRUMENT_SEED_STRIDE


def pool_seed(split: str, instrument: str) -> int:
    """First seed of ``instrument``'s sounds in pool split ``split`` (``train`` or ``val``);
    any source that is not one of :data:`INSTRUMENTS` (an env's synth) starts at
    :data:`SYNTHETIC_SEED_OFFSET`."""
    if split not in POOL_SEED_BASES:
        raise ValueError(f"unknown pool split {split!r}; known: {', '.join(POOL_SEED_BASES)}")
    if instrument not in INSTRUMENTS:
        return POOL_SEED_BASES[split] + SYNTHETIC_SEED_OFFSET
    return POOL_SEED_BASES[split] + INSTRUMENTS.index(instrument) * INSTRUMENT_SEED_STRIDE
# Where scripts/build_test_plugins.sh puts Nekobi.vst3 and Kars.vst3.
PLUGIN_DIR = Path(os.environ.get("SYNTHMATCH_PLUGIN_DIR",
                                 Path.home() / ".cache/synthmatch/plugins"))


def instrument_synth(instrument: str, plugin_dir: Path = PLUGIN_DIR) -> Synth:
    """The synth of a real instrument, playing the default probe note.

    Raises:
        ValueError: an unknown instrument.
        FileNotFoundError: a VST3 plugin that is not built.
        ImportError: Vital without its extra.
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; known: {', '.join(INSTRUMENTS)}")
    if instrument == "vital":
        return make_synth("vital", probe=ProbeNote())
    path = Path(plugin_dir) / f"{instrument}.vst3"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; build it with "
                                "scripts/build_test_plugins.sh")
    return make_synth("vst3", plugin_path=path, probe=ProbeNote())


def as_stored(audio: torch.Tensor) -> torch.Tensor:
    """``audio`` as it reads back from the 16-bit PCM files that suites and pools are stored
    in: libsndfile scales by 2**15, rounds to the nearest (even) integer and clips."""
    return (audio * 32768.0).round().clamp(-32768.0, 32767.0) / 32768.0


def draw_sounds(synth: Synth, first_seed: int, count: int, min_peak_db: float, desc: str,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Render random presets seed by seed until ``count`` are loud enough and unclipped.

    Preset ``i`` is ``synth.params.sample(1, Generator().manual_seed(seed))``; quieter draws
    than ``min_peak_db`` (and clipped ones) are skipped, and their seeds are not reused.

    Returns:
        Audio ``(count, T)``, normalised parameters ``(count, P)`` and the seeds used.

    Raises:
        RuntimeError: more than 20 draws per sound were silent or clipped.
    """
    clips, params, seeds = [], [], []
    seed = first_seed
    with tqdm(total=count, desc=desc, disable=None if progress else True) as bar:
        while len(clips) < count:
            u = synth.params.sample(1, torch.Generator().manual_seed(seed))
            audio = synth.render(u)[0].cpu().numpy()
            peak_db = 20 * np.log10(max(float(np.abs(audio).max()), 1e-12))
            if min_peak_db <= peak_db <= 0.0:
                clips.append(audio)
                params.append(u[0].numpy())
                seeds.append(seed)
                bar.update()
            seed += 1
            if seed - first_seed > 20 * count:
                raise RuntimeError(f"{desc}: too many silent or clipped draws")
    return np.stack(clips), np.stack(params), seeds
