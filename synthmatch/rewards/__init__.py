"""Audio -> per-item perceptual distances and penalties (rewards know nothing of envs).

Every distance is a callable ``(pred (B, T), target (B, T)) -> (B,)``. The environments use
:class:`PerceptualDistance`, which computes a batch's :class:`AudioFeatures` once (its
``log_mel`` doubles as the observation) and compares cached target features each step.
"""

from synthmatch.rewards.audio_features import AudioFeatures
from synthmatch.rewards.descriptors import SpectralDescriptors, a_weighting_db
from synthmatch.rewards.distances import (
    DEFAULT_FFT_SIZES,
    DEFAULT_HOP_SIZES,
    LoudnessDistance,
    MFCCDistance,
    MultiResolutionSTFTDistance,
    SpectralCentroidDistance,
    log_magnitude_l1,
    spectral_convergence,
)
from synthmatch.rewards.features import (
    MFCC,
    LogMelSpectrogram,
    dct_matrix,
    hz_to_mel,
    magnitude_from_power,
    mel_filterbank,
    mel_to_hz,
    stft_power,
    stft_powers,
)
from synthmatch.rewards.penalties import (
    Penalties,
    SignalStats,
    degenerate_penalty,
    penalties_from_stats,
    signal_stats,
)
from synthmatch.rewards.perceptual import PerceptualDistance

__all__ = [
    "DEFAULT_FFT_SIZES",
    "DEFAULT_HOP_SIZES",
    "MFCC",
    "AudioFeatures",
    "LogMelSpectrogram",
    "LoudnessDistance",
    "MFCCDistance",
    "MultiResolutionSTFTDistance",
    "Penalties",
    "PerceptualDistance",
    "SignalStats",
    "SpectralCentroidDistance",
    "SpectralDescriptors",
    "a_weighting_db",
    "dct_matrix",
    "degenerate_penalty",
    "hz_to_mel",
    "log_magnitude_l1",
    "magnitude_from_power",
    "mel_filterbank",
    "mel_to_hz",
    "penalties_from_stats",
    "signal_stats",
    "spectral_convergence",
    "stft_power",
    "stft_powers",
]
