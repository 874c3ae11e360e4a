"""Batched DSP building blocks shared by the torch synths (no Python loops over samples)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Envelopes and LFOs are piecewise smooth: evaluate them on a control grid this many samples
# apart and interpolate linearly. 32 samples is 2 ms at 16 kHz, below the shortest attack.
CONTROL_HOP = 32
MIN_TIME_S = 1e-3


def control_times(num_samples: int, sample_rate: int, device: torch.device | str,
                  hop: int = CONTROL_HOP) -> Tensor:
    """Times in seconds of a control grid covering ``num_samples`` audio samples: ``(C,)``."""
    n = (num_samples - 1) // hop + 2
    return torch.arange(n, device=device, dtype=torch.float32) * (hop / sample_rate)


def to_audio_rate(control: Tensor, num_samples: int, hop: int = CONTROL_HOP) -> Tensor:
    """Linearly interpolate a ``(B, C)`` control signal from :func:`control_times` to ``(B, T)``."""
    start = control[:, :-1].unsqueeze(-1)
    step = (control[:, 1:] - control[:, :-1]).unsqueeze(-1)
    ramp = torch.arange(hop, device=control.device, dtype=control.dtype) / hop
    return torch.addcmul(start, step, ramp).view(control.shape[0], -1)[:, :num_samples]


def wavetable_read(values: Tensor, slopes: Tensor, phase: Tensor) -> Tensor:
    """Read one wrapped wavetable per row by linear interpolation.

    Element-wise maths and two gathers, so it runs alike on every device: ``grid_sample``
    would interpolate too, but on CUDA it goes to cuDNN's sampler, which rejected some calls.

    Args:
        values: ``(R, O, N)`` one period per row and oscillator, ``N`` a power of two.
        slopes: ``(R, O, N)`` the step from each value to the next, wrapping around
            (``values.roll(-1, -1) - values``).
        phase: ``(R, O, ...)`` float32 positions in table steps, ``>= 0``, any number of
            periods (read modulo ``N``). Overwritten with the interpolation weights, which
            saves an audio-rate buffer.

    Returns:
        ``(R, O, ...)`` float32 samples.
    """
    n = values.shape[-1]
    if n & (n - 1):
        raise ValueError(f"wavetable length must be a power of two, got {n}")
    # Flat indices into all tables at once: on CPU, a 1-D gather with int32 indices was the
    # fastest of the gathers measured.
    dtype = torch.int32 if values.numel() < 2**31 else torch.int64
    step = phase.to(dtype)  # truncation is the floor: phase >= 0
    weight = phase.frac_()
    base = torch.arange(0, values.numel(), n, device=phase.device, dtype=dtype)
    step.bitwise_and_(n - 1).add_(base.view(*values.shape[:2], *[1] * (phase.ndim - 2)))
    step = step.view(-1)
    start = values.reshape(-1).index_select(0, step).view(weight.shape)
    slope = slopes.reshape(-1).index_select(0, step).view(weight.shape)
    return start.addcmul_(weight, slope)


def adsr(t: Tensor, attack_s: Tensor, decay_s: Tensor, sustain: Tensor, release_s: Tensor,
         note_off_s: float | Tensor) -> Tensor:
    """Linear-segment ADSR envelope in ``[0, 1]``.

    Rises 0 -> 1 over ``attack_s``, falls to ``sustain`` over ``decay_s``, holds until
    ``note_off_s``, then falls from wherever it is to 0 over ``release_s``.

    Args:
        t: ``(T,)`` times in seconds (any grid).
        attack_s, decay_s, sustain, release_s: ``(B, 1)`` or ``(B,)`` per-item values.
        note_off_s: Note-off time, scalar or ``(B, 1)``.

    Returns:
        ``(B, T)`` envelope.
    """
    a, d, s, r = (x.reshape(-1, 1) for x in (attack_s, decay_s, sustain, release_s))
    a, d, r = a.clamp_min(MIN_TIME_S), d.clamp_min(MIN_TIME_S), r.clamp_min(MIN_TIME_S)
    if isinstance(note_off_s, Tensor):
        note_off_s = note_off_s.reshape(-1, 1)

    def held(time: Tensor) -> Tensor:
        rise = torch.clamp(time / a, max=1.0)
        fall = 1.0 - (1.0 - s) * torch.clamp((time - a) / d, 0.0, 1.0)
        return torch.minimum(rise, fall)

    # Filled on the device: a tensor made from a Python float would be copied from the host,
    # which makes the host wait for a GPU.
    off = (note_off_s.expand_as(a) if isinstance(note_off_s, Tensor)
           else torch.full_like(a, note_off_s))
    level_off = held(off)
    release = level_off * torch.clamp(1.0 - (t - note_off_s) / r, 0.0, 1.0)
    return torch.where(t < note_off_s, held(t), release)


def sine_lfo(t: Tensor, rate_hz: Tensor, phase: float = 0.0) -> Tensor:
    """``(B, T)`` sine in ``[-1, 1]`` at per-item ``rate_hz`` ``(B,)`` on the time grid ``t``."""
    return torch.sin(2.0 * torch.pi * (rate_hz.reshape(-1, 1) * t + phase))


def stft_frames(audio: Tensor, hop: int, window: Tensor) -> Tensor:
    """Spectra of half-overlapping frames: ``(B, T)`` -> complex ``(B, F, hop + 1)``.

    Frame ``m`` is centred on sample ``m * hop`` (the signal is zero-padded by ``hop`` on the
    left), ``F = ceil(T / hop) + 1``. With a sqrt-Hann ``window`` of length ``2 * hop`` for
    analysis and synthesis, :func:`overlap_add` reconstructs the input exactly: at 50% overlap
    the squared windows sum to one, so no normalisation pass is needed.
    """
    t = audio.shape[-1]
    frames = -(-t // hop) + 1
    padded = F.pad(audio, (hop, (frames + 1) * hop - t - hop))
    return torch.fft.rfft(padded.unfold(-1, 2 * hop, hop) * window)


def overlap_add(spectra: Tensor, hop: int, window: Tensor, length: int) -> Tensor:
    """Inverse of :func:`stft_frames`: complex ``(B, F, hop + 1)`` -> ``(B, length)``."""
    frames = torch.fft.irfft(spectra, n=2 * hop).mul_(window)
    out = frames[:, 1:, :hop] + frames[:, :-1, hop:]
    return out.reshape(out.shape[0], -1)[:, :length]


def sqrt_hann(length: int, device: torch.device | str = "cpu") -> Tensor:
    """Periodic square-root Hann window (perfect reconstruction at 50% overlap)."""
    return torch.hann_window(length, periodic=True, device=device).sqrt()
