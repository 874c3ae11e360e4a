"""Tests for the leaderboard metrics."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("librosa")
import librosa  # noqa: E402

from synthmatch.leaderboard.metrics import (  # noqa: E402
    MSS_SCALES,
    envelope_cosine,
    median_ci,
    mss_distance,
    param_mae,
    require_librosa,
)

SR = 16000
T = np.arange(SR) / SR  # 1 s


def sine(freq: float, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * T)


def noise(seed: int = 0) -> np.ndarray:
    return 0.3 * np.random.default_rng(seed).standard_normal(SR)


def reference_mss(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """The paper's computation written out: one 1-D signal at a time, librosa defaults."""
    total = 0.0
    for window_s, hop_s, n_mels in MSS_SCALES:
        n_fft, hop = int(window_s * sr), int(hop_s * sr)
        specs = [
            librosa.power_to_db(
                librosa.feature.melspectrogram(
                    y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, window="hann"
                ),
                ref=np.max,
            )
            for y in (a, b)
        ]
        total += np.mean(np.abs(specs[0] - specs[1]))
    return total / len(MSS_SCALES)


@pytest.mark.parametrize(
    ("a", "b"), [(sine(440), sine(660)), (sine(440), noise())], ids=["sine-sine", "sine-noise"]
)
def test_mss_matches_direct_librosa(a, b):
    got = mss_distance(a, b, SR)
    assert got.shape == (1,)
    assert got.dtype == np.float64
    expected = reference_mss(a, b, SR)
    assert expected > 1.0  # different signals: a real distance, not a trivially tiny one
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def test_mss_identical_is_zero():
    x = np.stack([sine(440), noise(1)])
    np.testing.assert_array_equal(mss_distance(x, x, SR), [0.0, 0.0])


def test_mss_grows_with_frequency_distance():
    near = mss_distance(sine(440), sine(445), SR)[0]
    far = mss_distance(sine(440), sine(880), SR)[0]
    assert 0.0 < near < far


def test_mss_batched_equals_per_item():
    pred = np.stack([sine(440), sine(300), noise(2), sine(1000, amp=0.1)])
    target = np.stack([sine(660), noise(3), noise(4), sine(1000)])
    batched = mss_distance(pred, target, SR)
    single = [mss_distance(p, t, SR)[0] for p, t in zip(pred, target, strict=True)]
    assert batched.shape == (4,)
    np.testing.assert_allclose(batched, single, rtol=1e-9, atol=1e-12)
    # Per-item reference level: a quieter copy of the same sine is (almost) no distance.
    assert batched[3] < 1e-6


def test_mss_rejects_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        mss_distance(np.zeros((2, SR)), np.zeros((3, SR)), SR)
    with pytest.raises(ValueError, match="NaN"):
        mss_distance(np.full(SR, np.nan), np.zeros(SR), SR)
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        mss_distance(np.zeros((1, 1, SR)), np.zeros((1, 1, SR)), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        mss_distance(np.zeros(SR), np.zeros(SR), 0)


def test_envelope_cosine_identical_and_scale_invariant():
    x = np.stack([sine(440), noise(5)])
    np.testing.assert_allclose(envelope_cosine(x, x, SR), [1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(envelope_cosine(x, 0.5 * x, SR), [1.0, 1.0], atol=1e-12)


def test_envelope_cosine_decay_vs_rise():
    carrier = sine(440)
    decaying, rising = carrier * np.exp(-5 * T), carrier * np.exp(-5 * (1 - T))
    same = envelope_cosine(decaying, decaying, SR)[0]
    opposite = envelope_cosine(decaying, rising, SR)[0]
    assert same == pytest.approx(1.0)
    assert opposite < 0.9


def test_envelope_cosine_silence():
    silent, loud = np.zeros(SR), sine(440)
    got = envelope_cosine(np.stack([silent, silent, loud]), np.stack([silent, loud, silent]), SR)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got, [1.0, 0.0, 0.0])


def test_param_mae_known_values():
    pred = np.array([[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]])
    true = np.array([[0.0, 0.0, 0.0], [0.2, 0.5, 0.8]])
    np.testing.assert_allclose(param_mae(pred, true), [0.5, 0.3])
    np.testing.assert_allclose(param_mae(np.array([0.1, 0.9]), np.array([0.3, 0.3])), [0.4])


def test_param_mae_shape_mismatch_names_both():
    with pytest.raises(ValueError, match=r"\(2, 3\) vs \(2, 4\)"):
        param_mae(np.zeros((2, 3)), np.zeros((2, 4)))


def test_median_ci_contains_median_and_is_seeded():
    values = np.random.default_rng(0).exponential(size=51)
    med, low, high = median_ci(values)
    assert med == np.median(values)
    assert low <= med <= high
    assert low < high
    assert median_ci(values, seed=3) == median_ci(values, seed=3)


def test_median_ci_exact_median_odd_sizes():
    assert median_ci([3.0, 1.0, 2.0])[0] == 2.0
    assert median_ci([5.0, -1.0, 7.0, 0.0, 2.0])[0] == 2.0


def test_median_ci_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    _, lo_small, hi_small = median_ci(rng.normal(size=21))
    _, lo_large, hi_large = median_ci(rng.normal(size=2001))
    assert hi_large - lo_large < hi_small - lo_small


def test_median_ci_degenerate_and_bad_input():
    assert median_ci([0.7]) == (0.7, 0.7, 0.7)
    assert median_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="empty"):
        median_ci([])
    with pytest.raises(ValueError, match="NaN"):
        median_ci([1.0, np.nan, 2.0])


def test_missing_librosa_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "librosa", None)  # makes `import librosa` fail
    with pytest.raises(ImportError, match=r"synthmatch\[leaderboard\]"):
        require_librosa()


def test_median_change_ci_is_paired_and_centred_on_the_change():
    from synthmatch.leaderboard.metrics import median_change_ci

    rng = np.random.default_rng(0)
    base = rng.lognormal(0.0, 1.0, 128)  # targets of very different difficulty
    worse = base * 1.05 * rng.lognormal(0.0, 0.02, 128)  # 5% worse on every target
    change, lo, hi = median_change_ci(base, worse)
    assert change == pytest.approx(np.median(worse) / np.median(base) - 1)
    assert lo <= change <= hi and lo > 0.0 and hi < 0.15
    # Unpaired, the same data could not tell a 5% change from none: the targets' spread
    # swamps it. Pairing is what makes the interval narrow.
    shuffled = median_change_ci(base, rng.permutation(worse))
    assert shuffled[2] - shuffled[1] > 4 * (hi - lo)
    assert median_change_ci(base, base) == (0.0, 0.0, 0.0)
    assert median_change_ci(base, worse) == (change, lo, hi)  # seeded
    with pytest.raises(ValueError, match="one length"):
        median_change_ci(base, worse[:-1])
    with pytest.raises(ValueError, match="positive"):
        median_change_ci(-base, worse)
