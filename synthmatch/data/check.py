"""Verifying a dataset directory: every shard opened and compared with ``dataset.json``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthmatch.data.config import (
    SPLIT_NAMES,
    SPLITS_JSON,
    STATS_JSON,
    DatasetConfig,
    require_h5py,
    shard_index,
    shard_name,
    shard_seed,
)
from synthmatch.data.dataset import FIELD_DTYPES, DatasetError, read_json, read_metadata

TMP_GLOB = ".shard-*.h5.tmp.*"
# Rows per read when scanning values: bounded memory whatever the shard size.
_READ_BYTES = 1 << 24


@dataclass
class ShardInfo:
    """What :func:`inspect_shard` found in one shard file."""

    name: str
    rows: int = 0
    fields: tuple[str, ...] = ()
    shard_seed: int | None = None
    digest: str = ""
    problems: list[str] = field(default_factory=list)


def inspect_shard(path: Path, config: DatasetConfig, metadata: dict[str, Any], *,
                  deep: bool = True) -> ShardInfo:
    """Check one final shard file against the dataset's config and metadata.

    Args:
        path: ``shard-NNNNN.h5``.
        config: The dataset's config.
        metadata: ``dataset.json`` (for ``param_names``, ``num_samples``, ``mel_shape``).
        deep: Also read every value (params in ``[0, 1]`` and finite, mel/audio finite) and
            hash the params; otherwise only attributes, datasets and shapes.

    Returns:
        The findings; ``problems`` is empty for a good shard.
    """
    h5py = require_h5py()
    info = ShardInfo(path.name)
    index = shard_index(path.name)
    expected_rows = config.shard_rows(index)
    shapes = {"params": (len(metadata["param_names"]),),
              "mel": tuple(metadata["mel_shape"] or ()),
              "audio": (int(metadata["num_samples"]),)}
    try:
        with h5py.File(path, "r") as f:
            attrs = f.attrs
            info.fields = tuple(sorted(f.keys()))
            info.shard_seed = int(attrs["shard_seed"]) if "shard_seed" in attrs else None
            info.rows = int(f["params"].shape[0]) if "params" in f else 0
            if not bool(attrs.get("complete", False)):
                info.problems.append("not marked complete (written by an interrupted run)")
            expected_attrs = {"shard_index": index,
                              "shard_seed": shard_seed(config.seed, index),
                              "num_rows": expected_rows}
            for key, value in expected_attrs.items():
                if key not in attrs or int(attrs[key]) != value:
                    info.problems.append(f"attribute {key}={attrs.get(key)!r}, expected {value}")
            if "config" not in attrs or json.loads(attrs["config"]) != config.to_dict():
                info.problems.append("attribute config differs from dataset.json")
            if set(info.fields) != set(config.stored_fields):
                info.problems.append(f"datasets {list(info.fields)}, expected "
                                     f"{list(config.stored_fields)}")
            for name in config.stored_fields:
                if name not in f:
                    continue
                data = f[name]
                if data.dtype != FIELD_DTYPES[name]:
                    info.problems.append(f"{name} has dtype {data.dtype}, expected "
                                         f"{np.dtype(FIELD_DTYPES[name])}")
                if data.shape != (expected_rows, *shapes[name]):
                    info.problems.append(f"{name} has shape {data.shape}, expected "
                                         f"{(expected_rows, *shapes[name])}")
                elif deep:
                    _check_values(name, data, info)
    except OSError as exc:
        info.problems.append(f"cannot be opened as HDF5: {exc}")
    return info


def _check_values(name: str, data, info: ShardInfo) -> None:
    row_bytes = max(1, int(np.prod(data.shape[1:])) * data.dtype.itemsize)
    step = max(1, _READ_BYTES // row_bytes)
    digest = hashlib.sha1()
    for start in range(0, data.shape[0], step):
        block = data[start:start + step]
        if not np.isfinite(block).all():
            info.problems.append(f"{name} has NaN or inf values")
            return
        if name == "params":
            digest.update(np.ascontiguousarray(block).tobytes())
            if block.size and (block.min() < 0.0 or block.max() > 1.0):
                info.problems.append(f"params outside [0, 1]: [{block.min()}, {block.max()}]")
                return
    if name == "params":
        info.digest = digest.hexdigest()


@dataclass
class CheckReport:
    """The outcome of :func:`check_dataset`; ``str(report)`` is a printable summary."""

    root: Path
    problems: list[str] = field(default_factory=list)
    shards: list[ShardInfo] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)
    expected_items: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def split_of(self, name: str) -> str:
        owners = [s for s, names in self.splits.items() if name in names]
        return ",".join(owners) if owners else "-"

    def __str__(self) -> str:
        lines = [f"dataset {self.root}"]
        if self.shards:
            lines.append(f"  {'shard':<16} {'split':<6} {'rows':>7}  datasets")
            for info in self.shards:
                mark = "" if not info.problems else "  <- " + "; ".join(info.problems)
                lines.append(f"  {info.name:<16} {self.split_of(info.name):<6} "
                             f"{info.rows:>7}  {','.join(info.fields)}{mark}")
            rows = {s: sum(i.rows for i in self.shards if i.name in names)
                    for s, names in self.splits.items()}
            total = sum(i.rows for i in self.shards)
            per_split = ", ".join(
                f"{s} {r} ({len(self.splits[s])} shard{'' if len(self.splits[s]) == 1 else 's'})"
                for s, r in rows.items())
            lines.append(f"  total: {total} rows of {self.expected_items} in "
                         f"{len(self.shards)} shards" + (f"; {per_split}" if rows else ""))
        if self.ok:
            lines.append("OK")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def check_dataset(out_dir: str | Path) -> CheckReport:
    """Open every shard of a dataset directory and list everything that is wrong.

    Checks: each expected shard exists, opens, is complete, has the right rows, datasets,
    dtypes, shapes and attributes; params are finite and in ``[0, 1]``; mel and audio are
    finite; no two shards share a seed or identical params; no leftover temporary or
    unexpected shard files; ``splits.json`` covers every shard exactly once; ``stats.json``
    holds the stored features.
    """
    root = Path(out_dir)
    report = CheckReport(root)
    try:
        meta = read_metadata(root)
        config = DatasetConfig.from_dict(meta["config"])
    except (DatasetError, KeyError, TypeError, ValueError) as exc:
        report.problems.append(f"cannot read the dataset description: {exc}")
        return report
    report.expected_items = config.n
    expected = [shard_name(i) for i in range(config.num_shards)]
    for name in expected:
        path = root / name
        if not path.exists():
            report.problems.append(f"{name} is missing (re-run make_dataset to render it)")
            continue
        info = inspect_shard(path, config, meta)
        report.shards.append(info)
        report.problems += [f"{name}: {p}" for p in info.problems]
    _check_duplicates(report)
    for path in sorted(root.glob(TMP_GLOB)):
        report.problems.append(f"leftover temporary file {path.name} (an interrupted run; "
                               "re-running make_dataset removes it)")
    for path in sorted(root.glob("shard-*.h5")):
        if path.name not in expected:
            report.problems.append(f"unexpected shard file {path.name} (the dataset has "
                                   f"{config.num_shards} shards)")
    _check_splits(report, root, expected)
    _check_stats(report, root, config, meta)
    return report


def _check_duplicates(report: CheckReport) -> None:
    for attr, what in (("shard_seed", "shard seed"), ("digest", "params")):
        seen: dict[Any, str] = {}
        for info in report.shards:
            key = getattr(info, attr)
            if key in (None, ""):
                continue
            if key in seen:
                report.problems.append(f"{info.name} and {seen[key]} have the same {what}")
            seen.setdefault(key, info.name)


def _check_splits(report: CheckReport, root: Path, expected: list[str]) -> None:
    try:
        splits = read_json(root / SPLITS_JSON, "the train/val/test shard lists")
    except DatasetError as exc:
        report.problems.append(str(exc))
        return
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        report.problems.append(f"{SPLITS_JSON} must have exactly the keys {list(SPLIT_NAMES)}")
        return
    report.splits = splits
    listed = [n for names in splits.values() for n in names]
    for name in sorted(set(listed)):
        if listed.count(name) > 1:
            report.problems.append(f"{SPLITS_JSON} lists {name} {listed.count(name)} times")
    for name in sorted(set(expected) - set(listed)):
        report.problems.append(f"{SPLITS_JSON} does not list {name}")
    for name in sorted(set(listed) - set(expected)):
        report.problems.append(f"{SPLITS_JSON} lists {name}, which is not a shard of the "
                               "dataset")
    if not splits["train"]:
        report.problems.append(f"{SPLITS_JSON}: the train split is empty")


def _check_stats(report: CheckReport, root: Path, config: DatasetConfig,
                 meta: dict[str, Any]) -> None:
    try:
        stats = read_json(root / STATS_JSON, "the train statistics")
    except DatasetError as exc:
        report.problems.append(str(exc))
        return
    widths = {"params": len(meta["param_names"])}
    if config.store_mel:
        widths["mel"] = meta["mel_shape"][0]
    if config.store_audio:
        widths["audio"] = None
    for name, width in widths.items():
        entry = stats.get(name) if isinstance(stats, dict) else None
        if not isinstance(entry, dict) or "mean" not in entry or "std" not in entry:
            report.problems.append(f"{STATS_JSON} has no {name} mean/std")
        elif width is not None and len(entry["mean"]) != width:
            report.problems.append(f"{STATS_JSON}: {name} mean has {len(entry['mean'])} "
                                   f"values, expected {width}")
