"""Datasets of random presets rendered by any synth backend, as HDF5 shards.

``write_dataset`` renders a :class:`DatasetConfig` into a directory (in worker processes,
resumable); ``open_dataset`` reads it back; ``check_dataset`` verifies every shard::

    from synthmatch.data import DatasetConfig, write_dataset
    ds = write_dataset(DatasetConfig("subtractive", n=10_000), "data/subtractive-10k")
    train = ds.load("train")   # {"params": (N, P) float32, "mel": (N, n_mels, frames) float16}

Layout of a directory: ``dataset.json`` (config and derived metadata), ``shard-00000.h5``...
(datasets ``params``, ``mel``, optionally ``audio``), ``splits.json`` (shard files per split)
and ``stats.json`` (train statistics for normalisation). Needs h5py:
``pip install "synthmatch[data]"``; ``import synthmatch`` does not import this package.
"""

from synthmatch.data.check import CheckReport, ShardInfo, check_dataset, inspect_shard
from synthmatch.data.config import (
    DEFAULT_MEL,
    FORMAT_VERSION,
    DatasetConfig,
    require_h5py,
    shard_name,
    shard_seed,
)
from synthmatch.data.dataset import DatasetError, ShardedDataset, open_dataset
from synthmatch.data.shards import (
    DatasetMismatchError,
    IncompleteDatasetError,
    render_shard,
    write_dataset,
)
from synthmatch.data.splits import assign_splits, compute_stats

__all__ = [
    "DEFAULT_MEL",
    "FORMAT_VERSION",
    "CheckReport",
    "DatasetConfig",
    "DatasetError",
    "DatasetMismatchError",
    "IncompleteDatasetError",
    "ShardInfo",
    "ShardedDataset",
    "assign_splits",
    "check_dataset",
    "compute_stats",
    "inspect_shard",
    "open_dataset",
    "render_shard",
    "require_h5py",
    "shard_name",
    "shard_seed",
    "write_dataset",
]
