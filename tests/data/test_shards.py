"""Writing, reading and resuming sharded datasets (synthmatch.data)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

import synthmatch
from synthmatch.data import (
    DatasetConfig,
    DatasetError,
    DatasetMismatchError,
    assign_splits,
    check_dataset,
    open_dataset,
    shard_name,
    shard_seed,
    write_dataset,
)
from synthmatch.synths import ProbeNote
from tests.data.helpers import assert_same_shards, h5py, read_shard, shard_arrays

SMALL = dict(synth="subtractive", n=300, shard_size=64)
ROWS = [64, 64, 64, 64, 44]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "small"
    return write_dataset(DatasetConfig(**SMALL), root, workers=2, progress=False)


def copy_of(dataset, tmp_path):
    return shutil.copytree(dataset.root, tmp_path / "copy")


@pytest.mark.slow
def test_files_shapes_dtypes_and_attributes(written):
    root = written.root
    names = [shard_name(i) for i in range(5)]
    assert sorted(os.listdir(root)) == sorted(["dataset.json", "splits.json", "stats.json",
                                               *names])
    table = written.make_synth().params
    assert written.param_names == table.names and len(table) == 24
    for index, (name, rows) in enumerate(zip(names, ROWS, strict=True)):
        data, attrs = read_shard(root / name)
        assert sorted(data) == ["mel", "params"]
        assert data["params"].shape == (rows, 24) and data["params"].dtype == np.float32
        assert data["mel"].shape == (rows, 64, 63) and data["mel"].dtype == np.float16
        assert data["params"].min() >= 0.0 and data["params"].max() <= 1.0
        assert np.isfinite(data["mel"]).all()
        assert attrs["complete"] and attrs["shard_index"] == index
        assert attrs["shard_seed"] == shard_seed(0, index) and attrs["seed"] == 0
        assert attrs["synth"] == "subtractive" and attrs["sample_rate"] == 16000
        assert json.loads(attrs["param_names"]) == list(table.names)
        assert json.loads(attrs["probe"]) == ProbeNote().to_dict()
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["config"] == DatasetConfig(**SMALL).to_dict()
    assert meta["format_version"] == 1 and meta["synthmatch_version"] == synthmatch.__version__
    assert meta["num_shards"] == 5 and meta["num_items"] == 300
    assert meta["sample_rate"] == 16000 and meta["num_samples"] == 16000
    assert meta["mel_shape"] == [64, 63]
    assert [p["name"] for p in meta["param_table"]] == list(table.names)
    cutoff = next(p for p in meta["param_table"] if p["name"] == "cutoff_hz")
    assert cutoff["scale"] == table["cutoff_hz"].scale and cutoff["unit"] == "hz"
    assert cutoff["max"] == table["cutoff_hz"].max


@pytest.mark.slow
def test_rows_are_the_shard_generator_draws_rendered_by_the_front_end(written):
    data, _ = read_shard(written.root / shard_name(3))
    synth = written.make_synth()
    expected = synth.params.sample(64, torch.Generator().manual_seed(shard_seed(0, 3)))
    np.testing.assert_array_equal(data["params"], expected.numpy())
    with torch.inference_mode():
        mel = written.log_mel()(synth.render(expected[:8])).numpy()
    # Stored as float16: within one float16 step (0.0625 dB near -100 dB).
    np.testing.assert_allclose(data["mel"][:8].astype(np.float32), mel, atol=0.07)


@pytest.mark.slow
def test_splits_cover_every_shard_once_and_are_deterministic(written):
    splits = written.splits
    assert set(splits) == {"train", "val", "test"}
    listed = [n for names in splits.values() for n in names]
    assert sorted(listed) == [shard_name(i) for i in range(5)]
    assert len(set(listed)) == len(listed)
    assert len(splits["val"]) == 1 and len(splits["test"]) == 1
    assert splits == assign_splits(written.config)
    assert written.num_items("train") + written.num_items("val") + written.num_items(
        "test") == 300


@pytest.mark.slow
def test_stats_equal_numpy_statistics_of_the_train_split(written):
    train = written.load("train")
    stats = written.stats
    params = train["params"].astype(np.float64)
    assert stats["num_items"] == params.shape[0] == written.num_items("train")
    assert stats["params"]["names"] == list(written.param_names)
    for key, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
        np.testing.assert_allclose(stats["params"][key], fn(params, axis=0), rtol=1e-9,
                                   atol=1e-12)
    mel = train["mel"].astype(np.float64)
    np.testing.assert_allclose(stats["mel"]["mean"], mel.mean(axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(stats["mel"]["std"], mel.std(axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(stats["mel"]["global_mean"], mel.mean(), rtol=1e-9)
    np.testing.assert_allclose(stats["mel"]["global_std"], mel.std(), rtol=1e-9)
    assert "audio" not in stats
    assert json.loads((written.root / "stats.json").read_text()) == stats


@pytest.mark.slow
def test_load_concatenates_shards_in_order_and_rejects_unstored_fields(written):
    val = written.load("val", fields=("params",))
    assert list(val) == ["params"]
    direct = np.concatenate([read_shard(written.root / n)[0]["params"]
                             for n in written.splits["val"]])
    np.testing.assert_array_equal(val["params"], direct)
    with pytest.raises(ValueError, match="'audio' is not stored.*--store-audio"):
        written.load("train", fields=("params", "audio"))
    with pytest.raises(KeyError, match="unknown split 'dev'"):
        written.load("dev")
    assert len(written.load("test")["mel"]) == written.num_items("test") == 44


@pytest.mark.slow
def test_one_worker_writes_the_same_shards_as_two(written, tmp_path):
    other = write_dataset(DatasetConfig(**SMALL), tmp_path / "one", workers=1, progress=False)
    assert_same_shards(written.root, other.root)
    assert other.splits == written.splits and other.stats == written.stats


@pytest.mark.slow
def test_resume_renders_only_the_missing_shard(written, tmp_path):
    root = copy_of(written, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in root.glob("shard-*.h5")}
    (root / shard_name(2)).unlink()
    stale = root / f".{shard_name(2)}.tmp.999999"
    stale.write_bytes(b"half a shard")
    write_dataset(DatasetConfig(**SMALL), root, workers=2, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in root.glob("shard-*.h5")}
    assert sorted(after) == sorted(before) and not stale.exists()
    assert {n for n in after if after[n] != before[n]} == {shard_name(2)}
    assert_same_shards(written.root, root)
    assert check_dataset(root).ok


@pytest.mark.slow
def test_a_different_config_in_the_same_directory_is_refused(written, tmp_path):
    root = copy_of(written, tmp_path)
    meta = (root / "dataset.json").read_text()
    config = DatasetConfig(**{**SMALL, "seed": 1, "mel": {"n_mels": 32}})
    with pytest.raises(DatasetMismatchError) as info:
        write_dataset(config, root, workers=1, progress=False)
    message = str(info.value)
    assert "config.seed: 0 -> 1" in message and "config.mel.n_mels: 64 -> 32" in message
    assert "mel_shape" in message and "config.n:" not in message
    assert (root / "dataset.json").read_text() == meta


@pytest.mark.slow
def test_an_incomplete_final_shard_is_reported_not_overwritten(written, tmp_path):
    root = copy_of(written, tmp_path)
    with h5py.File(root / shard_name(1), "r+") as f:
        f.attrs["complete"] = False
    (root / shard_name(4)).write_bytes(b"not hdf5")
    before = (root / shard_name(1)).stat().st_mtime_ns
    with pytest.raises(DatasetError) as info:
        write_dataset(DatasetConfig(**SMALL), root, workers=1, progress=False)
    message = str(info.value)
    assert f"{shard_name(1)}: not marked complete" in message
    assert f"{shard_name(4)}: cannot be opened as HDF5" in message
    assert "Delete them" in message and shard_name(0) not in message
    assert (root / shard_name(1)).stat().st_mtime_ns == before
    problems = check_dataset(root).problems
    assert any(p.startswith(f"{shard_name(1)}: not marked complete") for p in problems)
    assert any(p.startswith(f"{shard_name(4)}: cannot be opened") for p in problems)


@pytest.mark.slow
def test_open_dataset_says_what_is_missing(written, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="dataset.json is missing"):
        open_dataset(tmp_path / "empty")
    root = copy_of(written, tmp_path)
    (root / "stats.json").unlink()
    with pytest.raises(DatasetError, match="incomplete: stats.json is missing.*again"):
        open_dataset(root)
    (root / shard_name(3)).unlink()
    with pytest.raises(DatasetError, match=r"1 of 5 shards missing \(shard-00003.h5\)"):
        open_dataset(root)


def test_splits_with_few_shards_go_to_train_with_a_warning():
    with pytest.warns(UserWarning, match="only 2 shard"):
        splits = assign_splits(DatasetConfig("fm", n=10, shard_size=8))
    assert splits == {"train": [shard_name(0), shard_name(1)], "val": [], "test": []}
    many = assign_splits(DatasetConfig("fm", n=40 * 8, shard_size=8))
    assert [len(many[s]) for s in ("train", "val", "test")] == [36, 2, 2]
    other = assign_splits(DatasetConfig("fm", n=40 * 8, shard_size=8, seed=1))
    assert other != many
    three = assign_splits(DatasetConfig("fm", n=3, shard_size=1, val_fraction=0.0))
    assert [len(three[s]) for s in ("train", "val", "test")] == [2, 0, 1]


@pytest.mark.slow
def test_rows_of_every_shard_are_distinct(written):
    arrays = shard_arrays(written.root)
    params = np.concatenate([arrays[n]["params"] for n in sorted(arrays)])
    assert params.shape == (300, 24)
    assert len(np.unique(params, axis=0)) == 300


@pytest.mark.slow
def test_a_failing_worker_stops_the_run_with_the_resume_message(tmp_path):
    from synthmatch.data.shards import IncompleteDatasetError, _render_shards

    config = DatasetConfig("fm", n=8, shard_size=4)
    # A directory that does not exist: the worker fails to create its temporary file.
    with pytest.raises(IncompleteDatasetError) as info:
        _render_shards(config, tmp_path / "gone", [0, 1], 1, progress=False)
    message = str(info.value)
    assert "rendering shard-0000" in message and ".tmp." in message
    assert message.endswith("0 of 2 shards complete; run the same command again to resume")
    assert info.value.done == 0 and info.value.total == 2 and not info.value.interrupted


def test_the_in_process_device_path_writes_the_same_shards(written, tmp_path):
    # The path make_dataset.py --device cuda takes, run here on the CPU: shards rendered one
    # after another in this process must equal the worker processes' shards.
    from synthmatch.data.shards import _claim_directory, _render_on_device

    config = DatasetConfig(**SMALL)
    root = tmp_path / "inproc"
    _claim_directory(root, config.metadata(config.make_synth()))
    _render_on_device(config, root, list(range(config.num_shards)), torch.device("cpu"), False)
    assert_same_shards(written.root, root)


def test_a_device_this_machine_lacks_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cuda:7"):
        write_dataset(DatasetConfig(**SMALL), tmp_path / "x", device="cuda:7")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        write_dataset(DatasetConfig(**SMALL), tmp_path / "x", device="gpu")
    assert not (tmp_path / "x").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_rendering_gives_the_cpu_presets_and_close_audio(written, tmp_path):
    other = write_dataset(DatasetConfig(**SMALL), tmp_path / "gpu", device="cuda",
                          progress=False)
    left, right = shard_arrays(written.root), shard_arrays(other.root)
    for name in left:
        np.testing.assert_array_equal(left[name]["params"], right[name]["params"])
        np.testing.assert_allclose(left[name]["mel"].astype(np.float32),
                                   right[name]["mel"].astype(np.float32), atol=0.5)
