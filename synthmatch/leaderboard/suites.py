"""Benchmark suites: named, versioned, verified sets of target sounds.

A suite is a directory with ``manifest.json`` and one 16-bit FLAC file per target. The
manifest records how the suite was made (command, seeds, synth, versions), the probe note and
sample rate, the true normalised parameters where they exist, and the sha256 of every audio
file. Loading verifies every file against the manifest, and a *published* suite's manifest
against the hash pinned in :data:`PUBLISHED`: a published suite never changes; a change makes
a new version (``bench-v2/...``).

Suites ship inside the package (``synthmatch/leaderboard/suite_data/``), so running one needs
neither the instruments that made it nor a download.

Seed ranges of the in-domain suites (targets are ``ParamTable.sample(1, Generator(seed))``,
silent draws skipped) are disjoint from every other seed the project uses: env training uses
``seed + i`` for small run seeds, held-out evaluation ``1_000_000 + i``, datasets 63-bit
``SeedSequence`` hashes (:func:`synthmatch.data.config.shard_seed`). See :data:`SEED_BASES`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.fileio import sha256_file  # noqa: F401  (re-exported: suites hash files)

SUITE_FORMAT = "synthmatch-suite"
SUITE_VERSION = 1
SUITE_ROOT = Path(__file__).parent / "suite_data"
# First seed of each in-domain suite (target i of a suite tries seeds base, base+1, ...).
SEED_BASES = {"subtractive-id": 20_000_000, "fm-id": 21_000_000, "torchsynth-id": 22_000_000,
              "quick": 23_000_000}
# sha256 of the manifest of every published suite: loading refuses any other manifest.
PUBLISHED: dict[str, str] = {
    "bench-v1/cross-vital": "430cce6e32d84bf3daf5dc3a1317bb26608f529b4798868723221901848f3792",
    "bench-v1/cross-vst3": "7ea95f184fc623d582958a2dc46025342d43934e7ecad7d9cf56604c2d970611",
    "bench-v1/fm-id": "188588c1c3073a9e62e50ed6572d50ee64594accd6c77a034cd4ffe7fa4b7615",
    "bench-v1/quick": "20e91a17888a3456c6c7f9659a665e1ff1b16f0750fad79f6549af8ff80e2051",
    "bench-v1/subtractive-id": "313ae636ca0602d90f0ef996ec5c2ae5c4b72d896086d249ede8bc21f0996654",
    "bench-v1/torchsynth-id": "c6511287ecfdb751a051d1841988ffd5864cbd5a0f196ad15345e89dedd00f0b",
}


class SuiteError(ValueError):
    """A suite is unknown, malformed or does not match its recorded hashes."""


@dataclass
class Suite:
    """Target sounds of one suite, loaded and verified.

    Attributes:
        name: ``bench-v1/subtractive-id``.
        audio: ``(N, T)`` float32 mono targets.
        target_names: ``N`` names (``t000``...).
        sample_rate: Hz.
        probe: The probe note the targets were played at (a ``ProbeNote`` dict).
        env_id: The registered env whose synth made the targets (in-domain suites); ``None``
            for sounds of other instruments.
        params: ``(N, P)`` true normalised parameters of ``env_id``'s synth, or ``None``.
        param_names: Names of the ``P`` columns, or ``None``.
        manifest: The whole manifest.
    """

    name: str
    audio: Tensor
    target_names: list[str]
    sample_rate: int
    probe: dict[str, Any]
    env_id: str | None
    params: Tensor | None
    param_names: list[str] | None
    manifest: dict[str, Any] = field(repr=False)

    def __len__(self) -> int:
        return len(self.target_names)

    def subset(self, index: list[int] | slice) -> Suite:
        """The same suite restricted to some targets (for chunked runs)."""
        rows = list(range(len(self)))[index] if isinstance(index, slice) else list(index)
        return Suite(self.name, self.audio[rows], [self.target_names[i] for i in rows],
                     self.sample_rate, self.probe, self.env_id,
                     None if self.params is None else self.params[rows], self.param_names,
                     self.manifest)


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise ImportError("benchmark suites are FLAC files read with soundfile: pip install "
                          "'synthmatch[leaderboard]'") from None
    return soundfile


def available_suites(root: Path = SUITE_ROOT) -> list[str]:
    """Names of the suites under ``root`` (``bench-v1/quick``...), sorted."""
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/manifest.json"))


def suite_dir(name: str, root: Path = SUITE_ROOT) -> Path:
    """The directory of suite ``name``, or of a suite directory given as a path."""
    path = Path(name)
    if (path / "manifest.json").is_file():
        return path
    d = root / name
    if not (d / "manifest.json").is_file():
        known = ", ".join(available_suites(root)) or "none"
        raise SuiteError(f"unknown suite {name!r}; available: {known}")
    return d


def load_suite(name: str, root: Path = SUITE_ROOT) -> Suite:
    """Load and verify suite ``name`` (or a suite directory).

    Raises:
        SuiteError: unknown suite, a manifest that differs from the published one, a missing
            file, or an audio file whose sha256 differs from the manifest's.
    """
    soundfile = _soundfile()
    d = suite_dir(name, root)
    manifest_path = d / "manifest.json"
    recorded = PUBLISHED.get(name)
    if recorded is not None and sha256_file(manifest_path) != recorded:
        raise SuiteError(f"{manifest_path} differs from the published {name} (sha256 "
                         "mismatch): a published suite never changes; make a new version")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise SuiteError(f"{manifest_path}: not valid JSON ({err})") from None
    if manifest.get("format") != SUITE_FORMAT or manifest.get("version") != SUITE_VERSION:
        raise SuiteError(f"{manifest_path}: not a {SUITE_FORMAT} v{SUITE_VERSION} manifest")
    clips, names, params = [], [], []
    rate, length = manifest["sample_rate"], manifest["num_samples"]
    for t in manifest["targets"]:
        path = d / t["file"]
        if not path.is_file():
            raise SuiteError(f"suite {manifest['name']}: missing audio file {path}")
        if sha256_file(path) != t["sha256"]:
            raise SuiteError(f"suite {manifest['name']}: {path} does not match its sha256 in "
                             "the manifest (the file was changed or damaged)")
        x, sr = soundfile.read(path, dtype="float32", always_2d=False)
        if sr != rate or x.shape != (length,):
            raise SuiteError(f"{path}: {x.shape} at {sr} Hz, manifest says ({length},) at "
                             f"{rate} Hz")
        clips.append(x)
        names.append(t["name"])
        params.append(t.get("params"))
    has_params = manifest.get("param_names") is not None
    return Suite(
        name=manifest["name"], audio=torch.from_numpy(np.stack(clips)), target_names=names,
        sample_rate=rate, probe=manifest["probe"], env_id=manifest.get("env_id"),
        params=torch.tensor(params, dtype=torch.float32) if has_params else None,
        param_names=manifest.get("param_names"), manifest=manifest)


def write_suite(name: str, audio: np.ndarray, *, sample_rate: int, probe: dict[str, Any],
                description: str, made_by: str, env_id: str | None = None,
                params: np.ndarray | None = None, param_names: list[str] | None = None,
                target_info: list[dict[str, Any]] | None = None,
                extra: dict[str, Any] | None = None, root: Path = SUITE_ROOT) -> Path:
    """Write a new suite: 16-bit FLAC per target and the manifest, all or nothing.

    The suite is assembled in a temporary sibling directory and renamed into place, so an
    interrupted write leaves no partial suite. An existing suite is never overwritten.

    Args:
        name: ``bench-v1/<name>``.
        audio: ``(N, T)`` float audio in ``[-1, 1]``.
        sample_rate, probe: How the targets were played.
        description, made_by: Recorded in the manifest (what the suite is, the command).
        env_id, params, param_names: For in-domain suites: the env and ``(N, P)`` true
            normalised parameters.
        target_info: Per-target extra fields (``seed``, ``source``...).
        extra: Extra top-level manifest fields (seed ranges, instrument versions...).

    Returns:
        The suite directory.
    """
    soundfile = _soundfile()
    final = root / name
    if final.exists():
        raise SuiteError(f"suite {name} exists at {final}; published suites never change, "
                         "write a new version instead")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or not np.isfinite(audio).all() or np.abs(audio).max() > 1.0:
        raise SuiteError("suite audio must be finite (N, T) in [-1, 1]")
    if params is not None and (param_names is None or params.shape != (len(audio),
                                                                       len(param_names))):
        raise SuiteError("params must be (N, P) with P param_names")
    tmp = final.with_name(f".{final.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "audio").mkdir(parents=True)
    targets = []
    try:
        for i, clip in enumerate(audio):
            entry: dict[str, Any] = {"name": f"t{i:03d}", "file": f"audio/t{i:03d}.flac"}
            path = tmp / entry["file"]
            soundfile.write(path, clip, sample_rate, subtype="PCM_16", format="FLAC")
            entry["sha256"] = sha256_file(path)
            entry.update((target_info or [{}] * len(audio))[i])
            if params is not None:
                entry["params"] = [round(float(v), 7) for v in params[i]]
            targets.append(entry)
        manifest = {
            "format": SUITE_FORMAT, "version": SUITE_VERSION, "name": name,
            "description": description, "made_by": made_by, "sample_rate": sample_rate,
            "num_samples": audio.shape[1], "probe": probe, "env_id": env_id,
            "param_names": list(param_names) if param_names is not None else None,
            **(extra or {}), "targets": targets,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
