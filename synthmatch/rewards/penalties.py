"""Penalties for degenerate predictions: DC offset, clipping and silence.

Spectral distances are blind to some failure modes an agent can exploit or get stuck in (a DC
offset hides below the lowest mel band, clipping looks like a little extra brightness, and
silence has a bounded spectral-convergence error of exactly 1). Each penalty here is in
``[0, 1]`` per item and counts only what the prediction does *beyond* the target, so a target
that itself clips or sits at -80 dB is never held against a prediction that matches it, and
identical audio always scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synthmatch.rewards.features import check_audio, check_audio_pair

# Below 1e-10 RMS (-200 dB) nothing is audible; the floor keeps log10 finite for digital silence.
_RMS_FLOOR = 1e-10


@dataclass(frozen=True)
class SignalStats:
    """Time-domain statistics of a batch, enough to compute :class:`Penalties`.

    Attributes:
        dc: ``(B,)`` mean sample value.
        clip_fraction: ``(B,)`` fraction of samples with ``|x| >= clip_level``.
        rms_db: ``(B,)`` ``20 * log10(rms)`` in dB re full scale (a full-scale sine reads
            -3.01 dB), floored at -200 dB.
    """

    dc: Tensor
    clip_fraction: Tensor
    rms_db: Tensor


@dataclass(frozen=True)
class Penalties:
    """Per-item penalties, each ``(B,)`` in ``[0, 1]`` (0 = fine).

    Attributes:
        dc: Excess DC offset: ``ramp(|mean(pred)|) - ramp(|mean(target)|)`` clipped at 0, where
            ``ramp`` rises linearly from 0 at ``dc_threshold`` to 1 at ``dc_saturation``.
        clipping: Excess fraction of samples at or above ``clip_level`` in magnitude.
        silence: For a target louder than ``silence_db``: 0 while the prediction is at least
            that loud, rising linearly to 1 at ``silence_db - silence_ramp_db`` and below.
    """

    dc: Tensor
    clipping: Tensor
    silence: Tensor

    def total(self) -> Tensor:
        """``(B,)`` sum of the three penalties, in ``[0, 3]``."""
        return self.dc + self.clipping + self.silence

    def as_dict(self) -> dict[str, Tensor]:
        """``{"dc": ..., "clipping": ..., "silence": ...}``, each ``(B,)``."""
        return {"dc": self.dc, "clipping": self.clipping, "silence": self.silence}


def signal_stats(audio: Tensor, *, clip_level: float = 0.999) -> SignalStats:
    """Compute :class:`SignalStats` of a ``(B, T)`` batch.

    Args:
        audio: ``(B, T)`` audio in ``[-1, 1]``.
        clip_level: Magnitude counted as clipped.

    Returns:
        The statistics, each ``(B,)``.
    """
    x = check_audio(audio)
    if not 0.0 < clip_level <= 1.0:
        raise ValueError(f"clip_level must be in (0, 1], got {clip_level}")
    num_samples = x.shape[-1]
    # A norm is a fast fused reduction (torch.var_mean is ~30x slower on CPU).
    mean_square = torch.linalg.vector_norm(x, dim=-1).square() / num_samples
    # A float 0/1 mask written over |x| and summed: 3x faster on CPU than a bool mask and
    # count_nonzero, and exact (integer sums up to 2 ** 24). Clipping has no gradient.
    clipped = x.detach().abs().ge_(clip_level).sum(dim=-1)
    return SignalStats(
        dc=x.mean(dim=-1),
        clip_fraction=clipped / num_samples,
        rms_db=10.0 * mean_square.clamp_min(_RMS_FLOOR**2).log10(),
    )


def penalties_from_stats(
    pred: SignalStats,
    target: SignalStats,
    *,
    dc_threshold: float = 0.01,
    dc_saturation: float = 0.1,
    silence_db: float = -60.0,
    silence_ramp_db: float = 10.0,
) -> Penalties:
    """Penalties of a prediction against its target, from precomputed statistics.

    Args:
        pred: Statistics of the ``(B, T)`` prediction.
        target: Statistics of the ``(B, T)`` target (batch ``B`` or 1).
        dc_threshold: ``|mean|`` below which a DC offset is ignored (0.01 = -40 dBFS).
        dc_saturation: ``|mean|`` at which the DC penalty reaches 1.
        silence_db: RMS level in dB re full scale below which a prediction counts as silent
            when its target is louder than this.
        silence_ramp_db: Width of the ramp from 0 (at ``silence_db``) to 1.

    Returns:
        :class:`Penalties`, each ``(B,)`` in ``[0, 1]``.
    """
    if not 0.0 <= dc_threshold < dc_saturation:
        raise ValueError(
            f"need 0 <= dc_threshold < dc_saturation, got {dc_threshold} and {dc_saturation}"
        )
    if silence_ramp_db <= 0.0:
        raise ValueError(f"silence_ramp_db must be > 0, got {silence_ramp_db}")

    def dc_ramp(dc: Tensor) -> Tensor:
        return ((dc.abs() - dc_threshold) / (dc_saturation - dc_threshold)).clamp(0.0, 1.0)

    dc = (dc_ramp(pred.dc) - dc_ramp(target.dc)).clamp_min(0.0)
    clipping = (pred.clip_fraction - target.clip_fraction).clamp_min(0.0)
    quietness = ((silence_db - pred.rms_db) / silence_ramp_db).clamp(0.0, 1.0)
    # Multiplying by the indicator (rather than indexing) keeps the result batched.
    silence = quietness * (target.rms_db > silence_db).to(quietness.dtype)
    return Penalties(dc=dc, clipping=clipping, silence=silence)


def degenerate_penalty(
    pred: Tensor,
    target: Tensor,
    *,
    clip_level: float = 0.999,
    dc_threshold: float = 0.01,
    dc_saturation: float = 0.1,
    silence_db: float = -60.0,
    silence_ramp_db: float = 10.0,
) -> Penalties:
    """DC-offset, clipping and silence penalties of ``pred`` against ``target``.

    Args:
        pred: ``(B, T)`` predicted audio.
        target: ``(B, T)`` target audio.
        clip_level: Magnitude counted as clipped.
        dc_threshold: See :func:`penalties_from_stats`.
        dc_saturation: See :func:`penalties_from_stats`.
        silence_db: See :func:`penalties_from_stats`.
        silence_ramp_db: See :func:`penalties_from_stats`.

    Returns:
        :class:`Penalties`, each ``(B,)`` in ``[0, 1]``; ``.total()`` sums them.

    Example:
        >>> target = torch.sin(torch.linspace(0, 880 * 3.1416, 16000))[None] * 0.5
        >>> degenerate_penalty(torch.zeros_like(target), target).silence
        tensor([1.])
    """
    pred, target = check_audio_pair(pred, target)
    return penalties_from_stats(
        signal_stats(pred, clip_level=clip_level),
        signal_stats(target, clip_level=clip_level),
        dc_threshold=dc_threshold,
        dc_saturation=dc_saturation,
        silence_db=silence_db,
        silence_ramp_db=silence_ramp_db,
    )
