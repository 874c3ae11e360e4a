"""Train/val/test splits by whole shards, and the train statistics used for normalisation."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from synthmatch.data.config import DatasetConfig, require_h5py, shard_name

# Bytes of float64 per block when streaming statistics.
_STATS_BLOCK_BYTES = 1 << 25


def assign_splits(config: DatasetConfig) -> dict[str, list[str]]:
    """Whole shards to train/val/test, a deterministic shuffle of the seed.

    With at least 3 shards, val and test get ``round(fraction * shards)`` shards and at
    least one each (when their fraction is > 0); with fewer, everything is train (warned).
    """
    count = config.num_shards
    names = [shard_name(i) for i in range(count)]
    wanted = (config.val_fraction > 0, config.test_fraction > 0)
    if count < 3:
        if any(wanted):
            warnings.warn(f"only {count} shard(s): all go to train and val/test are empty; "
                          "use a smaller shard_size for held-out splits", stacklevel=3)
        return {"train": names, "val": [], "test": []}
    n_val, n_test = (max(1, round(f * count)) if f > 0 else 0
                     for f in (config.val_fraction, config.test_fraction))
    while n_val + n_test > count - 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    order = np.random.default_rng(config.seed).permutation(count)
    held = {"val": order[:n_val], "test": order[n_val:n_val + n_test]}
    train = order[n_val + n_test:]
    return {"train": [names[i] for i in sorted(train)],
            **{k: [names[i] for i in sorted(v)] for k, v in held.items()}}


class _Moments:
    """Streaming count/mean/sum of squared deviations (Chan et al.'s pairwise update)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, x: np.ndarray) -> None:
        """Add ``x`` ``(n, ...)``: statistics per trailing position, over axis 0."""
        n = x.shape[0]
        if n == 0:
            return
        mean = x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    @property
    def std(self):
        return np.sqrt(self.m2 / self.count)


def compute_stats(root: Path, config: DatasetConfig, shards: list[str],
                  param_names: list[str]) -> dict[str, Any]:
    """Normalisation statistics over ``shards`` in float64, one block at a time.

    Returns:
        ``params``: ``names``, ``mean``/``std``/``min``/``max`` per column; ``mel``: ``mean``/
        ``std`` per band (over items and frames) and ``global_mean``/``global_std``;
        ``audio``: ``mean``/``std``/``peak`` over all samples. Standard deviations are
        population ones (``ddof=0``).
    """
    h5py = require_h5py()
    params, mel, audio = _Moments(), _Moments(), _Moments()
    lo = np.full(len(param_names), np.inf)
    hi = np.full(len(param_names), -np.inf)
    peak = 0.0
    for name in shards:
        with h5py.File(root / name, "r") as f:
            for field in config.stored_fields:
                data = f[field]
                step = max(1, _STATS_BLOCK_BYTES // (8 * int(np.prod(data.shape[1:]))))
                for start in range(0, data.shape[0], step):
                    x = data[start:start + step].astype(np.float64)
                    if field == "params":
                        params.update(x)
                        lo, hi = np.minimum(lo, x.min(0)), np.maximum(hi, x.max(0))
                    elif field == "mel":
                        # (n, bands, frames) -> (n * frames, bands): per-band statistics.
                        mel.update(x.transpose(0, 2, 1).reshape(-1, x.shape[1]))
                    else:
                        audio.update(x.reshape(-1, 1))
                        peak = max(peak, float(np.abs(x).max()))
    stats: dict[str, Any] = {
        "split": "train", "num_items": params.count, "shards": list(shards),
        "params": {"names": list(param_names), "mean": params.mean.tolist(),
                   "std": params.std.tolist(), "min": lo.tolist(), "max": hi.tolist()},
    }
    if config.store_mel:
        # Every band has the same count: pool the band moments for the global ones.
        band_mean, band_m2, per_band = mel.mean, mel.m2, mel.count
        global_mean = float(band_mean.mean())
        global_m2 = float(band_m2.sum() + per_band * ((band_mean - global_mean) ** 2).sum())
        stats["mel"] = {"mean": band_mean.tolist(), "std": mel.std.tolist(),
                        "global_mean": global_mean,
                        "global_std": float(np.sqrt(global_m2 / (per_band * band_mean.size)))}
    if config.store_audio:
        stats["audio"] = {"mean": float(audio.mean[0]), "std": float(audio.std[0]),
                          "peak": peak}
    return stats
