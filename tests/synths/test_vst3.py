"""VST3Synth with the real test plugins (Nekobi, Kars, PingPongPan).

Build them first with scripts/build_test_plugins.sh.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch

from synthmatch.synths import BACKENDS, ProbeNote, make_synth
from synthmatch.synths.presets import load_preset, save_preset
from synthmatch.synths.vst3 import ParameterWriteError, VST3Synth, VST3WorkerError
from synthmatch.synths.vst3_worker import load_plugin, write_verified
from tests.conftest import peak_frequency, plugin_path, preset

pytestmark = pytest.mark.vst

NEKOBI_NAMES = ("waveform", "tuning", "cutoff_pct", "vcf_resonance_pct", "env_mod_pct",
                "decay_pct", "accent_pct", "volume_pct")


@pytest.fixture(scope="module")
def nekobi() -> VST3Synth:
    with VST3Synth(plugin_path("Nekobi")) as synth:
        yield synth


@pytest.fixture(scope="module")
def nekobi_pool() -> VST3Synth:
    with VST3Synth(plugin_path("Nekobi"), workers=2, timeout_s=30.0) as synth:
        yield synth



def test_table_excludes_midi_cc_and_carries_units(nekobi):
    assert nekobi.params.names == NEKOBI_NAMES
    assert (nekobi.params["cutoff_pct"].min, nekobi.params["cutoff_pct"].max) == (0.0, 100.0)
    assert (nekobi.params["tuning"].min, nekobi.params["tuning"].max) == (-12.0, 12.0)
    assert nekobi.params["waveform"].choices == (0.0, 1.0)
    assert nekobi.params["cutoff_pct"].default == pytest.approx(25.0)
    everything = VST3Synth(plugin_path("Nekobi"), include_midi_cc=True)
    assert len(everything.params) == 2080 + 8
    assert "midi_ch_1_cc_7" in everything.params.names


def test_pattern_selection(nekobi):
    synth = VST3Synth(plugin_path("Nekobi"), ["cutoff*", "env_*", "waveform"])
    assert synth.params.names == ("waveform", "cutoff_pct", "env_mod_pct")
    with pytest.raises(ValueError, match=r"'filter\*'.*match nothing.*cutoff_pct"):
        VST3Synth(plugin_path("Nekobi"), ["filter*"])


def test_kars_is_mono_with_seconds(nekobi):
    kars = VST3Synth(plugin_path("Kars"), probe=ProbeNote(render_duration_s=0.5,
                                                          note_duration_s=0.25))
    assert kars.params.names == ("sustain", "release_s", "volume_pct")
    audio = kars.render(kars.params.defaults(1))
    assert audio.shape == (1, 8000) and audio.abs().max() > 1e-3


def test_render_shape_sound_and_parameter_effect(nekobi):
    u = preset(nekobi, 2)
    u[1, nekobi.params.index("cutoff_pct")] = 0.8
    audio = nekobi.render(u)
    assert audio.shape == (2, 16000) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
    assert audio[0].pow(2).mean().sqrt() > 1e-3  # the default preset is audible
    assert (audio[0] - audio[1]).abs().max() > 1e-2  # cutoff changes the sound


def test_tuning_ends_are_an_octave_each_way(nekobi):
    # Nekobi's tuning scales the pitch linearly from x0.5 to x2 (so its midpoint "0" is x1.25);
    # its ends, -12 and +12, are exactly an octave down and up.
    probe = nekobi.probe
    down = nekobi.render(preset(nekobi, 1, tuning=-12.0, cutoff_pct=100.0))[0]
    up = nekobi.render(preset(nekobi, 1, tuning=12.0, cutoff_pct=100.0))[0]
    assert peak_frequency(down, probe.sample_rate) == pytest.approx(probe.frequency_hz / 2,
                                                                    rel=0.02)
    assert peak_frequency(up, probe.sample_rate) == pytest.approx(probe.frequency_hz * 2,
                                                                  rel=0.02)


def test_same_parameters_give_identical_audio(nekobi):
    u = nekobi.params.sample(3, torch.Generator().manual_seed(0))
    first = nekobi.render(u)
    nekobi.render(nekobi.params.sample(2, torch.Generator().manual_seed(1)))  # other state
    assert torch.equal(first, nekobi.render(u))


def test_workers_match_single_process_bit_exactly(nekobi, nekobi_pool):
    u = nekobi.params.sample(6, torch.Generator().manual_seed(2))
    assert torch.equal(nekobi_pool.render(u), nekobi.render(u))
    assert len([p for p in nekobi_pool.worker_pids if p]) == 2


def test_write_that_does_not_read_back_names_the_parameter(nekobi):
    # Hosted through pedalboard, DPF plugins echo every written value (even out-of-range ones,
    # which VST3Synth never writes), so the one real write that cannot read back is NaN.
    index = nekobi._indices[nekobi.params.index("cutoff_pct")]
    try:
        with pytest.raises(ParameterWriteError, match=r"'cutoff_pct'.*wrote nan"):
            write_verified(nekobi.plugin, index, float("nan"), "cutoff_pct")
    finally:
        write_verified(nekobi.plugin, index, 0.5, "cutoff_pct")  # a valid value sticks
    assert nekobi.plugin._parameters[index].raw_value == pytest.approx(0.5)


def test_killed_worker_raises_and_recovers(nekobi, nekobi_pool):
    u = nekobi.params.sample(4, torch.Generator().manual_seed(3))
    nekobi_pool.render(u)  # workers are up
    victim = nekobi_pool.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(VST3WorkerError, match=r"worker 0 .*crashed.*restarted.*items \[0, 1\]"):
        nekobi_pool.render(u)
    assert nekobi_pool.worker_pids[0] != victim
    assert torch.equal(nekobi_pool.render(u), nekobi.render(u))


def test_hung_worker_times_out_and_recovers(nekobi, nekobi_pool):
    u = nekobi.params.sample(4, torch.Generator().manual_seed(4))
    nekobi_pool.render(u)
    victim = nekobi_pool.worker_pids[1]
    nekobi_pool.timeout_s = 2.0
    try:
        os.kill(victim, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(VST3WorkerError, match=r"worker 1 .*was silent.*items \[2, 3\]"):
            nekobi_pool.render(u)
        assert time.monotonic() - start < 10.0
    finally:
        nekobi_pool.timeout_s = 30.0
    assert nekobi_pool.worker_pids[1] != victim
    assert torch.equal(nekobi_pool.render(u), nekobi.render(u))


def test_preset_json_and_plugin_state_round_trip(nekobi, tmp_path):
    u = nekobi.params.sample(1, torch.Generator().manual_seed(5))[0]
    json_path, state_path = nekobi.save_preset_with_state(tmp_path / "acid.json", u, "acid")
    data = json.loads(json_path.read_text())
    assert data["synth"] == "vst3" and set(data["parameters"]) == set(NEKOBI_NAMES)
    assert state_path.suffix == ".vstpreset" and state_path.read_bytes()[:4] == b"VST3"
    expected = nekobi.render(u.unsqueeze(0))

    nekobi.render(nekobi.params.defaults(1))  # move the plugin elsewhere
    back = nekobi.load_plugin_state(state_path)
    # DPF reports discrete values as 0 after a state load (the state holds the right one), so
    # only the continuous columns read back; the JSON preset is authoritative for the table.
    continuous = [j for j, spec in enumerate(nekobi.params) if not spec.discrete]
    torch.testing.assert_close(back[continuous], u[continuous], atol=1e-4, rtol=0)
    both = nekobi.load_preset_with_state(json_path)
    torch.testing.assert_close(both, u, atol=1e-4, rtol=0)
    assert torch.equal(nekobi.render(both.unsqueeze(0)), expected)

    plain = save_preset(tmp_path / "plain.json", nekobi, u)  # the generic JSON path works too
    torch.testing.assert_close(load_preset(plain, nekobi), u, atol=1e-4, rtol=0)


def test_loaded_state_reaches_parameters_outside_the_table_and_the_workers(nekobi, tmp_path):
    quiet = preset(nekobi, 1, volume_pct=20.0)
    state = nekobi.save_plugin_state(tmp_path / "quiet.vstpreset", quiet[0])
    with VST3Synth(plugin_path("Nekobi"), ["cutoff_pct"], workers=2) as cutoff_only:
        u = torch.tensor([[0.2], [0.9]])
        loud = cutoff_only.render(u)
        cutoff_only.load_plugin_state(state)  # volume 20 %, not a free parameter here
        in_process = cutoff_only._voice.render(cutoff_only._rows(u))
        in_workers = cutoff_only.render(u)
    assert torch.equal(in_workers, torch.from_numpy(in_process))
    assert in_workers.abs().max() < 0.5 * loud.abs().max()


def test_context_manager_stops_workers():
    with VST3Synth(plugin_path("Kars"), workers=2) as kars:
        kars.render(kars.params.defaults(2))
        pids = kars.worker_pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="needs plugin_path=.*synth_kwargs"):
        VST3Synth()
    missing = tmp_path / "Nope.vst3"
    with pytest.raises(FileNotFoundError, match="Nope.vst3"):
        VST3Synth(missing)
    not_vst3 = tmp_path / "plugin.so"
    not_vst3.write_bytes(b"\x7fELF")
    with pytest.raises(ValueError, match="not a VST3 plugin"):
        VST3Synth(not_vst3)
    junk = tmp_path / "Junk.vst3"
    junk.write_bytes(b"not a plugin")
    with pytest.raises(ValueError, match="could not be loaded as a VST3"):
        VST3Synth(junk)
    with pytest.raises(ValueError, match="workers must be"):
        VST3Synth(plugin_path("Nekobi"), workers=0)


def test_registry_builds_it():
    if "vst3" not in BACKENDS:
        pytest.skip('synthmatch.synths.BACKENDS lacks "vst3": "synthmatch.synths.vst3:VST3Synth"')
    probe = ProbeNote(render_duration_s=0.5, note_duration_s=0.25)
    synth = make_synth("vst3", probe=probe, device="cpu", plugin_path=plugin_path("Kars"))
    assert isinstance(synth, VST3Synth) and synth.num_samples == 8000
    with pytest.raises(TypeError, match="needs plugin_path=.*synth_kwargs"):
        make_synth("vst3")


def test_effect_is_refused():
    with pytest.raises(ValueError, match="is an effect.*not an instrument"):
        VST3Synth(plugin_path("PingPongPan"))
    assert load_plugin(plugin_path("PingPongPan")).is_effect
