"""Parameter tables and JSON presets."""

from __future__ import annotations

import json

import pytest
import torch
from torch.overrides import TorchFunctionMode

from synthmatch.synths import FrozenSynth, ParamSpec, ParamTable, make_synth
from synthmatch.synths.presets import PresetError, load_preset, save_preset


def test_round_trip_normalised_real_for_every_scale():
    table = ParamTable([
        ParamSpec("gain_db", -24.0, 0.0, -6.0),
        ParamSpec("cutoff_hz", 30.0, 20000.0, 1000.0, scale="log"),
        ParamSpec("attack_s", 0.0, 2.0, 0.1, scale="curve", curve=0.5),
        ParamSpec("tuning_semitones", -24.0, 24.0, 0.0, scale="curve", curve=0.5,
                  symmetric=True),
    ])
    u = torch.rand(100, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(table.to_normalized(table.to_real(u)), u, atol=1e-9, rtol=0)
    real = table.to_real(u)
    assert (real[:, 1] >= 30.0).all() and (real[:, 1] <= 20000.0).all()
    # The log scale is geometric: its midpoint is the geometric mean.
    mid = table.to_real(torch.full((1, 4), 0.5, dtype=torch.float64))
    assert mid[0, 1].item() == pytest.approx((30.0 * 20000.0) ** 0.5)
    assert mid[0, 3].item() == pytest.approx(0.0, abs=1e-12)


def test_a_first_conversion_in_inference_mode_leaves_gradients_working():
    # The table caches its constants: built under inference_mode they used to be inference
    # tensors, and every later differentiable render failed.
    table = ParamTable([ParamSpec("cutoff_hz", 20.0, 20000.0, 1000.0, scale="log"),
                        ParamSpec("osc_mix", 0.0, 1.0, 0.5)])
    with torch.inference_mode():
        table.to_real(torch.full((2, 2), 0.5))
    u = torch.full((2, 2), 0.5, requires_grad=True)
    table.to_real(u).sum().backward()
    assert (u.grad > 0).all()


def test_discrete_choices_snap():
    spec = ParamSpec("voices", 1.0, 4.0, 1.0, choices=(1.0, 2.0, 3.0, 4.0))
    u = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.99])
    assert spec.to_real(u).tolist() == [1.0, 2.0, 2.0, 3.0, 4.0]
    assert spec.to_normalized(torch.tensor([2.2])).item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min=1.0, max=0.0, default=0.5), "must exceed"),
    (dict(min=0.0, max=1.0, default=0.5, scale="log"), "log scale"),
    (dict(min=0.0, max=1.0, default=2.0), "default"),
    (dict(min=0.0, max=1.0, default=0.5, scale="cubic"), "scale"),
])
def test_bad_specs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParamSpec("x", **kwargs)


def test_validate_names_the_bad_parameter():
    table = make_synth("subtractive").params
    u = table.defaults(3)
    u[2, table.index("amp_decay_s")] = -0.2
    with pytest.raises(ValueError, match="amp_decay_s"):
        table.validate(u)
    with pytest.raises(TypeError):
        table.validate(u.numpy())
    with pytest.raises(KeyError, match="unknown parameter 'nope'"):
        table.index("nope")


class HostReads(TorchFunctionMode):
    """Counts reads of tensor values into Python (each one a wait for the device on a GPU)."""

    READS = (torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist,
             torch.Tensor.__float__, torch.Tensor.__int__)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


def test_validate_reads_a_valid_batch_once_and_names_inf():
    table = make_synth("subtractive").params
    u = table.sample(5, torch.Generator().manual_seed(1))
    with HostReads() as reads:
        table.validate(u)
    assert reads.count == 1
    u[3, table.index("gain_db")] = float("-inf")
    with pytest.raises(ValueError, match="'gain_db' has NaN or inf"):
        table.validate(u)


def test_frozen_synth_validates_once():
    easy = FrozenSynth(make_synth("subtractive"), ["cutoff_hz", "osc1_shape"])
    u = torch.rand(3, 2, generator=torch.Generator().manual_seed(2))
    with HostReads() as reads:
        easy.render(u)
    # The free columns' check, and on CPU the unison voice counts that skip unused voices.
    assert reads.count == 2
    with pytest.raises(ValueError, match="osc1_shape"):
        easy.render(torch.tensor([[1.5, 0.5]]))  # columns in the inner table's order


def test_preset_round_trip(tmp_path):
    synth = make_synth("subtractive")
    u = synth.params.sample(1, torch.Generator().manual_seed(4))[0]
    path = save_preset(tmp_path / "p.json", synth, u, name="test")
    data = json.loads(path.read_text())
    assert data["synth"] == "subtractive" and data["name"] == "test"
    assert set(data["parameters"]) == set(synth.params.names)
    loaded = load_preset(path, synth)
    torch.testing.assert_close(loaded, u, atol=1e-6, rtol=0)
    assert torch.equal(synth.render(loaded[None]), synth.render(synth.params.quantize(u[None])))


@pytest.mark.parametrize("name", ["subtractive", "fm"])
@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_presets_at_the_boxs_edges_load_back(tmp_path, name, edge):
    """A preset with every parameter at a bound of the box is written inside its ranges (the
    float64 map can round a log range's top past it) and loads back to the same preset."""
    synth = make_synth(name)
    u = torch.full((len(synth.params),), edge)
    path = save_preset(tmp_path / "p.json", synth, u)
    for spec in synth.params:
        value = json.loads(path.read_text())["parameters"][spec.name]["value"]
        assert spec.min <= value <= spec.max, spec.name
    torch.testing.assert_close(load_preset(path, synth), synth.params.quantize(u[None])[0],
                               atol=1e-6, rtol=0)


def test_frozen_synth_presets_store_the_full_synth(tmp_path):
    synth = make_synth("subtractive")
    easy = FrozenSynth(synth, ["cutoff_hz", "osc1_shape"], {"resonance": 0.8})
    u = torch.tensor([0.3, 0.6])
    path = save_preset(tmp_path / "easy.json", easy, u)
    data = json.loads(path.read_text())
    assert data["parameters"]["resonance"]["normalized"] == pytest.approx(0.8)
    torch.testing.assert_close(load_preset(path, easy), u, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_preset(path, synth), easy.expand(u[None])[0], atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["parameters"].pop("cutoff_hz"), r"missing parameter\(s\) \['cutoff_hz'\]"),
    (lambda d: d["parameters"].update(bogus={"value": 1}), "unknown parameter"),
    (lambda d: d["parameters"]["cutoff_hz"].update(value=1e6), "parameters.cutoff_hz.value"),
    (lambda d: d["parameters"]["gain_db"].update(value="loud"), "parameters.gain_db.value"),
    (lambda d: d["parameters"]["resonance"].update(normalized=0.99), "resonance.normalized"),
    (lambda d: d["parameters"]["unison_voices"].update(value=2.5), "unison_voices.value"),
    (lambda d: d.update(synth="fm"), "'synth'"),
    (lambda d: d.update(version=7), "'version'"),
    (lambda d: d["probe"].update(velocity=0), "'probe'"),
])
def test_invalid_presets_name_the_field(tmp_path, edit, match):
    synth = make_synth("subtractive")
    path = save_preset(tmp_path / "p.json", synth, synth.params.defaults(1)[0])
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PresetError, match=match):
        load_preset(path, synth)


def test_preset_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(PresetError, match="not valid JSON"):
        load_preset(path, make_synth("subtractive"))


def test_unknown_synth_name():
    with pytest.raises(ValueError, match="available: subtractive"):
        make_synth("moog")
