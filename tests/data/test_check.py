"""check_dataset and the two scripts: reports, exit codes, --help, the --env-id shorthand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from synthmatch.data import (
    DatasetConfig,
    DatasetError,
    check_dataset,
    require_h5py,
    shard_name,
    write_dataset,
)
from synthmatch.envs.registration import TASKS
from tests.data.helpers import h5py, load_script
from tests.inprocess import run_in_process

make_dataset = load_script("make_dataset.py")
check_script = load_script("check_dataset.py")
ENV_ID = "SynthMatch-FM-Easy-v0"


def args(**overrides):
    return make_dataset.Args(**{"out": None, "n": 40, "progress": False, **overrides})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Four shards of the FM Easy task with audio, configured through the --env-id shorthand."""
    root = tmp_path_factory.mktemp("data") / "fm-easy"
    config = make_dataset.config_from_args(args(
        out=root, env_id=ENV_ID, n=100, shard_size=25, store_audio=True, render_batch=7,
        sample_rate=8000, render_duration_s=0.5, note_duration_s=0.4))
    return write_dataset(config, root, workers=2, progress=False)


def broken_copy(dataset, tmp_path):
    return shutil.copytree(dataset.root, tmp_path / "copy")


@pytest.mark.slow
def test_env_id_shorthand_stores_only_the_free_params(written):
    free = TASKS["FM"][1]["Easy"]
    assert written.config.synth == "fm" and written.config.free_params == free
    table = written.make_synth().params
    assert set(written.param_names) == set(free) and written.param_names == table.names
    assert written.load("train", ("params",))["params"].shape == (50, 3)
    meta = json.loads((written.root / "dataset.json").read_text())
    assert [p["name"] for p in meta["param_table"]] == list(table.names)
    assert meta["config"]["probe"]["sample_rate"] == 8000 and meta["num_samples"] == 4000


@pytest.mark.slow
def test_stored_audio_is_the_synth_output_and_has_stats(written):
    data = written.load("train", fields=("params", "audio"))
    assert data["audio"].shape == (50, 4000) and data["audio"].dtype == np.float32
    with torch.inference_mode():
        audio = written.make_synth().render(torch.from_numpy(data["params"])).numpy()
    np.testing.assert_allclose(data["audio"], audio, atol=1e-6)
    stats = written.stats["audio"]
    assert stats["peak"] == pytest.approx(np.abs(data["audio"]).max())
    assert stats["mean"] == pytest.approx(data["audio"].astype(np.float64).mean(), abs=1e-12)
    assert stats["std"] == pytest.approx(data["audio"].astype(np.float64).std())


@pytest.mark.slow
def test_a_good_dataset_passes_with_a_per_shard_summary(written, capsys):
    report = check_dataset(written.root)
    assert report.ok and report.problems == []
    assert [s.rows for s in report.shards] == [25, 25, 25, 25]
    text = str(report)
    for name in (shard_name(i) for i in range(4)):
        split = next(s for s, names in written.splits.items() if name in names)
        assert f"{name}   {split:<6}      25  audio,mel,params" in text
    assert "total: 100 rows of 100 in 4 shards; train 50 (2 shards)" in text
    assert text.endswith("OK")
    assert check_script.main(check_script.Args(written.root)) == 0
    assert capsys.readouterr().out.strip().endswith("OK")


@pytest.mark.slow
def test_leftover_tmp_files_missing_shards_and_bad_values_are_listed(written, tmp_path, capsys):
    root = broken_copy(written, tmp_path)
    (root / f".{shard_name(1)}.tmp.4242").write_bytes(b"")
    (root / shard_name(3)).unlink()
    with h5py.File(root / shard_name(0), "r+") as f:
        f["params"][0, 0] = 2.0
        f["mel"][1, 0, 0] = np.nan
    with h5py.File(root / shard_name(2), "r+") as f, h5py.File(root / shard_name(1)) as g:
        f["params"][...] = g["params"][...]
    report = check_dataset(root)
    assert not report.ok
    problems = "\n".join(report.problems)
    assert f"leftover temporary file .{shard_name(1)}.tmp.4242" in problems
    assert f"{shard_name(3)} is missing" in problems
    assert f"{shard_name(0)}: params outside [0, 1]" in problems
    assert f"{shard_name(0)}: mel has NaN or inf values" in problems
    assert f"{shard_name(2)} and {shard_name(1)} have the same params" in problems
    assert check_script.main(check_script.Args(root)) == 1
    assert "problem(s):" in capsys.readouterr().out


@pytest.mark.slow
def test_splits_and_stats_are_checked(written, tmp_path):
    root = broken_copy(written, tmp_path)
    splits = json.loads((root / "splits.json").read_text())
    moved = splits["train"].pop()
    splits["val"] += [moved, "shard-00099.h5"]
    splits["test"].append(splits["val"][0])
    (root / "splits.json").write_text(json.dumps(splits))
    (root / "stats.json").write_text(json.dumps({"params": {"mean": [0.5]}}))
    (root / "shard-00099.h5").write_bytes(b"")
    problems = "\n".join(check_dataset(root).problems)
    assert f"splits.json lists {splits['val'][0]} 2 times" in problems
    assert "splits.json lists shard-00099.h5, which is not a shard" in problems
    assert "unexpected shard file shard-00099.h5" in problems
    assert "stats.json has no params mean/std" in problems
    assert "stats.json has no mel mean/std" in problems
    (root / "dataset.json").unlink()
    report = check_dataset(root)
    assert not report.ok and "dataset.json is missing" in report.problems[0]


def test_config_round_trips_through_json_and_fills_defaults():
    config = DatasetConfig("fm", n=10, free_params=["mod_index"], mel={"n_mels": 32},
                           probe={"midi_pitch": 48}, synth_kwargs={"x": (1, 2)})
    data = json.loads(json.dumps(config.to_dict()))
    assert DatasetConfig.from_dict(data) == config
    assert config.free_params == ("mod_index",) and config.synth_kwargs == {"x": [1, 2]}
    assert config.mel == {"n_fft": 1024, "hop_length": 256, "n_mels": 32, "f_min": 20.0,
                          "f_max": None}
    assert config.probe["midi_pitch"] == 48 and config.probe["sample_rate"] == 16000
    other = DatasetConfig("fm", n=10, seed=3, probe={"midi_pitch": 50})
    assert config.differences(other) == [
        "free_params: ['mod_index'] -> None", "mel.n_mels: 32 -> 64",
        "probe.midi_pitch: 48 -> 50", "seed: 0 -> 3", "synth_kwargs.x: [1, 2] -> None"]
    assert config.num_shards == 1 and config.shard_rows(0) == 10


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"synth": "moog"}, "unknown synth 'moog'; available: subtractive, fm, torchsynth"),
    ({"n": 0}, "n must be an integer >= 1, got 0"),
    ({"shard_size": 0}, "shard_size must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, r"val_fraction \+ test_fraction must be < 1"),
    ({"store_mel": False}, "store at least one"),
    ({"mel": {"bands": 3}}, r"unknown mel settings \['bands'\]"),
    ({"probe": {"pitch": 3}}, r"unknown probe settings \['pitch'\]"),
    ({"probe": {"velocity": 0}}, "velocity must be in 1..127"),
    ({"free_params": []}, "at least one"),
    ({"free_params": ["a", "a"]}, r"lists \['a'\] more than once"),
    ({"synth_kwargs": {"device": "cuda"}}, r"must not set \['device'\]"),
    ({"synth_kwargs": {"f": object()}}, "JSON-serialisable"),
])
def test_invalid_configs_say_what_is_allowed(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DatasetConfig(**{"synth": "fm", "n": 10, **kwargs})


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown dataset config keys \['colour'\]"):
        DatasetConfig.from_dict({"synth": "fm", "n": 1, "colour": "red"})
    with pytest.raises(ValueError, match=r"missing \['n'\]"):
        DatasetConfig.from_dict({"synth": "fm"})


def test_make_dataset_errors_exit_2_with_a_message(tmp_path, capsys):
    cases = [
        (args(out=tmp_path / "a", synth="moog"), "available: subtractive, fm"),
        (args(out=tmp_path / "a", synth="fm", n=0), "n must be an integer >= 1"),
        (args(out=tmp_path / "a"), "give --synth NAME or --env-id ID"),
        (args(out=tmp_path / "a", synth="fm", env_id=ENV_ID), "not both"),
        (args(out=tmp_path / "a", env_id="Nope-v0"),
         "unknown env id 'Nope-v0'; available: SynthMatch-Easy-v0"),
        (args(out=tmp_path / "a", synth="fm", synth_kwargs="{oops"), "not valid JSON"),
        (args(out=tmp_path / "a", synth="fm", free_params=("nope",)),
         "unknown parameter 'nope'; known: carrier_detune_cents"),
    ]
    for cli, message in cases:
        assert make_dataset.main(cli) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("make_dataset.py: error: ") and message in err
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("")
    assert make_dataset.main(args(out=tmp_path / "file", synth="fm")) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="exists and is not a directory"):
        write_dataset(DatasetConfig("fm", n=4), tmp_path / "file")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["make_dataset.py", "check_dataset.py"])
def test_help(script):
    result = run_in_process(script, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    expected = "--env-id" if script == "make_dataset.py" else "dataset directory"
    assert expected in result.stdout


def test_missing_h5py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r'pip install "synthmatch\[data\]"'):
        require_h5py()


@pytest.mark.slow
def test_import_synthmatch_does_not_import_the_data_package():
    code = ("import sys, synthmatch; "
            "print('h5py' in sys.modules, 'synthmatch.data' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                          text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr
