"""Vital (the wavetable synth) through ``vita``: a curated, declared subset of its 772 controls.

The optional dependency is imported lazily; install it with ``pip install "synthmatch[vital]"``.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.synths.base import ProbeNote, Synth, midi_to_hz
from synthmatch.synths.params import ParamSpec, ParamTable

# Curated default: two oscillators morphing saw -> sine, one filter with its own envelope, the
# amp envelope, and an LFO scanning the wavetable. Osc 1 stays at the probe pitch (no transpose)
# so the pitch is not ambiguous; osc 2 moves relative to it.
CURATED_CONTROLS: tuple[str, ...] = (
    "osc_1_level", "osc_1_wave_frame", "osc_1_unison_voices", "osc_1_unison_detune",
    "osc_2_level", "osc_2_wave_frame", "osc_2_transpose", "osc_2_tune",
    "filter_1_cutoff", "filter_1_resonance", "filter_1_drive", "filter_1_blend",
    "env_1_attack", "env_1_decay", "env_1_sustain", "env_1_release",
    "env_2_attack", "env_2_decay", "env_2_sustain", "env_2_release",
    "modulation_1_amount", "lfo_1_frequency", "modulation_2_amount",
)
# Modulation slots of the base patch: (source, destination), in slot order.
MODULATIONS: tuple[tuple[str, str], ...] = (
    ("env_2", "filter_1_cutoff"),
    ("lfo_1", "osc_1_wave_frame"),
)
# Raw values the base patch sets on top of Vital's init preset. Random phase off makes renders
# repeatable; osc 2 is on but silent, the filter is on but fully open, the LFO runs in seconds.
BASE_PATCH: dict[str, float] = {
    "osc_1_random_phase": 0.0, "osc_2_random_phase": 0.0, "osc_3_random_phase": 0.0,
    "osc_2_on": 1.0, "osc_2_level": 0.0,
    "filter_1_on": 1.0, "filter_1_cutoff": 136.0,
    "lfo_1_sync": 0.0,
}
# Table names of the modulation amounts (the Vital names are accepted too).
ALIASES: dict[str, str] = {
    "modulation_1_amount": "env_2_to_filter_1_cutoff",
    "modulation_2_amount": "lfo_1_to_osc_1_wave_frame",
}
WAVETABLE_FRAMES = 256
NUM_ENVELOPES = 6
# Flush before each item (see VitalSynth): one note that kills the previous voice (Vital fades a
# killed voice over ~60 ms) and lets parameter smoothing settle, then short notes that cycle the
# voices Vital rotates through. Counts found by measurement on vita 0.1.0: after 16 notes items
# still differ by ~1e-5, after 32 by up to 0.2 (a voice pool of 33), after 33 by one ulp.
FLUSH_S = 0.05
FLUSH_NOTES = 34
FLUSH_NOTE_S = 0.02
_POWERS = {"Quadratic": 2.0, "Quartic": 4.0, "SquareRoot": 0.5}
_UNIT_SUFFIX = {"secs": "s", "dB": "db", "semitones": "semitones", "Hz": "hz", "cents": "cents"}


def import_vita() -> Any:
    """The ``vita`` module, or an ImportError naming the extra to install."""
    try:
        import vita
    except ImportError as err:
        raise ImportError(
            'the Vital backend needs the "vita" package: pip install "synthmatch[vital]"'
        ) from err
    return vita


def _mapping(name: str, details: Any) -> str:
    """How :func:`control_spec` converts a control (see there)."""
    scale, units = details.scale.name, details.display_units.strip()
    lo, mult, off = float(details.min), float(details.display_multiply), float(details.post_offset)
    if scale == "Indexed":
        return "indexed"
    if scale == "Linear" and units == "semitones" and off == -60.0:
        return "cutoff"
    if scale == "Exponential" and name.endswith("_frequency"):
        return "frequency"
    if scale == "Exponential" and off == 0.0 and mult > 0.0:
        return "exponential"
    if scale == "Linear" and mult > 0.0:
        return "linear"
    if scale in _POWERS and lo == 0.0 and mult > 0.0:
        return "power"
    return "raw"


def sets_raw(name: str, details: Any) -> bool:
    """Whether a control is set through its raw value rather than ``set_normalized``.

    vita 0.1.0 maps normalised values of Vital's exponential controls outside their own range
    (``lfo_1_frequency`` goes from 9 down to 1 over ``[0, 1]``, its range is ``[-7, 9]``), so
    those, and controls exposed raw, are set as ``raw = min + u (max - min)``.
    """
    return _mapping(name, details) in ("frequency", "exponential", "raw")


def control_spec(name: str, details: Any, raw_default: float) -> ParamSpec:
    """A :class:`ParamSpec` for one Vital control, in the units Vital displays.

    Vital shows a control's raw value ``r`` as ``f(r) * display_multiply + post_offset``, ``f``
    by the control's scale, and ``set_normalized(u)`` picks ``r`` so that the display is linear
    in ``u`` for linear, quadratic and square-root controls, and ``r`` is linear in ``u`` for
    quartic ones (``display ~ u ** 4``: ``scale="curve"``, ``curve=1/4``). Exponential controls
    (``2 ** r``) are set raw, see :func:`sets_raw`: ``scale="log"``. Indexed controls are
    ``choices``. Percentages become fractions, ``*_tune`` is in cents, ``*_transpose`` in
    semitones, filter cutoffs (raw MIDI notes) and ``*_frequency`` (raw log2 Hz; Vital displays
    the LFO period) in Hz. A control that fits none of these is exposed raw and linear, said so
    in its description.
    """
    lo, hi = float(details.min), float(details.max)
    mult, off = float(details.display_multiply), float(details.post_offset)
    units = details.display_units.strip()
    scale = details.scale.name
    if units == "%":
        mult, off = mult / 100.0, off / 100.0
    suffix = _UNIT_SUFFIX.get(units, "")
    if name.endswith("_tune") and mult == 100.0:
        suffix = "cents"
    if name.endswith("_transpose"):
        suffix = "semitones"
    desc = f"Vital '{details.display_name}'"
    kw: dict[str, Any]
    mapping = _mapping(name, details)
    if mapping == "indexed":
        choices = tuple(float(r * mult + off) for r in range(int(lo), int(hi) + 1))
        options = list(details.options)
        if options:
            desc += ": " + ", ".join(f"{i}={o}" for i, o in enumerate(options))
        kw = dict(min=choices[0], max=choices[-1], choices=choices)
        suffix = suffix if suffix in ("semitones", "cents") else ""
        default = raw_default * mult + off
    elif mapping == "cutoff":
        kw = dict(min=midi_to_hz(lo), max=midi_to_hz(hi), scale="log")
        suffix, default = "hz", midi_to_hz(raw_default)
    elif mapping == "frequency":
        kw = dict(min=2.0 ** lo, max=2.0 ** hi, scale="log")
        suffix, default = "hz", 2.0 ** raw_default
    elif mapping == "exponential":
        kw = dict(min=mult * 2.0 ** lo, max=mult * 2.0 ** hi, scale="log")
        default = mult * 2.0 ** raw_default
    elif mapping == "linear":
        kw = dict(min=lo * mult + off, max=hi * mult + off)
        default = raw_default * mult + off
    elif mapping == "power":
        p = _POWERS[scale]
        kw = dict(min=off, max=off + mult * hi ** p)
        if scale == "Quartic":
            kw.update(scale="curve", curve=1.0 / p)
        default = off + mult * raw_default ** p
    else:
        kw = dict(min=lo, max=hi)
        suffix, desc, default = "", desc + " (raw Vital value)", raw_default
    spec_name = ALIASES.get(name, name)
    if suffix and not spec_name.endswith("_" + suffix):
        spec_name = f"{spec_name}_{suffix}"
    default = min(max(default, kw["min"]), kw["max"])
    if "choices" in kw:
        default = min(kw["choices"], key=lambda c: abs(c - default))
    return ParamSpec(spec_name, default=default, description=desc, **kw)


class _Engine:
    """One ``vita.Synth`` holding the base patch; used by one thread at a time."""

    def __init__(self, vita: Any, base_json: str, controls: Sequence[str], probe: ProbeNote):
        self.synth = vita.Synth()
        if not self.synth.load_json(base_json):
            raise RuntimeError("vita could not load the synthmatch base patch")
        self.synth.set_sample_rate(float(probe.sample_rate))
        handles = self.synth.get_controls()
        self.controls = [handles[n] for n in controls]
        # (min, span) for controls set raw, None for those set through set_normalized.
        self.raw_ranges = [_raw_range(n, self.synth.get_control_details(n)) for n in controls]
        self.releases = [handles[f"env_{i}_release"] for i in range(1, NUM_ENVELOPES + 1)]
        self.probe = probe
        self.velocity = probe.velocity / 127.0
        # render() truncates render_dur * sample_rate; half a sample extra guards the rounding.
        self.render_s = (probe.num_samples + 0.5) / probe.sample_rate

    def set(self, row: np.ndarray) -> None:
        for control, raw_range, u in zip(self.controls, self.raw_ranges, row, strict=True):
            if raw_range is None:
                control.set_normalized(float(u))
            else:
                control.set(raw_range[0] + raw_range[1] * float(u))

    def render(self, row: np.ndarray) -> np.ndarray:
        """Mono ``(T,)`` float32 for one normalised row, independent of earlier renders."""
        p = self.probe
        self.set(row)
        # The flush note releases instantly: its voice is silent and every envelope is at 0 when
        # the real note starts (Vital retriggers an envelope from its current value).
        releases = [r.get_normalized() for r in self.releases]
        for r in self.releases:
            r.set_normalized(0.0)
        self.synth.render(p.midi_pitch, self.velocity, 0.01, FLUSH_S)
        for _ in range(FLUSH_NOTES):
            self.synth.render(p.midi_pitch, self.velocity, 0.005, FLUSH_NOTE_S)
        for r, u in zip(self.releases, releases, strict=True):
            r.set_normalized(u)
        audio = self.synth.render(p.midi_pitch, self.velocity, p.note_duration_s, self.render_s)
        return audio[:, : p.num_samples].mean(0, dtype=np.float32)


class VitalSynth(Synth):
    """Vital, the spectral warping wavetable synth, through the ``vita`` bindings.

    The base patch is Vital's init preset with two changes that make the curated controls
    meaningful: oscillators 1 and 2 get a two-frame wavetable that morphs from Vital's init saw
    (frame 0) to a sine (frame 256), and two modulations are connected (env 2 -> filter 1
    cutoff, LFO 1 -> osc 1 wave frame) with zero depth. Osc 2 is on at zero level, filter 1 is
    on and fully open, random oscillator phase is off. Parameters are set through Vital's own
    ``set_normalized`` (exponential controls raw, see :func:`sets_raw`); :attr:`params` converts
    them to the units Vital displays (:func:`control_spec`).

    Every item renders as: set its controls, flush, then the probe note. ``vita`` has no reset:
    each render kills the previous voice, which fades on into the next render; a voice that was
    killed keeps its envelope values and starts its next note from them; Vital rotates through
    a pool of voices. The flush plays, with every envelope release at 0, one 50 ms note (the
    previous voice dies, parameter smoothing settles) and 34 short notes that end naturally, so
    every voice in the pool holds zeroed envelopes. An item's audio is then a function of its
    parameters alone: bit-exact across renders, batch positions and threads (in a stress test
    95 of 96 items; the other differed by 4e-12). The flush costs about 1.3 times a 1 s probe
    render at 16 kHz. Effects are off in the base patch; their tails would not be flushed.

    Args:
        probe: The note to play; Vital renders at ``probe.sample_rate`` directly.
        device: Torch device of the returned audio (rendering is on CPU).
        controls: Vital control names (or table names such as ``filter_1_cutoff_hz``) to
            expose, in order; ``None`` for :data:`CURATED_CONTROLS`.
        threads: Number of ``vita.Synth`` instances rendering in parallel (``render`` releases
            the GIL); a batch is split into contiguous chunks, one per thread.

    Example:
        >>> synth = VitalSynth(threads=2)
        >>> synth.render(synth.params.defaults(4)).shape
        torch.Size([4, 16000])
    """

    name = "vital"
    differentiable = False
    batched = False

    def __init__(self, probe: ProbeNote | None = None, device: torch.device | str = "cpu",
                 controls: Sequence[str] | None = None, threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self._vita = import_vita()
        template = self._vita.Synth()
        self.base_json = base_patch_json(template)
        template.load_json(self.base_json)
        self.controls = resolve_controls(template, controls)
        handles = template.get_controls()
        table = ParamTable(
            control_spec(n, template.get_control_details(n), handles[n].value())
            for n in self.controls)
        super().__init__(table, probe, device)
        self.threads = threads
        self._engines = [_Engine(self._vita, self.base_json, self.controls, self.probe)
                         for _ in range(threads)]
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _render(self, params: Tensor) -> Tensor:
        rows = params.detach().cpu().double().numpy()
        quantized = self.params.quantize(torch.from_numpy(rows)).numpy()
        out = np.empty((rows.shape[0], self.num_samples), dtype=np.float32)

        def work(k: int, idx: np.ndarray) -> None:
            for i in idx:
                out[i] = self._engines[k].render(quantized[i])

        chunks = np.array_split(np.arange(rows.shape[0]), len(self._engines))
        if self._pool is None:
            work(0, chunks[0])
        else:
            for future in [self._pool.submit(work, k, c) for k, c in enumerate(chunks)]:
                future.result()
        return torch.from_numpy(out).to(self.device)

    def _set_row(self, params: Tensor) -> Any:
        """Set one normalised row ``(P,)`` on the first engine; return its ``vita.Synth``."""
        row = self.params.quantize(self.params.validate(params.reshape(1, -1).cpu()))
        self._engines[0].set(row[0].double().numpy())
        return self._engines[0].synth

    def vital_text(self, params: Tensor) -> dict[str, str]:
        """What Vital displays for each selected control at one normalised row ``(P,)``."""
        vita_synth = self._set_row(params)
        return {n: vita_synth.get_control_text(n) for n in self.controls}

    def to_vital_json(self, params: Tensor) -> str:
        """One normalised row ``(P,)`` as a complete Vital preset (the ``.vital`` JSON)."""
        return self._set_row(params).to_json()

    def save_vital_preset(self, path: str | Path, params: Tensor) -> Path:
        """Write one normalised row ``(P,)`` as a ``.vital`` preset that Vital itself opens."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_vital_json(params))
        return path

    def params_from_vital_json(self, text: str) -> Tensor:
        """The selected controls of a Vital preset, normalised: ``(P,)`` on :attr:`device`.

        Only the selected controls are read: rendering the result uses the base patch for
        everything else (wavetables, modulations, effects), so a foreign preset sounds as close
        as those controls allow.

        Raises:
            ValueError: the text is not a preset that Vital can load.
        """
        scratch = self._vita.Synth()
        if not scratch.load_json(text):
            raise ValueError("not a Vital preset (or one from a newer Vital version)")
        u = torch.tensor([normalized_value(scratch, n) for n in self.controls],
                         dtype=torch.float64).clamp(0.0, 1.0)
        return self.params.quantize(u.unsqueeze(0))[0].float().to(self.device)

    def load_vital_preset(self, path: str | Path) -> Tensor:
        """Read a ``.vital`` file; see :meth:`params_from_vital_json`."""
        return self.params_from_vital_json(Path(path).read_text())

    def close(self) -> None:
        """Stop the worker threads (also done when the synth is garbage collected)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


def _raw_range(name: str, details: Any) -> tuple[float, float] | None:
    if not sets_raw(name, details):
        return None
    return float(details.min), float(details.max) - float(details.min)


def normalized_value(synth: Any, name: str) -> float:
    """A control's current value of one ``vita.Synth``, normalised as :class:`VitalSynth` does."""
    raw_range = _raw_range(name, synth.get_control_details(name))
    control = synth.get_controls()[name]
    if raw_range is None:
        return control.get_normalized()
    return (control.value() - raw_range[0]) / raw_range[1]


def base_patch_json(synth: Any) -> str:
    """Vital's init preset plus the synthmatch base patch, as preset JSON."""
    synth.load_init_preset()
    for source, destination in MODULATIONS:
        synth.connect_modulation(source, destination)
    handles = synth.get_controls()
    for name, raw in BASE_PATCH.items():
        handles[name].set(raw)
    preset = json.loads(synth.to_json())
    sine = np.sin(2.0 * np.pi * np.arange(2048) / 2048).astype(np.float32)
    frame = {"position": WAVETABLE_FRAMES,
             "wave_data": base64.b64encode(sine.tobytes()).decode("ascii")}
    for wavetable in preset["settings"]["wavetables"][:2]:
        wavetable["groups"][0]["components"][0]["keyframes"].append(dict(frame))
    return json.dumps(preset)


def resolve_controls(synth: Any, controls: Sequence[str] | None) -> tuple[str, ...]:
    """Vital names for ``controls`` (Vital or table names); ``None`` gives the curated set.

    Raises:
        ValueError: an unknown or repeated name (with close matches), or an empty list.
    """
    if controls is None:
        return CURATED_CONTROLS
    if isinstance(controls, str):
        raise ValueError("controls must be a list of names, not a single string")
    known = synth.get_controls()
    by_alias = {alias: n for n, alias in ALIASES.items()}
    out = []
    for name in controls:
        vital_name = _vital_name(synth, known, by_alias, name)
        if vital_name is None:
            choices = [*known, *by_alias]
            close = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown Vital control {name!r}{hint} "
                             f"({len(known)} controls: see vita.Synth().get_controls())")
        if vital_name in out:
            raise ValueError(f"control {name!r} is selected twice")
        out.append(vital_name)
    if not out:
        raise ValueError("controls must name at least one Vital control")
    return tuple(out)


def _vital_name(synth: Any, known: dict, by_alias: dict[str, str], name: str) -> str | None:
    """The Vital control behind a Vital name, an alias or a unit-suffixed table name."""
    if name in known:
        return name
    head = name
    for suffix in ("_hz", "_s", "_db", "_semitones", "_cents"):
        if name.endswith(suffix):
            head = name[: -len(suffix)]
    candidate = by_alias.get(head, head)
    if candidate in known:
        spec = control_spec(candidate, synth.get_control_details(candidate),
                            known[candidate].value())
        if spec.name == name:
            return candidate
    return by_alias.get(name)


__all__ = ["CURATED_CONTROLS", "VitalSynth", "control_spec", "import_vita"]
