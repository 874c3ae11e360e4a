"""Declared parameter tables: the one place where normalised values become real units.

Every backend describes its parameters as data, a tuple of frozen :class:`ParamSpec`. The public
API of every synth takes normalised values in ``[0, 1]``; :class:`ParamTable` converts between
those and real units (``cutoff_hz``, ``attack_s``, ``gain_db``...), validates batches and draws
random presets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch
from torch import Tensor

SCALES = ("linear", "log", "curve")
# Normalised values may overshoot [0, 1] by float rounding (e.g. after a clamp in float64).
RANGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ParamSpec:
    """One synthesizer parameter.

    Args:
        name: Identifier with a unit suffix (``cutoff_hz``, ``attack_s``, ``detune_cents``,
            ``mix`` for unitless amounts).
        min: Real value at normalised 0.
        max: Real value at normalised 1.
        default: Real value of the init preset.
        scale: ``"linear"``, ``"log"`` (geometric between ``min`` and ``max``, both > 0) or
            ``"curve"`` (torchsynth's power curve: ``real = min + (max - min) * u ** (1 / curve)``,
            mirrored around the centre when ``symmetric``).
        curve: Exponent for ``scale="curve"``.
        symmetric: Mirror the curve around the middle of the range (``scale="curve"`` only).
        description: One line for people.
        choices: Discrete real values in increasing order; the normalised range is split into
            ``len(choices)`` equal steps and rounded to the nearest.
    """

    name: str
    min: float
    max: float
    default: float
    scale: str = "linear"
    curve: float = 1.0
    symmetric: bool = False
    description: str = ""
    choices: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"{self.name}: scale must be one of {SCALES}, got {self.scale!r}")
        if not self.max > self.min:
            raise ValueError(f"{self.name}: max ({self.max}) must exceed min ({self.min})")
        if self.scale == "log" and self.min <= 0:
            raise ValueError(f"{self.name}: a log scale needs min > 0, got {self.min}")
        if self.scale == "curve" and self.curve <= 0:
            raise ValueError(f"{self.name}: curve must be > 0, got {self.curve}")
        if self.choices is not None:
            if len(self.choices) < 2 or list(self.choices) != sorted(self.choices):
                raise ValueError(f"{self.name}: choices must be >= 2 increasing values")
            if self.scale != "linear":
                raise ValueError(f"{self.name}: discrete parameters use scale='linear'")
        if not self.min <= self.default <= self.max:
            raise ValueError(
                f"{self.name}: default {self.default} outside [{self.min}, {self.max}]"
            )

    @property
    def unit(self) -> str:
        """The unit suffix of the name (``"hz"`` for ``cutoff_hz``), or ``""``."""
        head, _, tail = self.name.rpartition("_")
        return tail if head and tail in _UNITS else ""

    @property
    def discrete(self) -> bool:
        return self.choices is not None

    def to_real(self, u: Tensor) -> Tensor:
        """Normalised ``[0, 1]`` -> real units (same shape)."""
        if self.choices is not None:
            idx = torch.round(u * (len(self.choices) - 1)).long()
            return torch.tensor(self.choices, dtype=u.dtype, device=u.device)[idx]
        lo, hi = self.min, self.max
        if self.scale == "log":
            return lo * torch.exp(u * math.log(hi / lo))
        if self.scale == "curve":
            if self.symmetric:
                d = 2.0 * u - 1.0
                d = torch.sign(d) * d.abs().pow(1.0 / self.curve)
                return lo + (hi - lo) * 0.5 * (d + 1.0)
            return lo + (hi - lo) * u.clamp_min(0).pow(1.0 / self.curve)
        return lo + (hi - lo) * u

    def to_normalized(self, x: Tensor) -> Tensor:
        """Real units -> normalised ``[0, 1]`` (same shape); discrete values snap to a choice."""
        if self.choices is not None:
            grid = torch.tensor(self.choices, dtype=x.dtype, device=x.device)
            idx = (x.unsqueeze(-1) - grid).abs().argmin(-1)
            return idx.to(x.dtype) / (len(self.choices) - 1)
        lo, hi = self.min, self.max
        if self.scale == "log":
            return torch.log(x / lo) / math.log(hi / lo)
        u = (x - lo) / (hi - lo)
        if self.scale == "curve":
            if self.symmetric:
                d = 2.0 * u - 1.0
                return 0.5 * (1.0 + torch.sign(d) * d.abs().pow(self.curve))
            return u.clamp_min(0).pow(self.curve)
        return u

    @property
    def default_normalized(self) -> float:
        return float(self.to_normalized(torch.tensor(self.default, dtype=torch.float64)))


_UNITS = {"hz", "s", "ms", "db", "cents", "semitones", "octaves", "ratio", "deg", "rad"}


class ParamTable(Sequence[ParamSpec]):
    """An ordered, immutable collection of :class:`ParamSpec` with batched conversions.

    Columns of a ``(B, P)`` parameter batch follow the table's order.
    """

    def __init__(self, specs: Iterable[ParamSpec]):
        self._specs = tuple(specs)
        names = [s.name for s in self._specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate parameter names: {dupes}")
        self._index = {n: i for i, n in enumerate(names)}
        self._cache: dict[str, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return len(self._specs)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self._specs[self.index(key)]
        return self._specs[key]

    def __iter__(self) -> Iterator[ParamSpec]:
        return iter(self._specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamTable) and self._specs == other._specs

    def __hash__(self) -> int:
        return hash(self._specs)

    def __repr__(self) -> str:
        return f"ParamTable({len(self)} params: {', '.join(self.names)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._specs)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(
                f"unknown parameter {name!r}; known: {', '.join(self.names)}"
            ) from None

    def subset(self, names: Iterable[str]) -> ParamTable:
        """The table restricted to ``names``, in this table's order."""
        wanted = set(names)
        for n in wanted:
            self.index(n)
        return ParamTable(s for s in self._specs if s.name in wanted)

    def to_real(self, u: Tensor) -> Tensor:
        """``(B, P)`` normalised -> ``(B, P)`` real units, in ``u``'s dtype.

        Computed in float64: CPU kernels evaluate ``exp``/``pow`` with vector code for most of
        a buffer and scalar code for its tail, so in float32 an item's value could depend on
        its position in the batch; in float64 both agree once rounded. All columns are
        converted at once (a handful of ops, whatever ``P``): the per-spec
        :meth:`ParamSpec.to_real` defines the maths, this is its vectorised form.
        """
        self._check_width(u)
        c = self._constants(u.device)
        w = u.double()
        linear = c["lo"] + c["span"] * w
        log = c["lo_pos"] * torch.exp(w * c["log_ratio"])
        d = 2.0 * w - 1.0
        symmetric = c["lo"] + c["span"] * 0.5 * (
            torch.sign(d) * d.abs().pow(c["inv_curve"]) + 1.0)
        curve = c["lo"] + c["span"] * w.clamp_min(0).pow(c["inv_curve"])
        out = torch.where(c["is_log"], log, linear)
        out = torch.where(c["is_curve"], torch.where(c["symmetric"], symmetric, curve), out)
        if c["choice_cols"].numel():
            cols = c["choice_cols"]
            idx = torch.round(w[:, cols] * c["choice_steps"]).long()
            out[:, cols] = torch.gather(c["choice_values"].expand(w.shape[0], -1, -1), 2,
                                        idx.unsqueeze(-1)).squeeze(-1)
        return out.to(u.dtype)

    def to_normalized(self, x: Tensor) -> Tensor:
        """``(B, P)`` real units -> ``(B, P)`` normalised, in ``x``'s dtype."""
        self._check_width(x)
        w = x.double()
        cols = [s.to_normalized(w[..., j]) for j, s in enumerate(self._specs)]
        return torch.stack(cols, -1).clamp(0.0, 1.0).to(x.dtype)

    def _constants(self, device: torch.device) -> dict[str, Tensor]:
        """Per-column constants of :meth:`to_real` as float64 tensors, cached per device.

        Built outside inference mode even when first needed inside it: an inference tensor in
        the cache would break every later render that tracks gradients.
        """
        key = str(device)
        if key not in self._cache:
            specs = self._specs

            def col(values, dtype=torch.float64) -> Tensor:
                with torch.inference_mode(False):
                    return torch.tensor(values, dtype=dtype, device=device)

            choice_cols = [j for j, s in enumerate(specs) if s.choices is not None]
            width = max([len(specs[j].choices) for j in choice_cols], default=1)
            values = [list(specs[j].choices) + [specs[j].choices[-1]] *
                      (width - len(specs[j].choices)) for j in choice_cols]
            self._cache[key] = {
                "lo": col([s.min for s in specs]),
                "span": col([s.max - s.min for s in specs]),
                "lo_pos": col([s.min if s.scale == "log" else 1.0 for s in specs]),
                "log_ratio": col([math.log(s.max / s.min) if s.scale == "log" else 0.0
                                  for s in specs]),
                "inv_curve": col([1.0 / s.curve if s.scale == "curve" else 1.0 for s in specs]),
                "is_log": col([s.scale == "log" for s in specs], torch.bool),
                "is_curve": col([s.scale == "curve" for s in specs], torch.bool),
                "symmetric": col([s.symmetric for s in specs], torch.bool),
                "choice_cols": col(choice_cols, torch.long),
                "choice_steps": col([len(specs[j].choices) - 1 for j in choice_cols]),
                "choice_values": col(values).reshape(1, len(choice_cols), width),
            }
        return self._cache[key]

    def quantize(self, u: Tensor) -> Tensor:
        """Snap the columns of discrete parameters to their choices (normalised in and out)."""
        self._check_width(u)
        out = u.clone()
        for j, s in enumerate(self._specs):
            if s.choices is not None:
                steps = len(s.choices) - 1
                out[..., j] = torch.round(u[..., j] * steps) / steps
        return out

    def defaults(self, batch_size: int = 1, device: torch.device | str = "cpu") -> Tensor:
        """The init preset, normalised, repeated: ``(batch_size, P)``."""
        row = torch.tensor([s.default_normalized for s in self._specs], dtype=torch.float32)
        return row.to(device).expand(batch_size, -1).clone()

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Uniform random presets in normalised space, discrete columns snapped: ``(B, P)``.

        Draws on the generator's device (CPU by default) so a seed gives the same presets on
        every device, then moves the result.
        """
        u = torch.rand(batch_size, len(self), generator=generator)
        return self.quantize(u).to(device)

    def validate(self, u: Tensor) -> Tensor:
        """Check a normalised batch and return it as float32 ``(B, P)``.

        A valid batch costs one reduction and, on a GPU, one synchronisation (the branch on its
        result); the per-parameter search for the error message runs only when it fails.

        Raises:
            TypeError: ``u`` is not a tensor.
            ValueError: wrong shape, NaN/inf, or values outside ``[0, 1]``; the message names
                the first offending parameter.
        """
        if not isinstance(u, Tensor):
            raise TypeError(f"parameters must be a torch.Tensor of shape (B, {len(self)}), "
                            f"got {type(u).__name__}")
        if u.ndim != 2 or u.shape[1] != len(self):
            raise ValueError(
                f"parameters must have shape (B, {len(self)}) (normalised, one row per sound), "
                f"got {tuple(u.shape)}"
            )
        if u.shape[0] == 0:
            raise ValueError("parameters batch is empty (B=0)")
        # NaN and inf fail both comparisons, so this one check covers every bad value.
        if not bool(((u >= -RANGE_TOLERANCE) & (u <= 1.0 + RANGE_TOLERANCE)).all()):
            self._raise_invalid(u)
        return u.to(torch.float32).clamp(0.0, 1.0)

    def _raise_invalid(self, u: Tensor) -> NoReturn:
        """Raise the error for a batch that failed :meth:`validate`, naming the parameter."""
        bad = ~torch.isfinite(u)
        if bad.any():
            j = int(bad.any(0).nonzero()[0])
            raise ValueError(f"parameter {self.names[j]!r} has NaN or inf values")
        j = int(((u < -RANGE_TOLERANCE) | (u > 1.0 + RANGE_TOLERANCE)).any(0).nonzero()[0])
        col = u[:, j]
        raise ValueError(
            f"parameter {self.names[j]!r} must be normalised to [0, 1], got values in "
            f"[{float(col.min()):.4g}, {float(col.max()):.4g}]; use "
            f"table.to_normalized() to convert real units"
        )

    def _check_width(self, t: Tensor) -> None:
        if t.shape[-1] != len(self):
            raise ValueError(f"expected last dimension {len(self)}, got {tuple(t.shape)}")
