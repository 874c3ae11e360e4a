"""TorchSynthVoice: torchsynth's Voice behind the normalised (B, P) -> (B, T) interface."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from synthmatch.synths import FrozenSynth, ProbeNote, make_synth
from synthmatch.synths.torchsynth_voice import (
    KEYBOARD_KEYS,
    VOICE_KEYS,
    TorchSynthVoice,
)


@pytest.fixture(scope="module")
def synth() -> TorchSynthVoice:
    return TorchSynthVoice()


def fresh_voice():
    """An independent torchsynth Voice, built the plain torchsynth way."""
    from torchsynth.config import SynthConfig
    from torchsynth.synth import Voice

    config = SynthConfig(batch_size=1, sample_rate=16000, buffer_size_seconds=1.0,
                         control_rate=160, reproducible=False)
    return Voice(config)


def set_real(synth, u: torch.Tensor, **real: float) -> torch.Tensor:
    for name, value in real.items():
        x = torch.tensor(value, dtype=torch.float64)
        u[:, synth.params.index(name)] = synth.params[name].to_normalized(x)
    return u


def peak_hz(audio: torch.Tensor, sample_rate: int) -> float:
    window = torch.hann_window(audio.shape[-1], periodic=False)
    return int(torch.fft.rfft(audio * window).abs().argmax()) * sample_rate / audio.shape[-1]


def test_table_is_torchsynths_parameters_with_units(synth):
    voice = fresh_voice()
    params = voice.get_parameters()
    assert len(params) == 78
    assert set(params) == set(VOICE_KEYS) | set(KEYBOARD_KEYS)
    # Our column order is torchsynth's forward() order (registration order) minus the keyboard.
    forward_order = [(n.split(".")[0], n.split(".")[-1]) for n, _ in voice.named_parameters()]
    assert [k for k in forward_order if k not in KEYBOARD_KEYS] == list(VOICE_KEYS)
    assert len(synth.params) == len(VOICE_KEYS) == 76
    names = synth.params.names
    assert "adsr_1_attack_s" in names and "lfo_2_frequency_hz" in names
    assert "vco_1_tuning_semitones" in names and "vco_2_mod_depth_semitones" in names
    assert "mod_matrix_lfo_1_to_vco_2_pitch" in names and "mixer_noise" in names
    assert not any("midi" in n or "keyboard" in n for n in names)
    for (module, name), spec in zip(VOICE_KEYS, synth.params, strict=True):
        if name in ("attack", "decay", "release"):
            assert spec.name == f"{module}_{name}_s" and spec.unit == "s"


def test_to_real_matches_torchsynth_from_0to1(synth):
    params = fresh_voice().get_parameters()
    g = torch.Generator().manual_seed(0)
    u = torch.cat([torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64),
                   torch.rand(500, generator=g, dtype=torch.float64)])
    for key, spec in zip(VOICE_KEYS, synth.params, strict=True):
        expected = params[key].parameter_range.from_0to1(u)
        torch.testing.assert_close(spec.to_real(u), expected, rtol=1e-12,
                                   atol=1e-12 * (spec.max - spec.min), msg=spec.name)


def test_round_trip_real_normalized(synth):
    table = synth.params
    g = torch.Generator().manual_seed(1)
    lo = torch.tensor([s.min for s in table], dtype=torch.float64)
    hi = torch.tensor([s.max for s in table], dtype=torch.float64)
    x = lo + (hi - lo) * torch.rand(200, len(table), generator=g, dtype=torch.float64)
    torch.testing.assert_close(table.to_real(table.to_normalized(x)), x, rtol=1e-9, atol=1e-9)


def test_columns_land_in_voice_keys_and_keyboard_follows_the_probe(synth):
    u = torch.linspace(0.01, 0.99, len(synth.params)).unsqueeze(0)
    synth.render(u)
    voice, _ = synth._voice(1)
    params = voice.get_parameters()
    for j, key in enumerate(VOICE_KEYS):
        assert params[key].data.item() == pytest.approx(u[0, j].item()), key
    with torch.inference_mode():
        midi_f0, duration = voice.keyboard()
    assert midi_f0.item() == pytest.approx(synth.probe.midi_pitch, abs=1e-4)
    assert duration.item() == pytest.approx(synth.probe.note_duration_s, abs=1e-5)


@pytest.mark.parametrize("sample_rate", [16000, 22050])
def test_init_preset_is_a_sine_at_the_probe_pitch(sample_rate):
    probe = ProbeNote(midi_pitch=57, sample_rate=sample_rate)
    synth = TorchSynthVoice(probe=probe)
    audio = synth.render(synth.params.defaults(1))[0]
    assert abs(peak_hz(audio, sample_rate) - probe.frequency_hz) <= sample_rate / len(audio)
    assert abs(audio[0]) < 1e-3


def test_velocity_is_an_output_gain():
    loud = TorchSynthVoice(probe=ProbeNote(velocity=127))
    soft = TorchSynthVoice(probe=ProbeNote(velocity=64))
    u = loud.params.sample(3, generator=torch.Generator().manual_seed(2))
    a, b = loud.render(u), soft.render(u)
    torch.testing.assert_close(b, a * (64 / 127), rtol=1e-6, atol=1e-7)
    assert a.abs().amax(1).max() <= 1.0


def test_changing_the_probe_retunes_the_voice():
    synth = TorchSynthVoice()
    u = synth.params.defaults(1)
    before = peak_hz(synth.render(u)[0], 16000)
    synth.probe = dataclasses.replace(synth.probe, midi_pitch=synth.probe.midi_pitch + 12)
    after = peak_hz(synth.render(u)[0], 16000)
    assert after == pytest.approx(2 * before, abs=2)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_output_contract(synth, batch_size):
    u = synth.params.sample(batch_size, generator=torch.Generator().manual_seed(batch_size))
    audio = synth.render(u)
    assert audio.shape == (batch_size, synth.probe.num_samples)
    assert audio.dtype == torch.float32 and audio.device.type == "cpu"
    assert not audio.requires_grad and not audio.is_inference()
    assert torch.isfinite(audio).all()
    assert audio.abs().max() <= 1.0
    assert torch.equal(audio, synth.render(u))


def test_batch_position_changes_audio_only_by_rounding(synth):
    g = torch.Generator().manual_seed(4)
    u = synth.params.sample(7, generator=g)
    # Loud noise in item 0 so the shared noise buffer is exercised.
    set_real(synth, u[:1], mixer_noise=1.0, **{"mod_matrix_adsr_1_to_noise_amp": 1.0})
    alone = torch.cat([synth.render(u[i : i + 1]) for i in range(7)])
    batch = torch.cat([synth.params.sample(57, generator=g), u])
    batch[3] = u[0]
    audio = synth.render(batch)
    assert torch.equal(audio[3], audio[57])  # same preset, other slot: same noise, same audio
    in_batch = audio[57:]
    assert (in_batch - alone).abs().max() < 1e-2
    rel = (in_batch - alone).norm(dim=1) / alone.norm(dim=1).clamp_min(1e-6)
    assert rel.max() < 1e-3


def test_frozen_voice_exposes_the_free_subset():
    free = ["vco_1_tuning_semitones", "mixer_vco_2"]
    frozen = FrozenSynth(TorchSynthVoice(), free=free, frozen={"adsr_1_sustain": 1.0})
    assert frozen.params.names == tuple(free)
    tuning = frozen.params["vco_1_tuning_semitones"]
    u = torch.tensor([[0.5, 0.0],
                      [float(tuning.to_normalized(torch.tensor(12.0))), 0.0]])
    audio = frozen.render(u)
    assert audio.shape == (2, frozen.num_samples)
    f0 = frozen.probe.frequency_hz
    assert peak_hz(audio[0], 16000) == pytest.approx(f0, abs=1)
    assert peak_hz(audio[1], 16000) == pytest.approx(2 * f0, abs=2)


def test_invalid_params_raise_naming_the_parameter(synth):
    u = synth.params.defaults(2)
    u[1, synth.params.index("lfo_1_frequency_hz")] = float("nan")
    with pytest.raises(ValueError, match="lfo_1_frequency_hz"):
        synth.render(u)
    u = synth.params.defaults(2)
    u[0, synth.params.index("vco_2_shape")] = 1.2
    with pytest.raises(ValueError, match="vco_2_shape"):
        synth.render(u)
    with pytest.raises(ValueError, match="note_duration_s"):
        TorchSynthVoice(probe=ProbeNote(note_duration_s=5.0, render_duration_s=5.0))


def test_registry_and_global_rng_untouched():
    u = torch.rand(2, 76)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    synth = make_synth("torchsynth")
    synth.render(u)  # builds a Voice for B=2, which draws its initial parameters
    assert torch.equal(torch.rand(3), expected)
    assert isinstance(synth, TorchSynthVoice)
    assert synth.differentiable and synth.batched


def test_gradients_match_finite_differences_where_the_sound_is_smooth(synth):
    """The mixer levels scale the sound smoothly, so central differences are an oracle for
    them; the envelopes and pitches are not smooth at any step size float32 allows (control-rate
    envelopes, phase over a second), so for those only finiteness is checked."""
    from synthmatch.rewards import PerceptualDistance

    distance = PerceptualDistance(sample_rate=synth.sample_rate)
    g = torch.Generator().manual_seed(3)
    target = synth.render(synth.params.sample(3, generator=g))
    u = (0.2 + 0.6 * torch.rand(3, synth.num_params, generator=g)).requires_grad_(True)
    audio = synth.render(u)
    grad, = torch.autograd.grad(distance(audio, target).sum(), u)
    with torch.no_grad():
        torch.testing.assert_close(audio, synth.render(u))  # the same sound either way
    assert torch.isfinite(grad).all()
    with torch.no_grad():
        for name in ("mixer_vco_1", "mixer_vco_2", "mixer_noise"):
            step = torch.zeros_like(u)
            step[:, synth.params.index(name)] = 1e-3
            fd = (distance(synth.render(u + step), target)
                  - distance(synth.render(u - step), target)) / 2e-3
            torch.testing.assert_close(grad[:, synth.params.index(name)], fd,
                                       rtol=0.02, atol=2e-3)


def test_gradients_are_finite_at_the_range_ends(synth):
    u = torch.rand(8, synth.num_params, generator=torch.Generator().manual_seed(4))
    u[:4] = (u[:4] > 0.5).float()  # every parameter at 0 or 1
    u.requires_grad_(True)
    grad, = torch.autograd.grad(synth.render(u).pow(2).sum(), u)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_backward_after_another_render_of_that_size_is_refused(synth):
    u = synth.params.sample(2, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    first = synth.render(u)
    synth.render(synth.params.defaults(3))  # another size: its own Voice, no harm
    first.sum().backward()
    second = synth.render(u)
    synth.render(synth.params.defaults(2))  # overwrites the Voice that recorded `second`
    with pytest.raises(RuntimeError, match="call backward first"):
        second.sum().backward()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(synth):
    gpu = TorchSynthVoice(device="cuda")
    u = synth.params.sample(5, generator=torch.Generator().manual_seed(5))
    audio = gpu.render(u)
    assert audio.device.type == "cuda" and audio.shape == (5, synth.num_samples)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    torch.testing.assert_close(audio.cpu(), synth.render(u), atol=2e-2, rtol=0)
    moved = TorchSynthVoice().to("cuda")
    assert moved.render(u).device.type == "cuda"
