"""Datasets of the real-synth backends: each dataset worker builds its own Vital or VST3
instance, and the stored rows are what the main process renders for the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmatch.data import DatasetConfig, check_dataset, write_dataset
from tests.conftest import plugin_path
from tests.data.helpers import h5py  # noqa: F401  (skips without h5py)


def write_and_compare(config: DatasetConfig, root) -> None:
    ds = write_dataset(config, root, workers=2, progress=False)
    report = check_dataset(root)
    assert report.ok, report.problems
    train = ds.load("train", ("params", "mel"))
    assert train["params"].shape == (ds.num_items("train"), len(ds.param_names))
    # Rows rendered in the workers equal this process's render of the same parameters.
    synth = ds.make_synth()
    with torch.no_grad():
        mel = ds.log_mel()(synth.render(torch.from_numpy(train["params"][:3]))).numpy()
    assert mel.max() > -40.0  # sound, not silence
    np.testing.assert_allclose(train["mel"][:3].astype(np.float32), mel, rtol=2.0 ** -9,
                               atol=1e-3)


@pytest.mark.slow
def test_vital_dataset(tmp_path):
    pytest.importorskip("vita")
    write_and_compare(DatasetConfig("vital", n=12, shard_size=4), tmp_path / "vital")


@pytest.mark.slow
@pytest.mark.vst
def test_vst3_dataset(tmp_path):
    nekobi = str(plugin_path("Nekobi"))
    write_and_compare(DatasetConfig("vst3", n=12, shard_size=4,
                                    synth_kwargs={"plugin_path": nekobi}), tmp_path / "vst3")
