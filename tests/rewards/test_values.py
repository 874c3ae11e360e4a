"""Reward values against a plain oracle: every feature and distance, recomputed the obvious way.

:class:`~synthmatch.rewards.PerceptualDistance` is tuned for speed (one padded signal for all
STFTs, shared spectra, projections folded into one matmul, fused reductions). The oracle below
recomputes every :class:`~synthmatch.rewards.AudioFeatures` field and every distance term from
the definitions in the docstrings, one ``torch.stft`` per resolution and one formula per line,
so any speed-up that moves a value beyond float rounding fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthmatch.rewards import (
    PerceptualDistance,
    a_weighting_db,
    dct_matrix,
    mel_filterbank,
    perceptual,
)
from synthmatch.rewards.features import mel_band_edges
from tests.rewards.signals import SR, feature_tensors, noise, synth_like, tone

# Default PerceptualDistance arguments, spelled out so the oracle does not read them back from
# the module under test.
DEFAULTS = {
    "fft_sizes": (2048, 1024, 256), "hop_sizes": (1024, 256, 128), "win_lengths": None,
    "n_fft": 1024, "hop_length": 256, "n_mels": 64, "n_mfcc": 20,
}
CONFIGS = {
    "default": {},
    # No MR-STFT resolution coincides with the mel front end's STFT.
    "unshared": {"fft_sizes": (2048, 512), "hop_sizes": (512, 128)},
    # Windows shorter than the FFT (zero-padded by torch.stft), an odd hop.
    "short_windows": {"fft_sizes": (2048, 1024, 512), "hop_sizes": (300, 256, 100),
                      "win_lengths": (1200, 1024, 240)},
    "small_front_end": {"n_fft": 512, "hop_length": 128, "n_mels": 40, "n_mfcc": 13},
}


def signals(num_samples: int = SR) -> torch.Tensor:
    """``(10, num_samples)``: tones, noise, synth-like notes, silence and degenerate audio."""
    t = torch.arange(num_samples) / SR
    square = torch.sign(torch.sin(2 * math.pi * 220.0 * t))
    rows = [
        tone(110.0, num_samples=num_samples),
        tone(440.0, 1.0, num_samples=num_samples),
        tone(5000.0, 0.01, num_samples=num_samples),
        noise(1, 0)[:, :num_samples],
        synth_like(2, 1)[:, :num_samples],
        torch.zeros(1, num_samples),
        square[None],  # full scale: every sample clips
        0.2 + 0.05 * square[None],  # DC offset
        3e-5 * noise(1, 2)[:, :num_samples],  # -100 dB: below every floor
    ]
    return torch.cat(rows)


def oracle_features(audio: torch.Tensor, config: dict) -> dict[str, torch.Tensor]:
    """Every feature of ``audio`` from its definition, in ``audio``'s dtype."""
    cfg = {**DEFAULTS, **config}
    x = audio
    wins = cfg["win_lengths"] or cfg["fft_sizes"]
    out: dict[str, torch.Tensor] = {"mag": [], "log_mag": []}
    for n_fft, hop, win in zip(cfg["fft_sizes"], cfg["hop_sizes"], wins, strict=True):
        spec = torch.stft(x, n_fft, hop, win, torch.hann_window(win, dtype=x.dtype),
                          return_complex=True)
        # auraloss 0.4's STFTLoss.stft, word for word.
        mag = torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=1e-8))
        out["mag"].append(mag)
        out["log_mag"].append(torch.log(mag))
    out["mag_norm"] = torch.stack([m.flatten(1).norm(dim=1) for m in out["mag"]], dim=1)

    n_fft, hop, n_mels = cfg["n_fft"], cfg["hop_length"], cfg["n_mels"]
    window = torch.hann_window(n_fft, dtype=x.dtype)
    power = torch.stft(x, n_fft, hop, n_fft, window, return_complex=True).abs() ** 2
    # Log-mel: power of a full-scale sine's peak bin is 1, the narrowest band has unit gain.
    fb = mel_filterbank(SR, n_fft, n_mels, 20.0, None).to(x.dtype)
    edges = mel_band_edges(n_mels, 20.0, SR / 2)
    max_height = float(np.max(2.0 / (edges[2:] - edges[:-2])))
    mel = (fb / max_height) @ (power / (window.sum() / 2) ** 2)
    out["log_mel"] = 10 * torch.log10(torch.clamp(mel, min=1e-10))
    out["mfcc"] = dct_matrix(cfg["n_mfcc"], n_mels).to(x.dtype) @ out["log_mel"]
    # Centroid and loudness of the power with a 1e-8 floor added to every bin.
    floored = power + 1e-8
    freqs = torch.linspace(0, SR / 2, n_fft // 2 + 1, dtype=torch.float64)
    out["centroid_hz"] = ((freqs.to(x.dtype)[:, None] * floored).sum(1) / floored.sum(1))
    sides = torch.full_like(freqs, 2.0)
    sides[0] = sides[-1] = 1.0
    a_weight = torch.from_numpy(10 ** (a_weighting_db(freqs.numpy()) / 10))
    window64 = torch.hann_window(n_fft, dtype=torch.float64)
    gains = (sides * a_weight / (n_fft * (window64**2).sum())).to(x.dtype)
    mean_square = (gains[:, None] * floored).sum(1)
    out["loudness_db"] = 10 * torch.log10(torch.clamp(mean_square, min=1e-7))

    out["dc"] = x.mean(1)
    out["clip_fraction"] = (x.abs() >= 0.999).to(x.dtype).mean(1)
    out["rms_db"] = 10 * torch.log10(torch.clamp((x**2).mean(1), min=1e-20))
    return out


def oracle_components(pred: dict, target: dict, n_mels: int) -> dict[str, torch.Tensor]:
    """Every unweighted term of :meth:`PerceptualDistance.components`, from oracle features."""
    stft = 0.0
    for mp, mt, lp, lt in zip(pred["mag"], target["mag"], pred["log_mag"], target["log_mag"],
                              strict=True):
        sc = (mt - mp).flatten(1).norm(dim=1) / mt.flatten(1).norm(dim=1)
        stft = stft + torch.clamp(sc, max=10.0) + (lt - lp).abs().flatten(1).mean(1)
    octaves = (torch.log2(torch.clamp(pred["centroid_hz"], min=20.0))
               - torch.log2(torch.clamp(target["centroid_hz"], min=20.0))).abs()
    energy = 10 ** (target["loudness_db"] / 10)
    ramp = lambda dc: torch.clamp((dc.abs() - 0.01) / (0.1 - 0.01), 0, 1)  # noqa: E731
    target_loud = (target["rms_db"] > -60.0).to(pred["rms_db"].dtype)
    return {
        "stft": stft / len(pred["mag"]),
        "mfcc": (target["mfcc"][:, 1:] - pred["mfcc"][:, 1:]).norm(dim=1).mean(1)
        / (math.sqrt(n_mels) * 10.0),
        "centroid": (energy * octaves).sum(1) / energy.sum(1),
        "loudness": (target["loudness_db"] - pred["loudness_db"]).abs().mean(1) / 20.0,
        "dc": torch.clamp(ramp(pred["dc"]) - ramp(target["dc"]), min=0),
        "clipping": torch.clamp(pred["clip_fraction"] - target["clip_fraction"], min=0),
        "silence": torch.clamp((-60.0 - pred["rms_db"]) / 10.0, 0, 1) * target_loud,
    }


def assert_features_equal(dist: PerceptualDistance, audio: torch.Tensor, expected: dict,
                          rtol: float) -> None:
    feats = dist.features(audio)
    got = {
        "mag": feats.mag, "log_mag": feats.log_mag, "mag_norm": feats.mag_norm,
        "log_mel": feats.log_mel, "mfcc": feats.mfcc, "centroid_hz": feats.centroid_hz,
        "loudness_db": feats.loudness_db, "dc": feats.stats.dc,
        "clip_fraction": feats.stats.clip_fraction, "rms_db": feats.stats.rms_db,
    }
    for name, want in expected.items():
        values = got[name] if isinstance(want, list) else [got[name]]
        wants = want if isinstance(want, list) else [want]
        assert len(values) == len(wants), name
        for value, ref in zip(values, wants, strict=True):
            assert value.dtype == audio.dtype, name
            # Atol: float rounding of values that are near 0 on a scale set by the largest.
            atol = rtol * float(ref.abs().max().clamp_min(1.0))
            torch.testing.assert_close(value, ref, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_features_equal_the_oracle(config):
    dist = PerceptualDistance(SR, **CONFIGS[config])
    audio = signals()
    assert_features_equal(dist, audio, oracle_features(audio, CONFIGS[config]), rtol=1e-5)


def test_features_of_short_audio_equal_the_oracle():
    # 1,025 samples: the least that the 2048-point resolution's reflect padding allows.
    audio = signals(1025)
    dist = PerceptualDistance(SR)
    assert_features_equal(dist, audio, oracle_features(audio, {}), rtol=1e-5)
    with pytest.raises(ValueError, match="too short"):
        dist.features(audio[:, :1024])



def test_features_in_pieces_equal_the_whole_batch(monkeypatch):
    # On CPU, features() computes spectra a few items at a time into the batch's tensors.
    dist, audio = PerceptualDistance(SR), signals()
    assert audio.shape[0] > perceptual.CPU_SPECTRA_CHUNK
    in_pieces = dist.features(audio)
    monkeypatch.setattr(perceptual, "CPU_SPECTRA_CHUNK", None)
    whole = dist.features(audio)
    for got, want in zip(feature_tensors(in_pieces), feature_tensors(whole), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        # The same frame-major layout, which the distances read without copies.
        assert got.stride() == want.stride()


@pytest.mark.parametrize("config", list(CONFIGS))
def test_components_and_distance_equal_the_oracle(config):
    kwargs = CONFIGS[config]
    dist = PerceptualDistance(SR, **kwargs)
    pred = signals()
    # Every prediction against an unrelated target, its own audio, and a near copy.
    target = torch.cat([pred.roll(3, dims=0), pred[:2], pred[2:4] * 1.001])
    pred = torch.cat([pred, pred[:2], pred[2:4]])
    n_mels = {**DEFAULTS, **kwargs}["n_mels"]
    expected = oracle_components(oracle_features(pred, kwargs), oracle_features(target, kwargs),
                                 n_mels)
    got = dist.components(pred, target)
    assert set(got) == set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    weights = {"stft": 0.1, "mfcc": 0.5, "centroid": 0.2, "loudness": 0.5}
    total = sum(weights.get(name, 1.0) * value for name, value in expected.items())
    torch.testing.assert_close(dist.distance(dist.features(pred), dist.features(target)), total,
                               rtol=1e-5, atol=1e-6)
    # Identical audio scores exactly 0 (a fused reduction must not leave rounding residue).
    assert torch.all(got["stft"][10:12] == 0) and torch.all(got["mfcc"][10:12] == 0)


def test_a_single_target_row_equals_the_oracle():
    dist = PerceptualDistance(SR)
    pred, target = signals(), synth_like(1, 5)
    expected = oracle_components(oracle_features(pred, {}),
                                 oracle_features(target.expand(len(pred), -1), {}), 64)
    for name, value in dist.components(pred, target).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
