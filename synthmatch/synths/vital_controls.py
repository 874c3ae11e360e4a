"""Vital's controls as a declared parameter table: names, ranges, curated defaults, base patch.

Used by :mod:`synthmatch.synths.vital`; ``vita`` is imported lazily.
"""

from __future__ import annotations

import base64
import difflib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthmatch.synths.base import midi_to_hz
from synthmatch.synths.params import ParamSpec

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


def control_raw_range(name: str, details: Any) -> tuple[float, float] | None:
    if not sets_raw(name, details):
        return None
    return float(details.min), float(details.max) - float(details.min)


def normalized_value(synth: Any, name: str) -> float:
    """A control's current value of one ``vita.Synth``, normalised as :class:`VitalSynth` does."""
    raw_range = control_raw_range(name, synth.get_control_details(name))
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

