"""Per-item distances: auraloss parity, batching, and the facts each scaling implies."""

from __future__ import annotations

import math

import auraloss
import pytest
import torch

from synthmatch.rewards import (
    DEFAULT_FFT_SIZES,
    DEFAULT_HOP_SIZES,
    LoudnessDistance,
    MFCCDistance,
    MultiResolutionSTFTDistance,
    SpectralCentroidDistance,
)
from tests.rewards.signals import SR, noise, synth_like, tone


def distances() -> list[torch.nn.Module]:
    return [
        MultiResolutionSTFTDistance(),
        MFCCDistance(SR),
        SpectralCentroidDistance(SR),
        LoudnessDistance(SR),
    ]


@pytest.mark.parametrize(
    "resolutions",
    [
        (DEFAULT_FFT_SIZES, DEFAULT_HOP_SIZES, DEFAULT_FFT_SIZES),
        ((1024, 2048, 512), (120, 240, 50), (600, 1200, 240)),  # auraloss's defaults
    ],
)
@pytest.mark.parametrize("kind", ["noise", "synth"])
def test_mr_stft_matches_auraloss_for_one_item(resolutions, kind):
    fft_sizes, hop_sizes, win_lengths = resolutions
    pred, target = (noise(2, 0) if kind == "noise" else synth_like(2, 0)).split(1)
    ours = MultiResolutionSTFTDistance(
        fft_sizes=fft_sizes, hop_sizes=hop_sizes, win_lengths=win_lengths
    )(pred, target)
    reference = auraloss.freq.MultiResolutionSTFTLoss(
        list(fft_sizes), list(hop_sizes), list(win_lengths)
    )(pred[:, None], target[:, None])
    assert ours.shape == (1,)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def test_mr_stft_default_arguments_match_auraloss_defaults_when_passed():
    pred, target = synth_like(2, 3).split(1)
    reference = auraloss.freq.MultiResolutionSTFTLoss()(pred[:, None], target[:, None])
    ours = MultiResolutionSTFTDistance(
        fft_sizes=(1024, 2048, 512), hop_sizes=(120, 240, 50), win_lengths=(600, 1200, 240)
    )(pred, target)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("dist", distances(), ids=lambda d: type(d).__name__)
def test_batch_values_equal_single_item_calls(dist):
    pred, target = synth_like(5, 1), synth_like(5, 2)
    batched = dist(pred, target)
    assert batched.shape == (5,)
    singles = torch.cat([dist(pred[i : i + 1], target[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)
    assert batched.std() > 0  # the items really differ


@pytest.mark.parametrize("dist", distances(), ids=lambda d: type(d).__name__)
@pytest.mark.parametrize("kind", ["noise", "tone", "silence"])
def test_identical_audio_is_at_distance_zero(dist, kind):
    audio = {
        "noise": noise(3, 4),
        "tone": torch.cat([tone(220.0), tone(440.0), tone(3000.0, 0.01)]),
        "silence": torch.zeros(3, SR),
    }[kind]
    value = dist(audio, audio.clone())
    assert value.shape == (3,)
    assert torch.all(value.abs() < 1e-6)


def test_spectral_convergence_and_log_magnitude_of_a_gain():
    # S_p = g S_t  =>  SC = |1 - g| and log-mag L1 = |ln g| (bins far above the floor).
    x = noise(2, 5)
    sc = MultiResolutionSTFTDistance(w_log_mag=0.0)
    log_mag = MultiResolutionSTFTDistance(w_sc=0.0)
    quiet = 0.1 * x  # -20 dB
    torch.testing.assert_close(sc(quiet, x), torch.full((2,), 0.9), rtol=1e-4, atol=0)
    torch.testing.assert_close(log_mag(quiet, x), torch.full((2,), math.log(10)), rtol=1e-3,
                               atol=0)
    # SC is normalised by the target: the same gain the other way round gives |1 - 10| = 9.
    torch.testing.assert_close(sc(x, quiet), torch.full((2,), 9.0), rtol=1e-4, atol=0)


def test_spectral_convergence_cap_bounds_silent_targets():
    loud, silent = noise(1, 6), torch.zeros(1, SR)
    assert MultiResolutionSTFTDistance(w_log_mag=0.0)(loud, silent).item() > 1e3
    capped = MultiResolutionSTFTDistance(w_log_mag=0.0, sc_max=10.0)(loud, silent)
    assert capped.item() == pytest.approx(10.0)


def test_loudness_distance_of_a_20_db_quieter_copy_is_one():
    for x in (noise(2, 7), torch.cat([tone(440.0), tone(2000.0)])):
        value = LoudnessDistance(SR)(0.1 * x, x)
        torch.testing.assert_close(value, torch.ones(2), rtol=1e-4, atol=0)


def test_level_changes_leave_envelope_and_brightness_terms_unchanged():
    x = noise(2, 8)
    assert MFCCDistance(SR)(0.1 * x, x).abs().max() < 1e-4
    assert SpectralCentroidDistance(SR)(0.1 * x, x).abs().max() < 1e-3


def test_centroid_distance_counts_octaves():
    dist = SpectralCentroidDistance(SR)
    target = tone(440.0)
    assert dist(tone(880.0), target).item() == pytest.approx(1.0, abs=0.02)
    assert dist(tone(220.0), target).item() == pytest.approx(1.0, abs=0.02)
    semitone = dist(tone(440.0 * 2 ** (1 / 12)), target).item()
    assert semitone == pytest.approx(1 / 12, abs=0.01)


def test_centroid_distance_ignores_silent_target_frames():
    target = tone(440.0)
    target[:, SR // 2 :] = 0.0
    pred = tone(440.0)
    pred[:, SR // 2 :] = tone(3520.0)[:, SR // 2 :]  # wrong only where the target is silent
    assert SpectralCentroidDistance(SR)(pred, target).item() < 0.05


@pytest.mark.parametrize("dist", distances(), ids=lambda d: type(d).__name__)
def test_tones_further_apart_in_pitch_are_further_apart(dist):
    # Loudness too: equal-amplitude tones differ in A-weighting, which rises up to ~2.5 kHz.
    target = tone(440.0)
    values = [dist(tone(f), target).item() for f in (440.0, 466.16, 523.25, 880.0)]
    assert values[0] < 1e-6
    assert values[0] < values[1] < values[2] < values[3]


def test_distances_are_finite_for_silence():
    silent, loud = torch.zeros(2, SR), noise(2, 9)
    for dist in distances():
        for pred, target in [(silent, loud), (loud, silent), (silent, silent)]:
            assert torch.isfinite(dist(pred, target)).all(), type(dist).__name__


def test_mismatched_shapes_and_bad_settings_raise():
    with pytest.raises(ValueError, match="same shape"):
        MultiResolutionSTFTDistance()(noise(2, 0), noise(3, 0))
    with pytest.raises(ValueError, match="equal length"):
        MultiResolutionSTFTDistance(fft_sizes=(512, 256), hop_sizes=(128,))
    with pytest.raises(ValueError, match="win_length"):
        MultiResolutionSTFTDistance(fft_sizes=(512,), hop_sizes=(128,), win_lengths=(1024,))
    with pytest.raises(ValueError, match="w_sc"):
        MultiResolutionSTFTDistance(w_sc=-1.0)
    with pytest.raises(ValueError, match="n_mfcc"):
        MFCCDistance(SR, n_mfcc=1)
