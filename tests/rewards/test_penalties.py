"""Degenerate-audio penalties: DC offset, clipping, silence."""

from __future__ import annotations

import math

import pytest
import torch

from synthmatch.rewards import Penalties, degenerate_penalty, signal_stats
from tests.rewards.signals import SR, tone


def test_signal_stats_of_a_sine():
    stats = signal_stats(tone(20.0, amplitude=1.0))
    assert stats.dc.abs().item() < 1e-6
    assert stats.rms_db.item() == pytest.approx(-3.01, abs=0.01)
    # |sin| >= 0.999 for 1 - 2 asin(0.999) / pi of the time (a slow sine, so the samples
    # resolve its peaks).
    expected = 1.0 - 2.0 * math.asin(0.999) / math.pi
    assert stats.clip_fraction.item() == pytest.approx(expected, abs=2e-3)


def test_clean_audio_is_not_penalised():
    p = degenerate_penalty(tone(330.0, 0.3), tone(440.0))
    assert isinstance(p, Penalties)
    for name, value in p.as_dict().items():
        assert value.shape == (1,)
        assert value.item() == 0.0, name


def test_dc_offset_is_flagged_and_ramps():
    target = tone()
    assert degenerate_penalty(tone() + 0.2, target).dc.item() == 1.0
    # Linear from 0 at |mean| = 0.01 to 1 at 0.1.
    assert degenerate_penalty(tone() - 0.055, target).dc.item() == pytest.approx(0.5, abs=1e-3)
    assert degenerate_penalty(tone() + 0.005, target).dc.item() == 0.0


def test_clipping_is_flagged_as_the_excess_clipped_fraction():
    target = tone()
    clipped = (2.0 * tone(20.0, amplitude=1.0)).clamp(-1.0, 1.0)
    expected = 1.0 - 2.0 * math.asin(0.999 / 2.0) / math.pi
    assert degenerate_penalty(clipped, target).clipping.item() == pytest.approx(expected, abs=2e-3)
    # A target that clips just as much does not count against a prediction that matches it.
    assert degenerate_penalty(clipped, clipped.clone()).total().item() == 0.0


def test_silence_is_flagged_only_against_an_audible_target():
    target = tone()  # -9 dB RMS
    assert degenerate_penalty(torch.zeros_like(target), target).silence.item() == 1.0
    # Linear between -60 dB (0) and -70 dB (1): a prediction at -65 dB scores 0.5.
    quiet = tone(amplitude=math.sqrt(2) * 10 ** (-65 / 20))
    assert degenerate_penalty(quiet, target).silence.item() == pytest.approx(0.5, abs=1e-3)
    assert degenerate_penalty(torch.zeros_like(target), 1e-4 * target).silence.item() == 0.0


def test_all_zero_audio_gives_finite_penalties():
    zeros = torch.zeros(2, SR)
    for pred, target in [(zeros, zeros), (zeros, tone().expand(2, -1)), (tone().expand(2, -1),
                                                                          zeros)]:
        p = degenerate_penalty(pred, target)
        assert torch.isfinite(p.total()).all()
        assert torch.all((p.total() >= 0) & (p.total() <= 3))
    assert torch.isfinite(signal_stats(zeros).rms_db).all()


def test_penalties_are_per_item():
    target = tone().expand(3, -1)
    pred = torch.cat([tone(), tone() + 0.5, torch.zeros(1, SR)])
    p = degenerate_penalty(pred, target)
    torch.testing.assert_close(p.dc, torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(p.silence, torch.tensor([0.0, 0.0, 1.0]))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="dc_threshold"):
        degenerate_penalty(tone(), tone(), dc_threshold=0.2, dc_saturation=0.1)
    with pytest.raises(ValueError, match="clip_level"):
        degenerate_penalty(tone(), tone(), clip_level=1.5)
    with pytest.raises(ValueError, match="same shape"):
        degenerate_penalty(tone(), torch.zeros(2, SR))
