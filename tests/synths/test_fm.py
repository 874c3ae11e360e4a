"""FMSynth: spectra, envelopes, the parameter table, batching and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.special import jv

from synthmatch.synths import FrozenSynth, ProbeNote, make_synth
from synthmatch.synths.fm import FM_PARAMS, FMSynth
from tests.conftest import preset, spectrum

# A steady tone: 1 ms attacks, full sustain, note held for the whole render.
STEADY = dict(amp_attack_s=1e-3, amp_sustain=1.0, index_attack_s=1e-3, index_sustain=1.0)


@pytest.mark.parametrize("sample_rate", [16000, 22050, 44100])
def test_zero_index_is_a_sine_at_the_probe_pitch(sample_rate):
    probe = ProbeNote(midi_pitch=60, note_duration_s=1.0, render_duration_s=1.0,
                      sample_rate=sample_rate)
    synth = FMSynth(probe=probe)
    u = preset(synth, 2, mod_index=0.0, **STEADY)
    # The index envelope and the ratio do nothing when the index is 0.
    u[1, synth.params.index("mod_ratio")] = 0.9
    u[1, synth.params.index("index_decay_s")] = 0.1
    audio = synth.render(u)
    assert torch.equal(audio[0], audio[1])

    mag = spectrum(audio[0])
    hz_per_bin = sample_rate / synth.num_samples
    peak = int(mag.argmax())
    assert abs(peak * hz_per_bin - probe.frequency_hz) <= hz_per_bin
    power = mag.square()
    assert power[peak - 3 : peak + 4].sum() > 0.999 * power.sum()


def test_sidebands_follow_bessel_amplitudes():
    # 440 Hz carrier, ratio 1.5: every sideband lands on an integer-Hz bin, and the upper
    # (440 + 660 k) and folded lower (660 k - 440) sidebands never collide.
    probe = ProbeNote(midi_pitch=69, note_duration_s=1.0, render_duration_s=1.0)
    synth = FMSynth(probe=probe)
    index = 1.5
    audio = synth.render(torch.cat([preset(synth, mod_ratio=1.5, mod_index=index, **STEADY),
                                    preset(synth, mod_ratio=1.5, mod_index=0.0, **STEADY)]))
    fc, fm = 440, 660
    mag, sine = spectrum(audio[0]), spectrum(audio[1])
    carrier = mag[fc]
    assert carrier / sine[fc] == pytest.approx(abs(jv(0, index)), rel=0.01)
    for k in (1, 2, 3):
        expected = abs(jv(k, index) / jv(0, index))
        assert mag[fc + k * fm] / carrier == pytest.approx(expected, rel=0.02)
        assert mag[k * fm - fc] / carrier == pytest.approx(expected, rel=0.02)
        assert sine[fc + k * fm] < 1e-3 * sine[fc]
    # Between sidebands there is nothing.
    assert mag[fc + fm // 2] < 1e-3 * carrier


def test_amp_envelope_starts_silent_peaks_after_attack_and_ends_silent():
    probe = ProbeNote(midi_pitch=60, note_duration_s=0.5, render_duration_s=1.0)
    synth = FMSynth(probe=probe)
    attack, release = 0.2, 0.1
    u = preset(synth, mod_index=0.0, amp_attack_s=attack, amp_decay_s=0.1, amp_sustain=0.5,
               amp_release_s=release)
    audio = synth.render(u)[0]
    sr = probe.sample_rate
    assert audio[0] == 0.0
    assert audio[:16].abs().max() < 1e-2
    peak_s = int(audio.abs().argmax()) / sr
    assert abs(peak_s - attack) < 1.0 / probe.frequency_hz
    assert audio.abs().max() == pytest.approx(probe.gain, rel=1e-2)
    silent_from = int((probe.note_duration_s + release) * sr) + 64
    assert torch.all(audio[silent_from:] == 0.0)
    assert audio[int(0.55 * sr) :].abs().max() > 0.1


def test_long_note_keeps_phase_accuracy():
    probe = ProbeNote(midi_pitch=93, note_duration_s=20.0, render_duration_s=20.0)
    synth = FMSynth(probe=probe)
    audio = synth.render(preset(synth, mod_index=0.0, **STEADY))[0]
    n = torch.arange(synth.num_samples, dtype=torch.float64)
    reference = probe.gain * torch.sin(2 * math.pi * probe.frequency_hz * n / probe.sample_rate)
    tail = slice(synth.num_samples - 1000, None)
    assert (audio[tail].double() - reference[tail]).abs().max() < 1e-5


def test_round_trip_and_table():
    assert 10 <= len(FM_PARAMS) <= 14
    assert all(s.unit for s in FM_PARAMS if s.name.endswith(("_s", "_cents", "_db", "_ratio")))
    g = torch.Generator().manual_seed(0)
    lo = torch.tensor([s.min for s in FM_PARAMS], dtype=torch.float64)
    hi = torch.tensor([s.max for s in FM_PARAMS], dtype=torch.float64)
    x = lo + (hi - lo) * torch.rand(256, len(FM_PARAMS), generator=g, dtype=torch.float64)
    torch.testing.assert_close(FM_PARAMS.to_real(FM_PARAMS.to_normalized(x)), x,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("column", "value"), [("mod_ratio", 1.5), ("gain_db", float("nan")),
                                               ("amp_attack_s", -0.1)])
def test_invalid_params_raise_naming_the_parameter(column, value):
    synth = FMSynth()
    u = synth.params.defaults(3)
    u[1, synth.params.index(column)] = value
    with pytest.raises(ValueError, match=column):
        synth.render(u)


def test_output_contract_and_determinism():
    synth = make_synth("fm")
    assert isinstance(synth, FMSynth) and synth.differentiable and synth.batched
    g = torch.Generator().manual_seed(1)
    corners = torch.randint(0, 2, (32, len(synth.params)), generator=g).float()
    loud = torch.ones(4, len(synth.params))
    u = torch.cat([synth.params.sample(28, generator=g), corners, loud])
    audio = synth.render(u)
    assert audio.shape == (64, synth.num_samples)
    assert audio.dtype == torch.float32 and audio.device.type == "cpu"
    assert torch.isfinite(audio).all()
    assert audio.abs().max() <= 1.0
    assert torch.equal(audio, synth.render(u))


def test_items_render_bit_identically_in_any_batch():
    synth = FMSynth()
    g = torch.Generator().manual_seed(2)
    u = synth.params.sample(7, generator=g)
    batch = synth.render(u)
    alone = torch.cat([synth.render(u[i : i + 1]) for i in range(7)])
    assert torch.equal(batch, alone)
    # Large batches take the vectorised CPU kernels for per-item values too.
    big = torch.cat([synth.params.sample(30, generator=g), u.flip(0)])
    assert torch.equal(synth.render(big)[30:], batch.flip(0))


def test_gradients_reach_every_parameter():
    synth = FMSynth()
    target = synth.render(torch.full((2, len(synth.params)), 0.4))
    u = torch.full((2, len(synth.params)), 0.5, requires_grad=True)
    loss = (synth.render(u) - target).square().mean()
    loss.backward()
    assert torch.isfinite(u.grad).all()
    assert (u.grad.abs() > 0).all(), synth.params.names


def test_frozen_fm_exposes_only_free_parameters():
    synth = FrozenSynth(FMSynth(), free=["mod_index"], frozen={"mod_ratio": 0.25})
    assert synth.params.names == ("mod_index",)
    audio = synth.render(torch.tensor([[0.0], [0.8]]))
    assert audio.shape == (2, synth.num_samples)
    assert not torch.equal(audio[0], audio[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_is_batch_independent():
    cpu = FMSynth()
    gpu = FMSynth(device="cuda")
    u = cpu.params.sample(7, generator=torch.Generator().manual_seed(3))
    audio = gpu.render(u)
    assert audio.device.type == "cuda" and audio.dtype == torch.float32
    torch.testing.assert_close(audio.cpu(), cpu.render(u), atol=1e-4, rtol=0)
    alone = torch.cat([gpu.render(u[i : i + 1]) for i in range(7)])
    assert torch.equal(audio, alone)
    v = u.cuda().requires_grad_(True)
    gpu.render(v).square().mean().backward()
    assert torch.isfinite(v.grad).all() and (v.grad.abs() > 0).any()
