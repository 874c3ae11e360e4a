"""DSP facts about the subtractive synth."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import synthmatch.synths.subtractive as subtractive
from synthmatch.devices import count_syncs
from synthmatch.synths import FrozenSynth, ProbeNote
from synthmatch.synths.dsp import wavetable_read
from synthmatch.synths.subtractive import TABLE_SIZE, SubtractiveSynth
from tests.conftest import band_energy, cuda, peak_frequency


def preset(synth: SubtractiveSynth, **real: float) -> torch.Tensor:
    """A (1, P) normalised preset: defaults with the given real-unit overrides."""
    x = synth.params.to_real(synth.params.defaults(1).double())
    for name, value in real.items():
        x[0, synth.params.index(name)] = value
    return synth.params.to_normalized(x).float()


SINE = dict(osc1_shape=0.0, osc1_level=1.0, osc2_level=0.0, noise_level=0.0, cutoff_hz=20000.0,
            resonance=0.0, filter_env_octaves=0.0, amp_attack_s=0.001, amp_sustain=1.0,
            lfo_to_pitch_semitones=0.0, lfo_to_cutoff_octaves=0.0, unison_voices=1.0)


@pytest.mark.parametrize("sample_rate", [16000, 22050, 44100])
def test_sine_at_a4_peaks_at_440_hz(sample_rate):
    probe = ProbeNote(midi_pitch=69, sample_rate=sample_rate, note_duration_s=0.9)
    synth = SubtractiveSynth(probe)
    audio = synth.render(preset(synth, **SINE))[0]
    bin_hz = sample_rate / probe.num_samples
    assert abs(peak_frequency(audio, sample_rate) - 440.0) <= bin_hz
    # Nearly all the energy is in the fundamental: the table holds a clean sine.
    total = band_energy(audio, sample_rate, 0, sample_rate / 2)
    assert band_energy(audio, sample_rate, 420, 460) / total > 0.99


def test_osc2_semitone_offset_moves_its_pitch():
    synth = SubtractiveSynth(ProbeNote(midi_pitch=69))
    u = preset(synth, **{**SINE, "osc1_level": 0.0, "osc2_level": 1.0, "osc2_shape": 0.0,
                         "osc2_semitones": 12.0})
    assert abs(peak_frequency(synth.render(u)[0], 16000) - 880.0) <= 1.0


def test_saw_has_harmonics_and_no_aliasing():
    synth = SubtractiveSynth(ProbeNote(midi_pitch=81))  # 880 Hz: 9 harmonics below 8 kHz
    audio = synth.render(preset(synth, **{**SINE, "osc1_shape": 2.0}))[0]
    harmonics = sum(band_energy(audio, 16000, 880 * k - 20, 880 * k + 20) for k in range(1, 10))
    assert harmonics / band_energy(audio, 16000, 0, 8000) > 0.995
    second = band_energy(audio, 16000, 1740, 1780) / band_energy(audio, 16000, 860, 900)
    assert 0.2 < second < 0.3  # a saw's 2nd harmonic is at 1/2 amplitude: 1/4 energy


def test_filter_attenuates_above_cutoff():
    synth = SubtractiveSynth(ProbeNote(midi_pitch=48))  # 131 Hz saw: dense harmonics
    saw = {**SINE, "osc1_shape": 2.0}
    open_ = synth.render(preset(synth, **saw))[0]
    closed = synth.render(preset(synth, **{**saw, "cutoff_hz": 500.0}))[0]
    below = band_energy(closed, 16000, 0, 400) / band_energy(open_, 16000, 0, 400)
    above = band_energy(closed, 16000, 2000, 8000) / band_energy(open_, 16000, 2000, 8000)
    assert below > 0.7
    assert above < 1e-3  # 24 dB/oct: two octaves and more above 500 Hz lose > 30 dB


def test_resonance_boosts_the_cutoff_region():
    synth = SubtractiveSynth(ProbeNote(midi_pitch=48))
    saw = {**SINE, "osc1_shape": 2.0, "cutoff_hz": 1000.0}
    flat = synth.render(preset(synth, **saw))[0]
    peaky = synth.render(preset(synth, **{**saw, "resonance": 1.0}))[0]
    assert band_energy(peaky, 16000, 900, 1100) > 4 * band_energy(flat, 16000, 900, 1100)


def test_amp_envelope_starts_and_ends_silent():
    probe = ProbeNote(note_duration_s=0.5, render_duration_s=1.0)
    synth = SubtractiveSynth(probe)
    env = {**SINE, "amp_attack_s": 0.2, "amp_decay_s": 0.01, "amp_release_s": 0.1}
    half, full = synth.render(torch.cat([preset(synth, **{**env, "amp_sustain": 0.5}),
                                         preset(synth, **{**env, "amp_sustain": 1.0})]))
    sr = probe.sample_rate

    def rms(audio: torch.Tensor, t0: float, t1: float) -> float:
        return audio[int(t0 * sr):int(t1 * sr)].pow(2).mean().sqrt().item()

    assert half[0].abs() < 1e-3
    assert rms(full, 0.0, 0.02) < 0.15 * rms(full, 0.18, 0.2)  # rising during the attack
    assert rms(half, 0.6, 1.0) < 1e-4  # silent after note-off + release
    assert rms(half, 0.3, 0.5) == pytest.approx(0.5 * rms(full, 0.3, 0.5), rel=0.02)


def test_output_is_bounded_finite_and_shaped():
    synth = SubtractiveSynth()
    for b in (1, 3, 64):
        audio = synth.render(synth.params.sample(b, torch.Generator().manual_seed(b)))
        assert audio.shape == (b, 16000) and audio.dtype == torch.float32
        assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0


@pytest.mark.parametrize("threads", [1, 2])
def test_item_audio_independent_of_batch_size_and_position(threads):
    torch.set_num_threads(threads)
    synth = SubtractiveSynth()
    u = synth.params.sample(64, torch.Generator().manual_seed(3))
    batch = synth.render(u)
    for i in range(0, 64, 7):
        assert torch.equal(synth.render(u[i:i + 1])[0], batch[i])
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(synth.render(u[perm]), batch[perm])
    assert torch.equal(synth.render(u[5:22]), batch[5:22])


def test_same_parameters_same_audio():
    synth = SubtractiveSynth()
    u = synth.params.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(synth.render(u), synth.render(u))


def test_render_rejects_bad_parameters():
    synth = SubtractiveSynth()
    u = synth.params.defaults(2)
    u[1, synth.params.index("cutoff_hz")] = float("nan")
    with pytest.raises(ValueError, match="cutoff_hz"):
        synth.render(u)
    u = synth.params.defaults(2)
    u[0, synth.params.index("resonance")] = 1.5
    with pytest.raises(ValueError, match="resonance"):
        synth.render(u)
    with pytest.raises(ValueError, match=r"\(B, 24\)"):
        synth.render(torch.rand(24))


def test_gradients_reach_every_continuous_parameter():
    synth = SubtractiveSynth()
    u = synth.params.sample(2, torch.Generator().manual_seed(5)).clamp(0.05, 0.95)
    u.requires_grad_(True)
    synth.render(u).pow(2).mean().backward()
    assert torch.isfinite(u.grad).all()
    continuous = [j for j, s in enumerate(synth.params) if not s.discrete]
    assert (u.grad[:, continuous].abs().sum(0) > 0).float().mean() > 0.9


def test_grad_path_matches_inference_path():
    synth = SubtractiveSynth()
    u = synth.params.sample(3, torch.Generator().manual_seed(6))
    with torch.no_grad():
        fast = synth.render(u)
    slow = synth.render(u.clone().requires_grad_(True)).detach()
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)


def test_frozen_synth_fills_frozen_parameters():
    synth = SubtractiveSynth()
    easy = FrozenSynth(synth, ["cutoff_hz", "osc1_shape"], {"resonance": 0.9})
    assert easy.params.names == ("osc1_shape", "cutoff_hz")
    u = torch.tensor([[0.2, 0.7]])
    full = synth.params.defaults(1)
    full[0, synth.params.index("osc1_shape")] = 0.2
    full[0, synth.params.index("cutoff_hz")] = 0.7
    full[0, synth.params.index("resonance")] = 0.9
    assert torch.equal(easy.render(u), synth.render(full))


def grid_sample_read(values: torch.Tensor, slopes: torch.Tensor,
                     phase: torch.Tensor) -> torch.Tensor:
    """The oracle: how the oscillators read their tables before ``wavetable_read``.

    ``F.grid_sample`` (bilinear, ``align_corners=True``) over an image of two identical rows
    holding two periods and the closing sample; grid x = the phase in cycles, in [0, 1), lands
    on the second period. In float64, so that its own coordinate rounding (up to 2^-12 table
    steps in float32) does not blur the comparison. ``slopes`` is unused: grid_sample
    interpolates between neighbouring values itself.
    """
    r, o, n = values.shape
    table = values.double()
    image = torch.cat([table, table, table[..., :1]], -1).reshape(r * o, 1, 1, -1)
    x = torch.frac(phase.double() / n).reshape(r * o, 1, -1, 1)
    grid = torch.cat([x, torch.zeros_like(x)], -1)
    out = F.grid_sample(image.expand(-1, -1, 2, -1), grid, mode="bilinear", align_corners=True)
    return out.reshape(phase.shape).float()


def test_wavetable_read_matches_grid_sample():
    synth = SubtractiveSynth()
    # Sine to square, and tables from a single harmonic to 200 (a square at 40 Hz).
    values, slopes = synth._wavetables(torch.tensor([[0.0, 1.0], [2.0, 3.0], [2.5, 1.7]]),
                                       torch.tensor([[4000.0, 300.0], [40.0, 2000.0],
                                                     [130.0, 700.0]]))
    phase = torch.rand(3, 2, 32, 500, generator=torch.Generator().manual_seed(0))
    phase = phase * (40 * TABLE_SIZE)  # up to 40 periods: the read wraps
    # Table points, the wrap, and just below it.
    phase[..., 0, :5] = torch.tensor([0.0, 1.0, TABLE_SIZE - 1.0, TABLE_SIZE - 2**-10,
                                      7.0 * TABLE_SIZE])
    expected = grid_sample_read(values, slopes, phase)
    actual = wavetable_read(values, slopes, phase.clone())
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    assert expected.abs().max() > 0.9  # the tables are not silent


@pytest.mark.parametrize("midi_pitch", [36, 60, 84])
def test_render_matches_the_grid_sample_oscillator(monkeypatch, midi_pitch):
    # Random presets cover unison voices detuned down, whose phases are rebased to stay >= 0.
    synth = SubtractiveSynth(ProbeNote(midi_pitch=midi_pitch))
    u = synth.params.sample(48, torch.Generator().manual_seed(midi_pitch))
    audio = synth.render(u)
    monkeypatch.setattr(subtractive, "wavetable_read", grid_sample_read)
    torch.testing.assert_close(audio, synth.render(u), atol=1e-6, rtol=0)


def test_skipped_and_silent_unused_voices_sound_the_same(monkeypatch):
    # CPU skips the voices an item does not use; other devices run them at weight zero.
    synth = SubtractiveSynth()
    u = synth.params.sample(24, torch.Generator().manual_seed(8))
    skipped = synth.render(u)
    monkeypatch.setattr(SubtractiveSynth, "_skips_unused_voices", False)
    assert torch.equal(synth.render(u), skipped)


def allow_meta_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let synths take the meta device, which they refuse (it holds no data), for a test."""
    monkeypatch.setattr("synthmatch.synths.base.resolve_device", torch.device)
    monkeypatch.setattr(subtractive, "resolve_device", torch.device)


def test_render_off_cpu_reads_nothing_back_from_the_device(monkeypatch):
    # On the meta device every read of a value (.tolist(), bool(), .item()) raises, so this
    # renders the off-CPU path and proves it never makes the host wait for the device.
    allow_meta_device(monkeypatch)
    synth = SubtractiveSynth(device="meta")
    u = torch.rand(8, len(synth.params), device="meta")
    assert synth._render_chunks(u).shape == (8, 16000)
    easy = FrozenSynth(synth, ["cutoff_hz", "osc1_shape"])
    assert easy._render_chunks(torch.rand(8, 2, device="meta")).shape == (8, 16000)


def test_frozen_synth_moves_its_buffers(monkeypatch):
    allow_meta_device(monkeypatch)
    easy = FrozenSynth(SubtractiveSynth(), ["cutoff_hz", "osc1_shape"]).to("meta")
    assert easy.base_params.device.type == easy.free_index.device.type == "meta"
    assert easy._render_chunks(torch.rand(4, 2, device="meta")).device.type == "meta"


@cuda
@pytest.mark.gpu
def test_cuda_render_waits_for_the_device_once():
    synth = SubtractiveSynth(device="cuda")
    u = synth.params.sample(64, torch.Generator().manual_seed(9)).cuda()
    synth.render(u)  # warm-up: FFT plans, cached constants
    assert count_syncs(lambda: synth.render(u)) == 1  # the validation's branch
    easy = FrozenSynth(synth, ["cutoff_hz", "resonance"])
    v = torch.rand(64, 2, device="cuda")
    easy.render(v)
    assert count_syncs(lambda: easy.render(v)) == 1


@cuda
@pytest.mark.gpu
def test_cuda_matches_cpu():
    cpu = SubtractiveSynth()
    gpu = SubtractiveSynth(device="cuda")
    u = cpu.params.sample(8, torch.Generator().manual_seed(7))
    torch.testing.assert_close(gpu.render(u).cpu(), cpu.render(u), atol=1e-4, rtol=0)
