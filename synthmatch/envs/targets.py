"""User-supplied target audio: validation and the documented conversions."""

from __future__ import annotations

import warnings
from math import gcd

import numpy as np
import torch
from torch import Tensor

# A target quieter than this (peak, dBFS) is treated as silent: nothing to match.
SILENCE_PEAK_DB = -60.0
# Share of flat-topped samples (see _clipped_fraction) above which the target is reported as
# clipped.
CLIPPED_FRACTION = 0.01
MAX_CHANNELS = 8
# Highest sample rate accepted (Hz): above every audio format in use (768 kHz DXD/PCM).
MAX_SAMPLE_RATE = 768_000
# Input kept beyond the probe's length before resampling: the resampling filter's reach, so the
# kept samples come out as if the whole clip had been resampled.
RESAMPLE_MARGIN_S = 0.05
# Unsigned PCM is offset binary: silence is the middle code.
_UNSIGNED_PCM = {np.dtype(np.uint8): 128.0, np.dtype(np.uint16): 32768.0}
_SIGNED_PCM = {np.dtype(np.int8): 128.0, np.dtype(np.int16): 32768.0,
               np.dtype(np.int32): 2147483648.0}


def prepare_target_audio(audio, sample_rate: int, *, target_rate: int,
                         num_samples: int) -> Tensor:
    """Convert a user's audio to the env's format: mono float32 ``(num_samples,)``.

    Conversions (documented, applied in this order):

    - integer PCM is scaled to ``[-1, 1]``: signed ``int8``/``int16``/``int32``, and unsigned
      ``uint8``/``uint16`` (offset binary, as 8-bit WAVs store it: the middle code is silence);
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
            -60 dBFS), more than 2 dimensions, an integer type that is not PCM (``int64``...),
            or a sample rate that is not an integer in ``1..768000`` Hz.
    """
    x = audio.detach().cpu().numpy() if isinstance(audio, Tensor) else np.asarray(audio)
    if x.size == 0:
        raise ValueError("target audio is empty")
    if (isinstance(sample_rate, bool | np.bool_) or not isinstance(sample_rate, int | np.integer)
            or not 0 < sample_rate <= MAX_SAMPLE_RATE):
        raise ValueError(f"target sample rate must be an integer number of Hz in 1.."
                         f"{MAX_SAMPLE_RATE}, got {sample_rate!r}")
    if x.dtype in _UNSIGNED_PCM:
        x = (x.astype(np.float64) - _UNSIGNED_PCM[x.dtype]) / _UNSIGNED_PCM[x.dtype]
    elif x.dtype in _SIGNED_PCM:
        x = x.astype(np.float64) / _SIGNED_PCM[x.dtype]
    elif np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"target audio of dtype {x.dtype} is not a PCM format: give float "
                         "samples in [-1, 1], or int8/int16/int32/uint8/uint16 PCM")
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
    if _clipped_fraction(x) > CLIPPED_FRACTION:
        warnings.warn("target audio looks clipped (flat tops at full scale); matching will "
                      "chase the distortion", stacklevel=3)
    if sample_rate != target_rate:
        from scipy.signal import resample_poly

        # Only the probe's length is used: resample that (plus the filter's reach), not a
        # whole long recording.
        keep = int(np.ceil((num_samples / target_rate + RESAMPLE_MARGIN_S) * sample_rate))
        g = gcd(int(sample_rate), int(target_rate))
        x = resample_poly(x[:keep], target_rate // g, int(sample_rate) // g)
    out = np.zeros(num_samples, dtype=np.float32)
    n = min(num_samples, x.shape[0])
    out[:n] = x[:n]
    return torch.from_numpy(out)


def _clipped_fraction(x: np.ndarray) -> float:
    """Share of samples on a flat top near full scale: equal to both neighbours and at
    ``|x| >= 0.99``. Clipping holds the limit value exactly for runs of samples; a clean
    full-scale waveform passes its peaks without repeating a value."""
    if x.shape[0] < 3:
        return 0.0
    mid = x[1:-1]
    flat = (mid == x[:-2]) & (mid == x[2:]) & (np.abs(mid) >= 0.99)
    return float(flat.sum()) / x.shape[0]
