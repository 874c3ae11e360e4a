"""The features of an audio batch that the perceptual distance compares, as one cached object."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from synthmatch.rewards.penalties import SignalStats

IndexLike = Tensor | Sequence[int] | Sequence[bool]


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor in a tree of dataclasses and tuples."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map_tensors(o, fn) for o in obj)
    if dataclasses.is_dataclass(obj):
        return type(obj)(**{
            f.name: _map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)
        })
    raise TypeError(f"cannot map over {type(obj).__name__}")


def _leaves(obj: Any) -> list[Tensor]:
    """Every tensor in a tree of dataclasses and tuples, in field order."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, tuple):
        return [t for o in obj for t in _leaves(o)]
    return [t for f in dataclasses.fields(obj) for t in _leaves(getattr(obj, f.name))]


@dataclass
class AudioFeatures:
    """Everything :class:`~synthmatch.rewards.PerceptualDistance` needs from one ``(B, T)``
    batch, computed once.

    All tensors have the batch first. Compute with
    :meth:`~synthmatch.rewards.PerceptualDistance.features`; the fields depend on that
    module's configuration and the audio length.

    Attributes:
        mag: Per MR-STFT resolution, ``(B, n_fft // 2 + 1, frames)`` clamped magnitude.
        log_mag: Per resolution, its natural log.
        mag_norm: ``(B, R)`` Frobenius norm of each ``mag`` (spectral-convergence denominator).
        log_mel: ``(B, n_mels, frames)`` log-mel in dB
            (:class:`~synthmatch.rewards.features.LogMelSpectrogram`'s scaling); environments
            use it as their observation.
        mfcc: ``(B, n_mfcc, frames)`` MFCCs of ``log_mel``.
        centroid_hz: ``(B, frames)`` spectral centroid.
        loudness_db: ``(B, frames)`` A-weighted loudness, floored.
        stats: Time-domain statistics for the penalties, each ``(B,)``.
    """

    mag: tuple[Tensor, ...]
    log_mag: tuple[Tensor, ...]
    mag_norm: Tensor
    log_mel: Tensor
    mfcc: Tensor
    centroid_hz: Tensor
    loudness_db: Tensor
    stats: SignalStats

    @property
    def batch_size(self) -> int:
        return self.log_mel.shape[0]

    @property
    def device(self) -> torch.device:
        return self.log_mel.device

    def _index_tensor(self, idx: IndexLike) -> Tensor:
        idx = torch.as_tensor(idx, device=self.device)
        if idx.ndim != 1:
            raise ValueError(
                f"idx must be a 1-D index tensor or boolean mask, got shape {tuple(idx.shape)}"
            )
        if idx.dtype == torch.bool:
            if idx.shape[0] != self.batch_size:
                raise ValueError(
                    f"boolean mask has {idx.shape[0]} entries for a batch of {self.batch_size}"
                )
        elif idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8):
            raise TypeError(f"idx must hold integers or booleans, got {idx.dtype}")
        return idx

    def index(self, idx: IndexLike) -> AudioFeatures:
        """The rows ``idx`` (a 1-D integer index or boolean mask) as new features."""
        idx = self._index_tensor(idx)
        return _map_tensors(self, lambda t: t[idx])

    def rows(self, start: int, stop: int) -> AudioFeatures:
        """Rows ``start:stop`` as views (no copy)."""
        return _map_tensors(self, lambda t: t[start:stop])

    def assign_(self, idx: IndexLike, other: AudioFeatures) -> AudioFeatures:
        """Overwrite rows ``idx`` in place with ``other`` (one row per selected index).

        Used when some environments of a batch reset to new targets.

        Args:
            idx: 1-D integer index or boolean mask into this batch.
            other: Features of the replacement rows, from the same configuration and length.

        Returns:
            ``self``.
        """
        idx = self._index_tensor(idx)
        count = int(idx.sum()) if idx.dtype == torch.bool else idx.shape[0]
        if other.batch_size != count:
            raise ValueError(f"idx selects {count} rows but other has {other.batch_size}")
        pairs = list(zip(_leaves(self), _leaves(other), strict=False))
        if len(self.mag) != len(other.mag) or any(
            dst.shape[1:] != src.shape[1:] for dst, src in pairs
        ):
            raise ValueError(
                "feature shapes differ: other comes from a differently configured "
                "PerceptualDistance or from audio of another length"
            )
        for dst, src in pairs:
            # Features computed under torch.inference_mode can only be written inside it.
            with torch.inference_mode() if dst.is_inference() else contextlib.nullcontext():
                dst[idx] = src.to(device=dst.device, dtype=dst.dtype)
        return self

    def to(self, device: torch.device | str) -> AudioFeatures:
        """A copy on ``device`` (or ``self``'s tensors where already there)."""
        return _map_tensors(self, lambda t: t.to(device))

    def clone(self) -> AudioFeatures:
        """A deep copy (safe to :meth:`assign_` into without touching the original)."""
        return _map_tensors(self, lambda t: t.clone())
