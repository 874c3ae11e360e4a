"""What a dataset is made of: :class:`DatasetConfig`, the metadata derived from it, file names.

A config is plain data (JSON in ``dataset.json``); the synth, its parameter table and the
mel front end are rebuilt from it, in the writer's worker processes and in readers alike.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from synthmatch.rewards.features import LogMelSpectrogram
from synthmatch.synths import BACKENDS, FrozenSynth, ProbeNote, Synth, make_synth
from synthmatch.synths.params import ParamTable

FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"
SPLITS_JSON = "splits.json"
STATS_JSON = "stats.json"
SPLIT_NAMES = ("train", "val", "test")
# The env observation's log-mel (PerceptualDistance's defaults), so a model trained on the
# dataset reads spectrograms exactly like the env's.
DEFAULT_MEL: dict[str, Any] = {"n_fft": 1024, "hop_length": 256, "n_mels": 64, "f_min": 20.0,
                               "f_max": None}
# Constructor arguments the config sets itself; synth_kwargs must not repeat them.
_RESERVED_SYNTH_KWARGS = ("probe", "device")


def require_h5py():
    """Import h5py, or raise an ImportError that says how to install it."""
    try:
        import h5py
    except ImportError as exc:
        raise ImportError('synthmatch.data needs h5py: pip install "synthmatch[data]"') from exc
    return h5py


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that decides a dataset's content; two equal configs give identical files.

    Nested settings are stored as canonical dicts (defaults filled in), so a config read back
    from ``dataset.json`` compares equal to the one that wrote it.

    Args:
        synth: Backend registry name (a key of :data:`synthmatch.synths.BACKENDS`).
        n: Number of presets (rows) in the whole dataset.
        synth_kwargs: Extra constructor arguments of the backend (``plugin_path``...); JSON.
        free_params: Names of the parameters that vary (the synth is wrapped in
            :class:`FrozenSynth` and only these columns are stored); ``None``: all of them.
        shard_size: Rows per HDF5 shard; the last shard holds the remainder.
        seed: Root seed; shard ``i`` draws from its own generator seeded from ``(seed, i)``.
        store_mel: Store the ``(n_mels, frames)`` log-mel in dB as float16.
        store_audio: Store the ``(T,)`` float32 audio.
        mel: :class:`LogMelSpectrogram` keyword arguments (``n_fft``, ``hop_length``,
            ``n_mels``, ``f_min``, ``f_max``); missing ones take :data:`DEFAULT_MEL`.
        val_fraction: Share of shards held out for validation.
        test_fraction: Share of shards held out for testing.
        probe: The :class:`ProbeNote` every render plays, as a dict (or a ``ProbeNote``).
        render_batch: Rows rendered per synth call.
    """

    synth: str
    n: int
    synth_kwargs: dict[str, Any] = field(default_factory=dict)
    free_params: tuple[str, ...] | None = None
    shard_size: int = 4096
    seed: int = 0
    store_mel: bool = True
    store_audio: bool = False
    mel: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MEL))
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    probe: dict[str, Any] = field(default_factory=lambda: ProbeNote().to_dict())
    render_batch: int = 256

    def __post_init__(self) -> None:
        if self.synth not in BACKENDS:
            raise ValueError(f"unknown synth {self.synth!r}; available: {', '.join(BACKENDS)}")
        for name, low in (("n", 1), ("shard_size", 1), ("render_batch", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            self._set(name, int(value))
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1 (train needs shards), "
                             f"got {self.val_fraction} + {self.test_fraction}")
        if not (self.store_mel or self.store_audio):
            raise ValueError("store_mel and store_audio are both False: store at least one")
        self._set("synth_kwargs", _check_synth_kwargs(self.synth_kwargs))
        self._set("free_params", _check_free_params(self.free_params))
        self._set("mel", _canonical_mel(self.mel))
        self._set("probe", _canonical_probe(self.probe))

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    # -- serialisation ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        out = asdict(self)
        out["free_params"] = None if self.free_params is None else list(self.free_params)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetConfig:
        """The config written by :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown dataset config keys {unknown}; known: {sorted(known)}")
        missing = sorted({"synth", "n"} - set(data))
        if missing:
            raise ValueError(f"dataset config is missing {missing}")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def differences(self, other: DatasetConfig) -> list[str]:
        """``"field: mine -> other's"`` for every differing field (nested dicts by key)."""
        return _dict_differences(self.to_dict(), other.to_dict())

    # -- what the config builds -----------------------------------------------------------

    @property
    def probe_note(self) -> ProbeNote:
        return ProbeNote(**self.probe)

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_rows(self, index: int) -> int:
        """Rows of shard ``index``: ``shard_size``, except the remainder in the last one."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard {index} out of range 0..{self.num_shards - 1}")
        return min(self.shard_size, self.n - index * self.shard_size)

    @property
    def stored_fields(self) -> tuple[str, ...]:
        """The HDF5 datasets of every shard."""
        return ("params",) + ("mel",) * self.store_mel + ("audio",) * self.store_audio

    def make_synth(self, device: str = "cpu") -> Synth:
        """The backend (wrapped in :class:`FrozenSynth` when ``free_params`` is set)."""
        synth = make_synth(self.synth, probe=self.probe_note, device=device, **self.synth_kwargs)
        if self.free_params is not None:
            synth = FrozenSynth(synth, self.free_params)
        return synth

    def log_mel(self) -> LogMelSpectrogram:
        return LogMelSpectrogram(self.probe_note.sample_rate, **self.mel)

    def metadata(self, synth: Synth | None = None) -> dict[str, Any]:
        """The content of ``dataset.json``: this config plus what it implies.

        Args:
            synth: ``self.make_synth()`` if already built (building can be slow).
        """
        import synthmatch

        synth = self.make_synth() if synth is None else synth
        probe = self.probe_note
        mel_shape = None
        if self.store_mel:
            front = self.log_mel()
            mel_shape = [front.n_mels, front.num_frames(probe.num_samples)]
        return {
            "format_version": FORMAT_VERSION,
            "synthmatch_version": synthmatch.__version__,
            "config": self.to_dict(),
            "num_shards": self.num_shards,
            "num_items": self.n,
            "fields": list(self.stored_fields),
            "param_names": list(synth.params.names),
            "param_table": describe_params(synth.params),
            "sample_rate": probe.sample_rate,
            "num_samples": probe.num_samples,
            "mel_shape": mel_shape,
        }


def describe_params(table: ParamTable) -> list[dict[str, Any]]:
    """Every :class:`ParamSpec` as a JSON-ready dict (plus its unit)."""
    out = []
    for spec in table:
        row = asdict(spec)
        row["choices"] = None if spec.choices is None else list(spec.choices)
        row["unit"] = spec.unit
        out.append(row)
    return out


def metadata_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Differences between two ``dataset.json`` contents that would mix incompatible data.

    The package version is left out: a newer synthmatch with the same parameter table and
    audio settings writes the same kind of rows.
    """
    keys = ("format_version", "config", "param_names", "param_table", "sample_rate",
            "num_samples", "mel_shape")
    return _dict_differences({k: recorded.get(k) for k in keys},
                             {k: current.get(k) for k in keys})


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def shard_index(name: str) -> int:
    """Inverse of :func:`shard_name`; ``ValueError`` for other names."""
    stem = name.removeprefix("shard-").removesuffix(".h5")
    if not (name.startswith("shard-") and name.endswith(".h5") and stem.isdigit()):
        raise ValueError(f"{name!r} is not a shard file name (shard-NNNNN.h5)")
    return int(stem)


def shard_seed(seed: int, index: int) -> int:
    """The torch seed of shard ``index``: independent streams from ``SeedSequence``.

    ``SeedSequence(seed, spawn_key=(index,))`` is ``SeedSequence(seed).spawn(...)[index]``,
    numpy's recipe for independent parallel streams. Kept below 2**63 to fit an HDF5 int64.
    """
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def _check_synth_kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"synth_kwargs must be a dict, got {type(value).__name__}")
    value = dict(value)
    reserved = sorted(set(value) & set(_RESERVED_SYNTH_KWARGS))
    if reserved:
        raise ValueError(f"synth_kwargs must not set {reserved}: the dataset config sets the "
                         "probe note itself and renders on CPU")
    try:
        # Round-trip so the stored and the in-memory config are the same (tuples -> lists).
        return json.loads(json.dumps(value))
    except TypeError as exc:
        raise ValueError(f"synth_kwargs must be JSON-serialisable: {exc}") from None


def _check_free_params(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ValueError(f"free_params must be a list of names, got the string {value!r}")
    names = tuple(value)
    if not names:
        raise ValueError("free_params must name at least one parameter (None = all)")
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"free_params must be names (strings), got {list(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"free_params lists {dupes} more than once")
    return names


def _canonical_mel(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"mel must be a dict of LogMelSpectrogram arguments, got {value!r}")
    unknown = sorted(set(value) - set(DEFAULT_MEL))
    if unknown:
        raise ValueError(f"unknown mel settings {unknown}; allowed: {list(DEFAULT_MEL)}")
    mel = {**DEFAULT_MEL, **value}
    for key in ("n_fft", "hop_length", "n_mels"):
        mel[key] = int(mel[key])
    mel["f_min"] = float(mel["f_min"])
    mel["f_max"] = None if mel["f_max"] is None else float(mel["f_max"])
    return mel


def _canonical_probe(value: Any) -> dict[str, Any]:
    if isinstance(value, ProbeNote):
        return value.to_dict()
    if not isinstance(value, Mapping):
        raise ValueError(f"probe must be a ProbeNote or a dict, got {value!r}")
    allowed = list(ProbeNote().to_dict())
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"unknown probe settings {unknown}; allowed: {allowed}")
    return ProbeNote(**value).to_dict()


def _dict_differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping) and key != "param_table":
            out += _dict_differences(x, y, f"{prefix}{key}.")
        elif _jsonish(x) != _jsonish(y):
            shown = "(differs)" if key == "param_table" else f"{x!r} -> {y!r}"
            out.append(f"{prefix}{key}: {shown}")
    return out


def _jsonish(value: Any) -> Any:
    # Tuples and lists compare equal, as they do once stored in JSON.
    return json.loads(json.dumps(value))
