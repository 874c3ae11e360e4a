"""Any VST3 instrument as a synth backend, through pedalboard."""

from __future__ import annotations

import contextlib
import fnmatch
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from synthmatch.synths.base import ProbeNote, Synth
from synthmatch.synths.params import ParamSpec, ParamTable
from synthmatch.synths.presets import load_preset, save_preset
from synthmatch.synths.vst3_worker import (
    MIDI_CC_NAME,
    ParameterWriteError,
    Voice,
    VST3WorkerError,
    WorkerPool,
    load_plugin,
    output_channels,
    set_plugin_state,
)

# Parameters with more steps than this are treated as continuous (DPF reports 2**31 - 1).
MAX_CHOICES = 128
# Plugin unit labels -> name suffixes (pedalboard style: ``cutoff_hz``, ``release_s``).
UNIT_SUFFIXES = {"%": "pct", "hz": "hz", "khz": "khz", "db": "db", "ms": "ms", "s": "s",
                 "sec": "s", "st": "semitones", "semi": "semitones", "semitones": "semitones",
                 "ct": "cents", "cents": "cents", "deg": "deg", "°": "deg", "x": "ratio"}

__all__ = ["ParameterWriteError", "VST3Synth", "VST3WorkerError", "parameter_specs"]


def _snake(text: str) -> str:
    text = text.strip().lower().replace("#", " sharp ").replace("%", " pct ")
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


def _number(text: str) -> float | None:
    match = re.match(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)", text or "")
    value = float(match.group(1)) if match else None
    return value if value is not None and math.isfinite(value) else None


def _spec(param, name: str) -> ParamSpec:
    """The :class:`ParamSpec` of one native pedalboard parameter (linear in ``raw_value``)."""
    text = param.get_text_for_raw_value
    default = float(param.default_raw_value)
    steps = int(param.num_steps)
    if 2 <= steps <= MAX_CHOICES:
        labels = [text(k / (steps - 1)) for k in range(steps)]
        numbers = [_number(t) for t in labels]
        if None not in numbers and all(b > a for a, b in zip(numbers, numbers[1:], strict=False)):
            choices = tuple(numbers)
        else:
            choices = tuple(float(k) for k in range(steps))
        listing = ", ".join(f"{c:g}={t.strip()}" for c, t in zip(choices, labels, strict=True))
        return ParamSpec(name, choices[0], choices[-1],
                         choices[round(default * (steps - 1))], choices=choices,
                         description=f"{param.name!r} (discrete: {listing})")
    lo, hi = _number(text(0.0)), _number(text(1.0))
    if lo is None or hi is None or not hi > lo:
        return ParamSpec(name, 0.0, 1.0, default,
                         description=f"{param.name!r} (normalised: the plugin reports no range)")
    return ParamSpec(name, lo, hi, min(max(lo + (hi - lo) * default, lo), hi),
                     description=f"{param.name!r} in {param.label or 'plugin units'}, "
                                 f"assumed linear in the plugin's normalised value")


def parameter_specs(plugin, patterns: Sequence[str] | None = None,
                    include_midi_cc: bool = False) -> tuple[ParamTable, list[int]]:
    """Build the table of a loaded plugin's parameters.

    Args:
        plugin: A loaded pedalboard VST3 plugin.
        patterns: Names or fnmatch patterns (``"cutoff*"``) of the table names to keep, in
            the plugin's order; ``None`` keeps all.
        include_midi_cc: Keep the ``midi_ch_N_cc_M`` pseudo-parameters.

    Returns:
        The table and, per column, the plugin's native parameter index.

    Raises:
        ValueError: a pattern matches no parameter (the message lists the names).
    """
    specs, seen = [], set()
    for param in plugin._parameters:
        if MIDI_CC_NAME.match(param.name) and not include_midi_cc:
            continue
        base = _snake(param.name) or f"param_{param.index}"
        if base[0].isdigit():
            base = f"p_{base}"
        suffix = UNIT_SUFFIXES.get((param.label or "").strip().lower(), _snake(param.label or ""))
        if suffix and not base.endswith(f"_{suffix}"):
            base = f"{base}_{suffix}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        specs.append((name, param))
    if patterns is not None:
        names = [n for n, _ in specs]
        if isinstance(patterns, str):
            patterns = [patterns]
        unmatched = [q for q in patterns if not any(fnmatch.fnmatchcase(n, q) for n in names)]
        if unmatched:
            raise ValueError(f"parameter pattern(s) {unmatched} match nothing; available: "
                             f"{', '.join(names)}")
        specs = [(n, p) for n, p in specs if any(fnmatch.fnmatchcase(n, q) for q in patterns)]
    if not specs:
        raise ValueError(f"plugin {plugin.name!r} has no parameters to control")
    return ParamTable(_spec(p, n) for n, p in specs), [int(p.index) for _, p in specs]


class VST3Synth(Synth):
    """A VST3 instrument playing the probe note, parameters set through pedalboard.

    Each render writes one row of normalised parameters (``raw_value``, verified by reading
    back), renders a short silent block so the change lands, then renders the probe note
    (note-on at 0, note-off at ``note_duration_s``) with ``reset=True``. The same parameters
    therefore give bit-identical audio on every render and in every worker process. Stereo
    plugins are downmixed to mono (channel mean).

    The table's real units come from the plugin's own text for normalised 0 and 1 (``%``,
    ``s``, ...), assumed linear in between: the normalised value is what the plugin receives,
    the real value is for people. Discrete parameters (a few steps) become ``choices``.
    Parameters not in the table keep the plugin's initial (or loaded-state) values.

    ``batched = False``: the items of a batch render one by one, split across ``workers``
    processes when ``workers > 1`` (each with its own plugin instance).

    Args:
        plugin_path: Path of the ``.vst3`` bundle (required).
        parameters: Names or fnmatch patterns of the free parameters (table names, e.g.
            ``["cutoff_pct", "env_*"]``); ``None``: every real parameter.
        probe: The note to play.
        device: Torch device of the returned audio (rendering is on CPU).
        workers: Worker processes for batches; 1 renders in this process.
        timeout_s: A worker that does not answer a render within this time is killed,
            restarted, and the render raises :class:`VST3WorkerError`.
        include_midi_cc: Also expose the ``midi_ch_N_cc_M`` pseudo-parameters.

    Raises:
        TypeError: no ``plugin_path``.
        FileNotFoundError: ``plugin_path`` does not exist.
        ValueError: not a VST3 plugin, an effect rather than an instrument, or bad arguments.

    Example:
        >>> synth = VST3Synth("~/.cache/synthmatch/plugins/Nekobi.vst3", ["cutoff_pct"])
        >>> synth.render(synth.params.defaults(2)).shape
        torch.Size([2, 16000])
    """

    name = "vst3"
    differentiable = False
    batched = False

    def __init__(self, plugin_path: str | Path | None = None,
                 parameters: Sequence[str] | None = None, *, probe: ProbeNote | None = None,
                 device: torch.device | str = "cpu", workers: int = 1, timeout_s: float = 30.0,
                 include_midi_cc: bool = False):
        if plugin_path is None:
            raise TypeError("VST3Synth needs plugin_path=...; SynthMatch-VST-v0 takes it "
                            "through synth_kwargs")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        probe = probe if probe is not None else ProbeNote()
        self.plugin_path = Path(plugin_path).expanduser().resolve()
        self.plugin = load_plugin(self.plugin_path)
        if not self.plugin.is_instrument:
            raise ValueError(f"{self.plugin_path} is an effect ({self.plugin.name!r}), not an "
                             "instrument: VST3Synth plays MIDI notes, so it needs an instrument")
        table, self._indices = parameter_specs(self.plugin, parameters, include_midi_cc)
        super().__init__(table, probe, device)
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.num_channels = output_channels(self.plugin, probe.sample_rate)
        self._voice = Voice(self.plugin, self._indices, table.names, probe.to_dict(),
                            self.num_channels)
        self._state: bytes | None = None  # plugin state loaded by the user, sent to workers
        self._pool: WorkerPool | None = None

    def _rows(self, u: Tensor) -> np.ndarray:
        return self.params.quantize(u.detach().cpu().double()).numpy()

    def _render(self, params: Tensor) -> Tensor:
        rows = self._rows(params)
        if self.workers == 1 or len(rows) == 1:
            audio = self._voice.render(rows)
        else:
            if self._pool is None:
                self._pool = WorkerPool(self.workers, (
                    str(self.plugin_path), self._indices, list(self.params.names),
                    self.probe.to_dict(), self.num_channels, self._state))
            audio = self._pool.render(rows, self.timeout_s)
        return torch.from_numpy(audio).to(self.device)

    @property
    def worker_pids(self) -> list[int | None]:
        """Process ids of the workers (empty before the first parallel render)."""
        return self._pool.pids if self._pool is not None else []

    # -- plugin state (the plugin's own preset format, for DAWs) -------------------------

    def save_plugin_state(self, path: str | Path, params: Tensor) -> Path:
        """Write the plugin's state with ``params`` ``(P,)`` (normalised) applied.

        The file holds pedalboard's ``preset_data``: the VST3 ``.vstpreset`` format, which
        DAWs open. Parameters outside the table are saved as they are now.
        """
        row = self._rows(self.params.validate(params.reshape(1, -1).cpu().float()))[0]
        self._voice.set_row(row)
        self._voice.settle()  # the plugin's state holds a value once it has been processed
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.plugin.preset_data)
        return path

    def load_plugin_state(self, path: str | Path) -> Tensor:
        """Load a state written by :meth:`save_plugin_state` (or a DAW's ``.vstpreset``).

        Every parameter takes the file's value (those outside the table too, in this process
        and in the workers). Returns the table's parameters as the plugin reports them,
        normalised ``(P,)``. Some plugins report stale values after a state load (DPF's
        discrete parameters read 0): :meth:`load_preset_with_state` takes the table's values
        from the JSON instead.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"plugin state not found: {path}")
        data = path.read_bytes()
        try:
            set_plugin_state(self.plugin, data)
        except Exception as err:
            raise ValueError(f"{path} is not a preset of {self.plugin.name!r}: {err}") from None
        self._state = data
        self._close_pool()  # workers restart lazily with the new state
        row = [float(self.plugin._parameters[i].raw_value) for i in self._indices]
        u = self.params.quantize(torch.tensor([row], dtype=torch.float64)).clamp(0, 1)
        return u[0].float().to(self.device)

    def save_preset_with_state(self, path: str | Path, params: Tensor,
                               name: str = "") -> tuple[Path, Path]:
        """Write the JSON preset at ``path`` and the plugin state beside it (``.vstpreset``)."""
        json_path = save_preset(path, self, params, name)
        return json_path, self.save_plugin_state(json_path.with_suffix(".vstpreset"), params)

    def load_preset_with_state(self, path: str | Path) -> Tensor:
        """Read a preset written by :meth:`save_preset_with_state`: the state, then the JSON.

        Returns the JSON's normalised parameters ``(P,)``; the plugin state (parameters
        outside the table included) is loaded into the plugin.
        """
        path = Path(path)
        state = path.with_suffix(".vstpreset")
        if state.exists():
            self.load_plugin_state(state)
        return load_preset(path, self)

    # -- lifetime -----------------------------------------------------------------------

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def close(self) -> None:
        """Stop the worker processes (the synth stays usable; they restart on demand)."""
        self._close_pool()

    def __enter__(self) -> VST3Synth:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            with contextlib.suppress(Exception):  # at interpreter shutdown nobody can be told
                pool.close()

    def __repr__(self) -> str:
        return (f"VST3Synth({self.plugin.name!r}, {self.num_params} params, "
                f"{self.probe.sample_rate} Hz, workers={self.workers})")
