"""VitalSynth: the declared table against Vital's own display, determinism, threads, presets."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

pytest.importorskip("vita")

from synthmatch.synths import ProbeNote, make_synth  # noqa: E402
from synthmatch.synths.vital import CURATED_CONTROLS, VitalSynth, import_vita  # noqa: E402
from tests.conftest import preset, spectrum  # noqa: E402

PROBE = ProbeNote(midi_pitch=60, note_duration_s=0.3, render_duration_s=0.4, sample_rate=16000)


@pytest.fixture(scope="module")
def synth() -> VitalSynth:
    return VitalSynth(probe=PROBE)




# A long, loud, bright contrast to the defaults: state it could leave behind would show.
LOUD = dict(env_1_release_s=8.0, env_2_attack_s=2.0, env_2_to_filter_1_cutoff=-0.8,
            osc_1_unison_voices=7.0, osc_2_level=1.0, lfo_1_to_osc_1_wave_frame=0.7,
            filter_1_resonance=0.9)


def test_curated_table_is_declared_with_units(synth):
    names = synth.params.names
    assert 16 <= len(names) <= 32
    assert len(set(names)) == len(names)
    assert synth.controls == CURATED_CONTROLS
    vita_synth = synth._engines[0].synth
    for control, spec in zip(synth.controls, synth.params, strict=True):
        units = vita_synth.get_control_details(control).display_units.strip()
        # LFO rates are in Hz although Vital displays their period.
        expected = {"secs": "s", "dB": "db"}.get(units)
        if expected and not control.endswith("_frequency"):
            assert spec.unit == expected, spec.name
    for name in ("filter_1_cutoff_hz", "lfo_1_frequency_hz", "osc_2_transpose_semitones",
                 "osc_2_tune_cents", "filter_1_drive_db", "env_1_attack_s"):
        assert name in names
    assert synth.params["osc_2_transpose_semitones"].discrete
    assert not synth.differentiable and not synth.batched


def _display_to_real(spec_name: str, text: str, details) -> float:
    """Vital's display text in the table's units."""
    options = list(details.options)
    if text in options:  # named choices: their raw index
        return details.min + options.index(text)
    value = float(re.match(r"-?[\d.]+", text).group())
    if text.endswith("%"):
        return value / 100.0
    if spec_name.endswith("cutoff_hz"):  # semitones relative to MIDI 60
        return 440.0 * 2.0 ** ((value + 60.0 - 69.0) / 12.0)
    if spec_name.endswith("frequency_hz") and text.endswith("secs"):  # Vital shows the period
        return 1.0 / value
    return value


# One control of every kind of mapping outside the curated set.
OTHER_CONTROLS = ["volume", "portamento_time", "chorus_frequency", "eq_low_resonance",
                  "reverb_decay_time", "delay_frequency", "env_3_attack", "distortion_drive",
                  "lfo_2_frequency", "delay_style", "osc_3_transpose"]


@pytest.mark.parametrize("controls", [None, OTHER_CONTROLS], ids=["curated", "other"])
def test_table_agrees_with_vitals_own_display(synth, controls):
    if controls is not None:
        synth = VitalSynth(probe=PROBE, controls=controls)
    g = torch.Generator().manual_seed(0)
    rows = torch.cat([synth.params.sample(6, generator=g), torch.zeros(1, synth.num_params),
                      torch.ones(1, synth.num_params)])
    for row in rows:
        real = synth.params.to_real(synth.params.quantize(row[None]).double())[0]
        shown = synth.vital_text(row)
        for j, (control, spec) in enumerate(zip(synth.controls, synth.params, strict=True)):
            expected = float(real[j])
            details = synth._engines[0].synth.get_control_details(control)
            got = _display_to_real(spec.name, shown[control], details)
            # Vital prints 6 decimals; LFO periods at 512 Hz print as 0.001953.
            assert got == pytest.approx(expected, rel=2e-3, abs=2e-6), (spec.name, shown[control])


def test_normalised_real_round_trip(synth):
    u = synth.params.quantize(synth.params.sample(32, generator=torch.Generator().manual_seed(1)))
    back = synth.params.to_normalized(synth.params.to_real(u.double()))
    torch.testing.assert_close(back.float(), u, atol=1e-5, rtol=0)


def test_default_render_is_audible(synth):
    audio = synth.render(synth.params.defaults(1))
    assert audio.shape == (1, PROBE.num_samples)
    assert audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
    assert audio.square().mean().sqrt() > 0.02


def test_lower_cutoff_removes_high_frequencies(synth):
    audio = synth.render(torch.cat([preset(synth, filter_1_cutoff_hz=16000.0),
                                    preset(synth, filter_1_cutoff_hz=400.0)]))
    power = spectrum(audio).square()
    hz_per_bin = PROBE.sample_rate / PROBE.num_samples
    high = power[:, int(2000 / hz_per_bin):].sum(-1) / power.sum(-1)
    assert high[0] > 0.05
    assert high[1] < 0.01 * high[0]


def test_same_parameters_same_audio_whatever_came_before(synth):
    a, b = preset(synth), preset(synth, **LOUD)
    audio = synth.render(torch.cat([a, b, a, a, b]))
    assert not torch.allclose(audio[0], audio[1], atol=1e-2)
    assert torch.equal(audio[0], audio[2])
    assert torch.equal(audio[0], audio[3])
    assert torch.equal(audio[1], audio[4])


def test_batch_position_does_not_matter(synth):
    g = torch.Generator().manual_seed(2)
    u = synth.params.sample(5, generator=g)
    first = synth.render(u)
    perm = torch.tensor([3, 0, 4, 2, 1])
    again = synth.render(u[perm])
    # Bit-exact in practice; a residual of 1e-14 was once seen on a near-silent item.
    torch.testing.assert_close(again, first[perm], atol=1e-9, rtol=0)


def test_threads_render_what_one_thread_renders(synth):
    u = synth.params.sample(4, generator=torch.Generator().manual_seed(3))
    threaded = VitalSynth(probe=PROBE, threads=2)
    try:
        torch.testing.assert_close(threaded.render(u), synth.render(u), atol=1e-9, rtol=0)
    finally:
        threaded.close()


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.2])
def test_invalid_parameters_raise(synth, bad):
    u = synth.params.defaults(1)
    u[0, 3] = bad
    with pytest.raises(ValueError, match=synth.params.names[3]):
        synth.render(u)


def test_vital_preset_round_trip(synth, tmp_path):
    u = synth.params.quantize(synth.params.sample(1, generator=torch.Generator().manual_seed(4)))
    path = synth.save_vital_preset(tmp_path / "match.vital", u[0])
    data = json.loads(path.read_text())
    assert "settings" in data and len(data["settings"]["wavetables"]) >= 2
    loaded = synth.load_vital_preset(path)
    torch.testing.assert_close(loaded, u[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(synth.render(loaded[None]), synth.render(u), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="not a Vital preset"):
        synth.params_from_vital_json("{}")


def test_selected_controls_and_unknown_names(synth):
    custom = VitalSynth(probe=PROBE, controls=["filter_1_cutoff_hz", "env_1_attack",
                                               "lfo_1_to_osc_1_wave_frame"])
    assert custom.params.names == ("filter_1_cutoff_hz", "env_1_attack_s",
                                   "lfo_1_to_osc_1_wave_frame")
    assert custom.controls == ("filter_1_cutoff", "env_1_attack", "modulation_2_amount")
    with pytest.raises(ValueError, match="filter_1_cutoff"):
        VitalSynth(probe=PROBE, controls=["filter_1_cutof"])
    with pytest.raises(ValueError, match="twice"):
        VitalSynth(probe=PROBE, controls=["env_1_attack", "env_1_attack_s"])
    with pytest.raises(ValueError, match="threads"):
        VitalSynth(probe=PROBE, threads=0)


@pytest.mark.parametrize("sample_rate", [16000, 44100])
def test_sample_rate_and_pitch(sample_rate):
    probe = ProbeNote(midi_pitch=69, note_duration_s=0.5, render_duration_s=0.5,
                      sample_rate=sample_rate)
    sine = make_synth("vital", probe=probe)
    u = preset(sine, osc_1_wave_frame=256.0, env_1_sustain=1.0)
    audio = sine.render(u)
    assert audio.shape == (1, probe.num_samples)
    mag = spectrum(audio[0])
    hz_per_bin = sample_rate / probe.num_samples
    peak = int(mag.argmax())
    assert abs(peak * hz_per_bin - 440.0) <= hz_per_bin
    power = mag.square()
    assert power[peak - 3: peak + 4].sum() > 0.99 * power.sum()


def test_missing_vita_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vita", None)
    with pytest.raises(ImportError, match=r"synthmatch\[vital\]"):
        import_vita()
