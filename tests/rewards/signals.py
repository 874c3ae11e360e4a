"""Test signals, and a view of features as tensors, shared by the reward tests."""

from __future__ import annotations

import math

import torch

from synthmatch.rewards import AudioFeatures

SR = 16000


def tone(freq_hz: float = 440.0, amplitude: float = 0.5, num_samples: int = SR) -> torch.Tensor:
    """A ``(1, num_samples)`` sine."""
    t = torch.arange(num_samples, dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t)).float()[None]


def noise(batch: int, seed: int, amplitude: float = 0.3) -> torch.Tensor:
    """``(batch, SR)`` Gaussian noise."""
    return torch.randn(batch, SR, generator=torch.Generator().manual_seed(seed)) * amplitude


def synth_like(batch: int, seed: int) -> torch.Tensor:
    """Decaying harmonic tones with random pitch, brightness and level: ``(batch, SR)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(SR) / SR
    f0 = 110.0 * 2 ** (3 * torch.rand(batch, 1, generator=g))
    bright = 0.3 + torch.rand(batch, 1, generator=g)
    level = 10 ** (-30 * torch.rand(batch, 1, generator=g) / 20)
    out = torch.zeros(batch, SR)
    for k in range(1, 9):
        out += torch.sin(2 * math.pi * k * f0 * t) * bright**k
    return 0.3 * level * out * torch.exp(-3 * t)


def feature_tensors(features: AudioFeatures) -> list[torch.Tensor]:
    """Every tensor of ``features``, in a fixed order."""
    return [
        *features.mag, *features.log_mag, features.mag_norm, features.log_mel, features.mfcc,
        features.centroid_hz, features.loudness_db, features.stats.dc,
        features.stats.clip_fraction, features.stats.rms_db,
    ]
