"""User-supplied target audio: validation and the documented conversions."""

from __future__ import annotations

import warnings
from math import gcd

import numpy as np
import torch
from torch import Tensor

# A target quieter than this (peak, dBFS) is treated as silent: nothing to match.
SILENCE_PEAK_DB = -60.0
# Share of samples at full scale above which the target is reported as clipped.
CLIPPED_FRACTION = 0.01
MAX_CHANNELS = 8


def prepare_target_audio(audio, sample_rate: int, *, target_rate: int,
                         num_samples: int) -> Tensor:
    """Convert a user's audio to the env's format: mono float32 ``(num_samples,)``.

    Conversions (documented, applied in this order):

    - integer PCM (``int16``/``int32``) is scaled to ``[-1, 1]``;
    - multi-channel audio, ``(channels, T)`` or ``(T, channels)`` with up to 8 channels, is
      averaged to mono;
    - another sample rate is resampled (polyphase, ``scipy.signal.resample_poly``);
    - the result is trimmed or zero-padded to ``num_samples`` (the probe note's length).

    Args:
        audio: 1-D or 2-D array-like (numpy, torch or list).
        sample_rate: The rate ``audio`` was recorded at, in Hz.
        target_rate: The env's sample rate.
        num_samples: The env's render length.

    Raises:
        ValueError: empty audio, NaN/inf, float values outside ``[-1, 1]``, silence (peak below
            -60 dBFS), more than 2 dimensions, or a non-positive sample rate.
    """
    x = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
    if x.size == 0:
        raise ValueError("target audio is empty")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"target sample rate must be a positive integer, got {sample_rate!r}")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64) / float(np.iinfo(x.dtype).max + 1)
    elif not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"target audio must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim == 2:
        # Channels are the short axis: (2, T) and (T, 2) both mean stereo.
        axis = 0 if x.shape[0] <= x.shape[1] else 1
        if x.shape[axis] > MAX_CHANNELS:
            raise ValueError(f"target audio of shape {x.shape} does not look like (channels, "
                             f"samples) or (samples, channels) with <= {MAX_CHANNELS} channels")
        x = x.mean(axis=axis)
    elif x.ndim != 1:
        raise ValueError(f"target audio must be 1-D or 2-D, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("target audio contains NaN or inf")
    peak = float(np.abs(x).max())
    if peak > 1.0 + 1e-6:
        raise ValueError(f"float target audio must lie in [-1, 1], peak is {peak:.3f}; scale it "
                         "(integer PCM arrays are scaled automatically)")
    if peak < 10.0 ** (SILENCE_PEAK_DB / 20.0):
        raise ValueError(f"target audio is silent (peak {20 * np.log10(max(peak, 1e-12)):.1f} "
                         f"dBFS < {SILENCE_PEAK_DB} dBFS): nothing to match")
    if np.mean(np.abs(x) >= 0.999) > CLIPPED_FRACTION:
        warnings.warn("target audio looks clipped (many samples at full scale); matching "
                      "will chase the distortion", stacklevel=3)
    if sample_rate != target_rate:
        from scipy.signal import resample_poly

        g = gcd(int(sample_rate), int(target_rate))
        x = resample_poly(x, target_rate // g, int(sample_rate) // g)
    out = np.zeros(num_samples, dtype=np.float32)
    n = min(num_samples, x.shape[0])
    out[:n] = x[:n]
    return torch.from_numpy(out)
