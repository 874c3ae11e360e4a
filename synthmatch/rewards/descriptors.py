"""Frame descriptors read off an STFT: spectral centroid and A-weighted loudness."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from synthmatch.rewards.features import POWER_EPS, check_audio, check_resolution, stft_power

# Gating level below which frames count as silent (ITU-R BS.1770's absolute gate is -70 LKFS):
# differences between -90 and -120 dB are inaudible and must not dominate a reward.
LOUDNESS_FLOOR_DB = -70.0
# Centroids are compared on a log-frequency axis; clamping keeps log2 finite.
MIN_CENTROID_HZ = 20.0


def a_weighting_db(freq_hz: np.ndarray | float) -> np.ndarray:
    """IEC 61672-1 A-weighting in dB (0 dB at 1 kHz, ``-inf`` at 0 Hz).

    Args:
        freq_hz: Frequencies in Hz.

    Returns:
        Gains in dB, same shape as ``freq_hz``.
    """
    f2 = np.asarray(freq_hz, dtype=np.float64) ** 2
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
    )
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(ra) + 2.0


class SpectralDescriptors(nn.Module):
    """Per-frame spectral centroid (Hz) and A-weighted loudness (dB) from one STFT.

    Both come out of a single matmul of the power spectrogram with three weight vectors.

    Loudness is the mean square of the Hann-windowed, A-weighted frame, obtained from the
    power spectrum by Parseval's theorem, in dB re full scale: a full-scale 1 kHz sine reads
    -3.01 dB (like ``20 * log10(rms)``), 20 dB quieter audio reads exactly 20 dB lower, and
    frames below ``floor_db`` read ``floor_db``. The centroid is the power-weighted mean
    frequency (a magnitude weighting would need a square root of every bin); a floor of
    :data:`~synthmatch.rewards.features.POWER_EPS` per bin makes silent frames read
    ``sample_rate / 4`` instead of ``0 / 0``.

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size (Hann window of the same length).
        hop_length: Hop in samples.
        floor_db: Loudness floor in dB.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        n_fft: int = 1024,
        hop_length: int = 256,
        floor_db: float = LOUDNESS_FLOOR_DB,
    ):
        super().__init__()
        check_resolution(n_fft, hop_length, n_fft)
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.floor_db = float(floor_db)
        window = torch.hann_window(n_fft, dtype=torch.float64)
        freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
        # One-sided spectrum: every bin but DC and Nyquist stands for two conjugate bins.
        sides = np.full(freqs.shape, 2.0)
        sides[0] = 1.0
        if n_fft % 2 == 0:
            sides[-1] = 1.0
        a_power = 10.0 ** (a_weighting_db(freqs) / 10.0)
        parseval = 1.0 / (n_fft * float((window**2).sum()))
        basis = np.stack([freqs, np.ones_like(freqs), sides * a_power * parseval], axis=1)
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("basis", torch.from_numpy(basis).float(), persistent=False)
        # The projection of a flat POWER_EPS floor, added instead of clamping every bin.
        floor = torch.from_numpy(basis.sum(axis=0) * POWER_EPS).float()
        self.register_buffer("floor_projection", floor, persistent=False)

    def power(self, x: Tensor) -> Tensor:
        """``(B, T)`` audio -> ``(B, n_fft // 2 + 1, frames)`` unnormalised STFT power."""
        return stft_power(check_audio(x), self.n_fft, self.hop_length, self.window)

    def from_power(self, power: Tensor) -> tuple[Tensor, Tensor]:
        """Centroid and loudness of every frame.

        Args:
            power: ``(B, n_fft // 2 + 1, frames)`` unnormalised STFT power (see
                :func:`~synthmatch.rewards.features.stft_power`).

        Returns:
            ``(centroid_hz, loudness_db)``, each ``(B, frames)``.
        """
        basis = self.basis.to(device=power.device, dtype=power.dtype)
        return self.from_projection(torch.matmul(power.transpose(-2, -1), basis))

    def from_projection(self, proj: Tensor) -> tuple[Tensor, Tensor]:
        """Centroid and loudness from ``(B, frames, 3)`` power projected on :attr:`basis`."""
        proj = proj + self.floor_projection.to(device=proj.device, dtype=proj.dtype)
        centroid = proj[..., 0] / proj[..., 1]
        loudness = 10.0 * proj[..., 2].clamp_min(10.0 ** (self.floor_db / 10.0)).log10()
        return centroid, loudness

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, T)`` audio -> ``(centroid_hz, loudness_db)``, each ``(B, frames)``."""
        return self.from_power(self.power(x))
