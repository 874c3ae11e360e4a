"""Reading a finished dataset: :func:`open_dataset` and :class:`ShardedDataset`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthmatch.data.config import (
    DATASET_JSON,
    FORMAT_VERSION,
    SPLIT_NAMES,
    SPLITS_JSON,
    STATS_JSON,
    DatasetConfig,
    require_h5py,
    shard_index,
    shard_name,
)
from synthmatch.rewards.features import LogMelSpectrogram
from synthmatch.synths import Synth

FIELD_DTYPES = {"params": np.float32, "mel": np.float16, "audio": np.float32}


class DatasetError(RuntimeError):
    """A dataset directory is missing, incomplete or inconsistent (the message says how)."""


def read_json(path: Path, what: str) -> Any:
    """Parse ``path``, raising :class:`DatasetError` that names ``what`` it should hold."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing ({what})") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} ({what}) cannot be read: {exc}") from None


def read_metadata(root: Path) -> dict[str, Any]:
    """``dataset.json`` of ``root``, checked for a readable format version."""
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist or is not a directory")
    meta = read_json(root / DATASET_JSON, "the dataset description; is this a dataset "
                     "directory written by experiments/make_dataset.py?")
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetError(f"{root / DATASET_JSON}: format_version {version!r} is not one this "
                           f"synthmatch reads (<= {FORMAT_VERSION})")
    return meta


class ShardedDataset:
    """A dataset directory: config, splits, train statistics and the shards' arrays.

    Attributes:
        root: The directory.
        metadata: ``dataset.json`` (config plus derived facts: ``param_table``,
            ``sample_rate``, ``num_samples``, ``mel_shape``...).
        config: The :class:`DatasetConfig` that wrote it.
        splits: ``{"train": [shard file names], "val": [...], "test": [...]}``.
        stats: ``stats.json``: per-feature statistics of the train split.
        param_names: Column names of ``params``.
    """

    def __init__(self, root: Path, metadata: dict[str, Any], splits: dict[str, list[str]],
                 stats: dict[str, Any]):
        self.root = Path(root)
        self.metadata = metadata
        self.config = DatasetConfig.from_dict(metadata["config"])
        self.splits = splits
        self.stats = stats
        self.param_names: tuple[str, ...] = tuple(metadata["param_names"])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.num_items(s)}" for s in SPLIT_NAMES)
        return (f"ShardedDataset({str(self.root)!r}, {self.config.synth}, "
                f"{len(self.param_names)} params, {sizes})")

    def shard_paths(self, split: str | None = None) -> list[Path]:
        """Shard files of ``split`` (``None``: all, in index order)."""
        if split is None:
            names = [shard_name(i) for i in range(self.config.num_shards)]
        else:
            names = self.splits[self._check_split(split)]
        return [self.root / n for n in names]

    def num_items(self, split: str | None = None) -> int:
        if split is None:
            return self.config.n
        return sum(self.config.shard_rows(shard_index(p.name)) for p in self.shard_paths(split))

    def iter_shards(self, split: str,
                    fields: Sequence[str] = ("params", "mel")) -> Iterator[dict[str, np.ndarray]]:
        """One dict of arrays per shard of ``split``, in shard order (bounded memory)."""
        h5py = require_h5py()
        fields = self._check_fields(fields)
        for path in self.shard_paths(split):
            with _reading(path), h5py.File(path, "r") as f:
                yield {name: f[name][...] for name in fields}

    def load(self, split: str,
             fields: Sequence[str] = ("params", "mel")) -> dict[str, np.ndarray]:
        """Arrays of ``split`` concatenated over its shards, in shard order.

        Returns:
            ``params`` ``(N, P)`` float32 normalised, ``mel`` ``(N, n_mels, frames)`` float16
            dB, ``audio`` ``(N, T)`` float32 (those asked for).

        Raises:
            KeyError: unknown split. ValueError: a field the dataset does not store.
        """
        h5py = require_h5py()
        fields = self._check_fields(fields)
        paths = self.shard_paths(split)
        total = self.num_items(split)
        out: dict[str, np.ndarray] = {}
        start = 0
        for path in paths:
            with _reading(path), h5py.File(path, "r") as f:
                rows = f["params"].shape[0]
                for name in fields:
                    data = f[name]
                    if name not in out:
                        out[name] = np.empty((total, *data.shape[1:]), FIELD_DTYPES[name])
                    data.read_direct(out[name], dest_sel=np.s_[start:start + rows])
            start += rows
        if not paths:
            out = {name: np.empty((0, *self._row_shape(name)), FIELD_DTYPES[name])
                   for name in fields}
        return out

    def make_synth(self, device: str = "cpu") -> Synth:
        """The backend (and :class:`FrozenSynth` wrapper) exactly as used for rendering."""
        return self.config.make_synth(device)

    def log_mel(self) -> LogMelSpectrogram:
        """The mel front end that computed ``mel``."""
        return self.config.log_mel()

    def _row_shape(self, name: str) -> tuple[int, ...]:
        if name == "params":
            return (len(self.param_names),)
        if name == "mel":
            return tuple(self.metadata["mel_shape"])
        return (int(self.metadata["num_samples"]),)

    def _check_split(self, split: str) -> str:
        if split not in self.splits:
            raise KeyError(f"unknown split {split!r}; available: {list(self.splits)}")
        return split

    def _check_fields(self, fields: Sequence[str]) -> tuple[str, ...]:
        if isinstance(fields, str):
            fields = (fields,)
        stored = self.config.stored_fields
        for name in fields:
            if name not in stored:
                hint = {"audio": " (write it with store_audio=True / --store-audio)",
                        "mel": " (write it with store_mel=True)"}.get(name, "")
                raise ValueError(f"field {name!r} is not stored in {self.root}; stored: "
                                 f"{list(stored)}{hint}")
        return tuple(fields)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn h5py's errors for a damaged shard into a DatasetError naming the file."""
    try:
        yield
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise DatasetError(f"{path}: cannot read this shard ({type(err).__name__}: {err}); "
                           "check it with experiments/check_dataset.py, delete it and run "
                           "make_dataset.py again to re-render it") from None


def open_dataset(out_dir: str | Path) -> ShardedDataset:
    """Open a finished dataset directory written by :func:`write_dataset`.

    Raises:
        DatasetError: no such directory, no ``dataset.json``, or the dataset is unfinished
            (shards, ``splits.json`` or ``stats.json`` missing); the message says what to run.
    """
    root = Path(out_dir)
    meta = read_metadata(root)
    config = DatasetConfig.from_dict(meta["config"])
    resume = ("run experiments/make_dataset.py again with the same settings (or "
              "write_dataset with the same config) to finish it")
    missing = [shard_name(i) for i in range(config.num_shards)
               if not (root / shard_name(i)).exists()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetError(f"dataset {root} is incomplete: {len(missing)} of "
                           f"{config.num_shards} shards missing ({shown}); {resume}")
    for name in (SPLITS_JSON, STATS_JSON):
        if not (root / name).exists():
            raise DatasetError(f"dataset {root} is incomplete: {name} is missing; {resume}")
    splits = read_json(root / SPLITS_JSON, "the train/val/test shard lists")
    stats = read_json(root / STATS_JSON, "the train statistics")
    return ShardedDataset(root, meta, splits, stats)
