"""Render random presets of a synth into HDF5 shards: parameters, log-mel and optionally audio.

Shards render in parallel worker processes and are written under a temporary name, so a
killed or interrupted run keeps every finished shard: run the same command again to resume.
With ``--ray`` each shard is a Ray task instead (on a cluster, ``--out`` must be on a file
system every node reaches); the shards are the same files.
The directory gets ``dataset.json`` (config and metadata), ``shard-NNNNN.h5``, ``splits.json``
(train/val/test by whole shards) and ``stats.json`` (train statistics for normalisation).

    python experiments/make_dataset.py --help
    python experiments/make_dataset.py --synth subtractive --n 100000 --out data/subtractive
    python experiments/make_dataset.py --env-id SynthMatch-TorchSynth-Medium-v0 --n 50000 \
        --out data/torchsynth-medium --workers 8
    python experiments/make_dataset.py --synth vst3 --n 10000 --out data/dexed \
        --synth-kwargs '{"plugin_path": "/path/Dexed.vst3"}'
    python experiments/make_dataset.py --synth subtractive --n 200000 --out data/sub --device cuda
    python experiments/make_dataset.py --synth subtractive --n 2000000 --out /shared/data/sub \
        --ray --ray-address 10.0.0.1:6379     # each shard a task on a Ray cluster
    python experiments/check_dataset.py data/subtractive

Exit status: 0 done, 1 stopped early (resume by re-running) or a broken shard, 2 bad
arguments, 130 Ctrl-C.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from synthmatch.data import DEFAULT_MEL, DatasetConfig, IncompleteDatasetError, write_dataset
from synthmatch.data.dataset import DatasetError
from synthmatch.envs.registration import env_settings
from synthmatch.synths import ProbeNote

_PROBE = ProbeNote()


@dataclass
class Args:
    """Render N random presets of one synth into a sharded HDF5 dataset."""

    out: Path
    """dataset directory (created; re-running with the same settings resumes)"""
    n: int
    """number of presets in the whole dataset"""
    synth: str | None = None
    """synth backend: subtractive, fm, torchsynth, vst3 or vital"""
    env_id: str | None = None
    """take synth and free parameters from a registered env id instead of --synth/--free-params
    (e.g. SynthMatch-TorchSynth-Medium-v0)"""
    free_params: tuple[str, ...] | None = None
    """parameters that vary (only these columns are stored); default: all"""
    synth_kwargs: str = "{}"
    """extra backend arguments as a JSON object, e.g. '{"plugin_path": "Dexed.vst3"}'"""
    shard_size: int = 4096
    """presets per HDF5 shard"""
    seed: int = 0
    """root seed: shard i draws from a generator seeded from (seed, i)"""
    store_mel: bool = True
    """store the log-mel spectrogram (float16, dB)"""
    store_audio: bool = False
    """store the rendered audio (float32)"""
    n_fft: int = DEFAULT_MEL["n_fft"]
    """log-mel FFT size"""
    hop_length: int = DEFAULT_MEL["hop_length"]
    """log-mel hop in samples"""
    n_mels: int = DEFAULT_MEL["n_mels"]
    """log-mel bands"""
    f_min: float = DEFAULT_MEL["f_min"]
    """lowest mel band edge in Hz"""
    f_max: float | None = DEFAULT_MEL["f_max"]
    """highest mel band edge in Hz (default: Nyquist)"""
    midi_pitch: int = _PROBE.midi_pitch
    """probe note pitch (MIDI)"""
    velocity: int = _PROBE.velocity
    """probe note velocity (1-127)"""
    note_duration_s: float = _PROBE.note_duration_s
    """probe note length: note-on to note-off"""
    render_duration_s: float = _PROBE.render_duration_s
    """length of each rendered sound"""
    sample_rate: int = _PROBE.sample_rate
    """sample rate in Hz"""
    val_fraction: float = 0.05
    """share of shards held out for validation"""
    test_fraction: float = 0.05
    """share of shards held out for testing"""
    render_batch: int = 256
    """presets rendered per synth call"""
    workers: int | None = None
    """worker processes (default: one per CPU core, at most one per missing shard); CPU only.
    With --ray: at most this many shards at once (default: as many as the cluster runs)"""
    device: str = "cpu"
    """where to render: cpu (worker processes) or cuda (this process, whole shards per call);
    the presets are the same on both, audio and log-mels agree within float tolerance"""
    progress: bool = True
    """show a progress bar (on a terminal)"""
    ray: bool = False
    """render each shard as a Ray task (pip install 'synthmatch[ray]'), with one CPU each, or
    one GPU each with --device cuda; on a cluster, --out must be a path every node reaches"""
    ray_address: str | None = None
    """Ray cluster to use (implies --ray): the address `ray start --head` prints, or auto;
    default: the RAY_ADDRESS variable, else a Ray instance started on this machine"""


def config_from_args(args: Args) -> DatasetConfig:
    """The dataset config the command line describes (``ValueError`` when inconsistent)."""
    try:
        synth_kwargs = json.loads(args.synth_kwargs)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--synth-kwargs is not valid JSON ({exc}): {args.synth_kwargs!r}") \
            from None
    if not isinstance(synth_kwargs, dict):
        raise ValueError(f"--synth-kwargs must be a JSON object, got {args.synth_kwargs!r}")
    synth, free_params = args.synth, args.free_params
    if args.env_id is not None:
        if synth is not None or free_params is not None:
            raise ValueError("give either --env-id or --synth/--free-params, not both")
        synth, free_params, env_kwargs = env_settings(args.env_id)
        synth_kwargs = {**env_kwargs, **synth_kwargs}
    elif synth is None:
        raise ValueError("give --synth NAME or --env-id ID")
    probe = ProbeNote(args.midi_pitch, args.velocity, args.note_duration_s,
                      args.render_duration_s, args.sample_rate)
    mel = {"n_fft": args.n_fft, "hop_length": args.hop_length, "n_mels": args.n_mels,
           "f_min": args.f_min, "f_max": args.f_max}
    return DatasetConfig(
        synth=synth, n=args.n, synth_kwargs=synth_kwargs, free_params=free_params,
        shard_size=args.shard_size, seed=args.seed, store_mel=args.store_mel,
        store_audio=args.store_audio, mel=mel, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, probe=probe, render_batch=args.render_batch)


def main(args: Args) -> int:
    try:
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} exists and is not a directory")
        config = config_from_args(args)
        use_ray = args.ray or args.ray_address is not None
        if use_ray:
            from synthmatch.distributed import connect

            connect(args.ray_address, device=args.device)
    except (ValueError, TypeError, ImportError, ConnectionError) as exc:
        print(f"make_dataset.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        dataset = write_dataset(config, args.out, workers=args.workers, progress=args.progress,
                                device=args.device, ray=use_ray)
    except IncompleteDatasetError as exc:
        print(f"make_dataset.py: {exc}", file=sys.stderr)
        return 130 if exc.interrupted else 1
    except KeyboardInterrupt:
        print("make_dataset.py: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (DatasetError, ValueError, KeyError, TypeError, ImportError) as exc:
        # KeyError's str() adds quotes around the message (an unknown parameter name).
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"make_dataset.py: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, (ValueError, KeyError, TypeError)) else 1
    sizes = ", ".join(f"{split} {dataset.num_items(split)}" for split in dataset.splits)
    print(f"{dataset.num_items()} presets of {config.synth} ({len(dataset.param_names)} params) "
          f"in {config.num_shards} shards at {dataset.root}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
