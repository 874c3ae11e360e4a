"""The spectral front end: STFT power, Slaney mel filterbank, log-mel scaling, DCT/MFCC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from synthmatch.rewards import (
    MFCC,
    LogMelSpectrogram,
    SpectralDescriptors,
    a_weighting_db,
    dct_matrix,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    stft_power,
)
from synthmatch.rewards.features import mel_band_edges
from tests.rewards.signals import SR, tone


def test_stft_power_equals_squared_stft_magnitude():
    x = torch.randn(3, 4000, generator=torch.Generator().manual_seed(0))
    window = torch.hann_window(512)
    expected = torch.stft(x, 512, 128, 512, window, return_complex=True).abs().square()
    power = stft_power(x, 512, 128, window)
    assert power.shape == (3, 257, 1 + 4000 // 128)
    torch.testing.assert_close(power, expected, rtol=1e-5, atol=1e-6)


def test_stft_power_rejects_too_short_audio():
    with pytest.raises(ValueError, match="too short"):
        stft_power(torch.zeros(1, 100), 1024, 256, torch.hann_window(1024))


def test_slaney_mel_scale_round_trips_and_has_its_break_at_1khz():
    freqs = np.array([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(freqs)), freqs, rtol=1e-12, atol=1e-9)
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert hz_to_mel(500.0) == pytest.approx(7.5)  # linear below 1 kHz: f / (200 / 3)
    assert hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # 27 mels per factor 6.4 above


@pytest.mark.parametrize("n_fft,n_mels", [(1024, 64), (2048, 128), (512, 40)])
def test_mel_filterbank_is_slaney_triangles_with_unit_area(n_fft, n_mels):
    fb = mel_filterbank(SR, n_fft, n_mels, 20.0, None).double().numpy()
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    freqs = np.linspace(0, SR / 2, n_fft // 2 + 1)
    bin_hz = freqs[1]
    edges = mel_band_edges(n_mels, 20.0, SR / 2)
    for i, row in enumerate(fb):
        lo, centre, hi = edges[i], edges[i + 1], edges[i + 2]
        support = np.flatnonzero(row > 0)
        # Non-zero strictly inside (lo, hi).
        assert freqs[support].min() > lo and freqs[support].max() < hi
        # Peak at one of the two bins around the Slaney-mel centre frequency (the triangle is
        # asymmetric above 1 kHz, so not always the nearest).
        assert abs(freqs[row.argmax()] - centre) < bin_hz
        # Triangular: exactly the piecewise-linear ramp, rising then falling.
        height = 2.0 / (hi - lo)
        ramp = np.minimum((freqs - lo) / (centre - lo), (hi - freqs) / (hi - centre))
        np.testing.assert_allclose(row, height * np.maximum(ramp, 0.0), rtol=1e-6, atol=1e-9)
        peak = row.argmax()
        assert np.all(np.diff(row[: peak + 1]) >= 0) and np.all(np.diff(row[peak:]) <= 0)
        # Slaney normalisation: area in Hz (sum times bin width) is 1 for resolved triangles.
        if hi - lo > 8 * bin_hz:
            assert row.sum() * bin_hz == pytest.approx(1.0, rel=0.02)


def test_mel_filterbank_rejects_empty_bands_and_bad_frequencies():
    with pytest.raises(ValueError, match="cover no FFT bin"):
        mel_filterbank(SR, 64, 128)
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(SR, 1024, 64, f_min=100.0, f_max=9000.0)


def test_dct_matrix_is_orthonormal_and_matches_scipy():
    full = dct_matrix(64, 64).double()
    torch.testing.assert_close(full @ full.T, torch.eye(64, dtype=torch.float64), atol=1e-6,
                               rtol=0)
    part = dct_matrix(20, 64).double()
    torch.testing.assert_close(part @ part.T, torch.eye(20, dtype=torch.float64), atol=1e-6,
                               rtol=0)
    x = np.random.default_rng(0).normal(size=(64, 7))
    expected = scipy.fft.dct(x, type=2, norm="ortho", axis=0)[:20]
    np.testing.assert_allclose((part.numpy() @ x), expected, rtol=1e-5, atol=1e-5)


def test_log_mel_shape_frames_and_silence_floor():
    mel = LogMelSpectrogram(SR)
    out = mel(torch.zeros(2, SR))
    assert out.shape == (2, 64, mel.num_frames(SR)) == (2, 64, 63)
    assert torch.all(out == -100.0)


def test_full_scale_sine_reads_about_0_db_in_its_band():
    mel = LogMelSpectrogram(SR)
    edges = mel_band_edges(64, 20.0, SR / 2)
    for band in (5, 15, 20):  # centres below 1 kHz: the narrowest, unit-gain bands
        reading = mel(tone(edges[band + 1], amplitude=1.0))[0, :, 5:-5]
        assert reading.argmax(dim=0).eq(band).all()
        assert reading[band].mean().item() == pytest.approx(1.0, abs=0.6)
    # Above 1 kHz the Slaney area normalisation lowers the reading by the band-width ratio.
    band = 45
    widths = edges[2:] - edges[:-2]
    expected = 10 * math.log10(widths.min() / widths[band])
    reading = mel(tone(edges[band + 1], amplitude=1.0))[0, band, 5:-5].mean().item()
    assert reading == pytest.approx(expected + 1.0, abs=0.7)


def test_log_mel_level_offset_is_exact_in_db():
    x = torch.randn(1, SR, generator=torch.Generator().manual_seed(1)) * 0.3
    mel = LogMelSpectrogram(SR)
    torch.testing.assert_close(mel(0.1 * x), mel(x) - 20.0, atol=1e-3, rtol=0)


def test_mfcc_is_dct_of_log_mel_and_c0_carries_the_level():
    x = torch.randn(2, SR, generator=torch.Generator().manual_seed(2)) * 0.3
    mfcc = MFCC(SR, n_mfcc=13)
    coeffs = mfcc(x)
    log_mel = mfcc.log_mel(x)
    assert coeffs.shape == (2, 13, 63)
    expected = scipy.fft.dct(log_mel.double().numpy(), type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(coeffs.numpy(), expected, rtol=1e-4, atol=1e-3)
    # A gain moves only c0, by sqrt(n_mels) times the dB change.
    delta = mfcc(0.1 * x) - coeffs
    assert delta[:, 0].mean().item() == pytest.approx(-20.0 * math.sqrt(64), rel=1e-4)
    assert delta[:, 1:].abs().max().item() < 1e-2


def test_a_weighting_reference_values():
    # IEC 61672-1 table values (rounded to 0.1 dB).
    for freq, gain in [(100, -19.1), (1000, 0.0), (4000, 1.0), (10000, -2.5)]:
        assert a_weighting_db(freq) == pytest.approx(gain, abs=0.1)


def test_descriptors_of_a_sine():
    desc = SpectralDescriptors(SR)
    centroid, loudness = desc(tone(440.0, amplitude=1.0))
    assert centroid[0, 2:-2].mean().item() == pytest.approx(440.0, rel=0.01)
    _, loudness_1k = desc(tone(1000.0, amplitude=1.0))
    # A full-scale 1 kHz sine: mean square 1/2, A-weighting 0 dB.
    assert loudness_1k[0, 2:-2].mean().item() == pytest.approx(-3.01, abs=0.05)
    silent_centroid, silent_loudness = desc(torch.zeros(1, SR))
    assert torch.all(silent_loudness == desc.floor_db)
    torch.testing.assert_close(silent_centroid, torch.full_like(silent_centroid, SR / 4))


@pytest.mark.parametrize(
    "bad,error",
    [
        (torch.zeros(SR), ValueError),
        (torch.zeros(1, 1, SR), ValueError),
        (torch.zeros(1, SR, dtype=torch.int16), TypeError),
        (np.zeros((1, SR), dtype=np.float32), TypeError),
    ],
)
def test_bad_audio_is_rejected_with_a_clear_error(bad, error):
    with pytest.raises(error, match="audio"):
        LogMelSpectrogram(SR)(bad)
