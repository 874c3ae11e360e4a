"""Presets as JSON: parameter names with real-unit and normalised values, validated on load.

Format (version 1)::

    {
      "format": "synthmatch-preset",
      "version": 1,
      "synth": "subtractive",
      "name": "warm pad",
      "probe": {"midi_pitch": 60, "velocity": 100, ...},
      "parameters": {"cutoff_hz": {"value": 1200.0, "normalized": 0.61}, ...}
    }

The real-unit ``value`` is authoritative; ``normalized`` is written for convenience and, when
present on load, must agree with ``value`` (for a discrete parameter: lie in the range of
normalised values that select it). Discrete parameters are written snapped to their choice, so
what ``save_preset`` writes, ``load_preset`` reads back to the same sound.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from synthmatch.synths.base import ProbeNote, Synth
from synthmatch.synths.frozen import FrozenSynth
from synthmatch.synths.params import ParamTable

FORMAT = "synthmatch-preset"
VERSION = 1
# Normalised values written with 9 significant digits agree with their real value to ~1e-6.
AGREEMENT_TOLERANCE = 1e-4


class PresetError(ValueError):
    """A preset file is malformed; the message names the offending field."""


def preset_to_dict(synth: Synth, params: Tensor, name: str = "") -> dict:
    """Describe one normalised parameter vector ``(P,)`` as a JSON-ready dict.

    A :class:`FrozenSynth` is saved as its full inner synth (frozen values included), so the
    preset opens with or without the wrapper.
    """
    row = synth.params.validate(params.reshape(1, -1).detach().cpu().float())
    if isinstance(synth, FrozenSynth):
        synth, row = synth.inner, synth.expand(row)
    real = synth.params.to_real(row.double())[0]
    row = synth.params.quantize(row)  # a discrete parameter's normalised value, snapped
    return {
        "format": FORMAT,
        "version": VERSION,
        "synth": synth.name,
        "name": name,
        "probe": synth.probe.to_dict(),
        "parameters": {
            # At the box's edges the float64 map can round past a bound (a log range's top:
            # 0.01 * exp(log(100)) = 1.0000000000000004), which the preset reader refuses.
            spec.name: {"value": min(max(float(real[j]), spec.min), spec.max),
                        "normalized": float(row[0, j])}
            for j, spec in enumerate(synth.params)
        },
    }


def save_preset(path: str | Path, synth: Synth, params: Tensor, name: str = "") -> Path:
    """Write one preset ``(P,)`` (normalised) of ``synth`` to ``path`` as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(preset_to_dict(synth, params, name), indent=2) + "\n")
    return path


def preset_from_dict(data: dict, table: ParamTable, synth_name: str | None = None,
                     probe: ProbeNote | None = None) -> Tensor:
    """Validate a preset dict against ``table``; return its normalised values ``(P,)``.

    Args:
        data: The parsed JSON.
        table: The parameter table of the synth the preset is for.
        synth_name: If given, the preset's ``synth`` field must match it.
        probe: If given, the preset's ``probe`` (when it has one) must match it: a preset
            matched at another note or length is another sound.

    Raises:
        PresetError: naming the field that is missing, unknown, of the wrong type, out of
            range, or inconsistent.
    """
    if not isinstance(data, dict):
        raise PresetError(f"a preset must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise PresetError(f"'format' must be {FORMAT!r}, got {data.get('format')!r}")
    version = data.get("version")
    if isinstance(version, bool) or version != VERSION:
        raise PresetError(f"'version' must be {VERSION}, got {version!r}")
    if synth_name is not None and data.get("synth") != synth_name:
        raise PresetError(f"'synth' is {data.get('synth')!r}, expected {synth_name!r}")
    if "probe" in data:
        try:
            recorded = ProbeNote(**data["probe"])
        except (TypeError, ValueError) as err:
            raise PresetError(f"'probe' is invalid: {err}") from None
        if probe is not None and recorded != probe:
            differ = {k: (v, getattr(probe, k)) for k, v in recorded.to_dict().items()
                      if v != getattr(probe, k)}
            raise PresetError("'probe' differs from the synth's (preset vs synth): " + ", ".join(
                f"{k} {a} vs {b}" for k, (a, b) in differ.items()))
    params = data.get("parameters")
    if not isinstance(params, dict):
        raise PresetError("'parameters' must be an object of name -> {value, normalized}")
    unknown = sorted(set(params) - set(table.names))
    if unknown:
        raise PresetError(f"unknown parameter(s) {unknown}; known: {', '.join(table.names)}")
    missing = [n for n in table.names if n not in params]
    if missing:
        raise PresetError(f"missing parameter(s) {missing}")

    out = torch.empty(len(table), dtype=torch.float64)
    for j, spec in enumerate(table):
        field = f"parameters.{spec.name}"
        entry = params[spec.name]
        if not isinstance(entry, dict) or "value" not in entry:
            raise PresetError(f"{field} must be an object with a 'value'")
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise PresetError(f"{field}.value must be a finite number, got {value!r}")
        if not spec.min <= value <= spec.max:
            raise PresetError(
                f"{field}.value {value} is outside [{spec.min}, {spec.max}]")
        if spec.choices is not None and not any(abs(value - c) < 1e-9 for c in spec.choices):
            raise PresetError(f"{field}.value {value} is not one of {list(spec.choices)}")
        u = float(spec.to_normalized(torch.tensor(float(value), dtype=torch.float64)))
        if "normalized" in entry:
            given = entry["normalized"]
            if isinstance(given, bool) or not isinstance(given, int | float) or \
                    not math.isfinite(given):
                raise PresetError(f"{field}.normalized must be a finite number, got {given!r}")
            # A discrete parameter reads any normalised value within its choice's step.
            reach = AGREEMENT_TOLERANCE if spec.choices is None else (
                0.5 / (len(spec.choices) - 1) + AGREEMENT_TOLERANCE)
            if abs(given - u) > reach:
                raise PresetError(
                    f"{field}.normalized {given} disagrees with value {value} "
                    f"(which normalises to {u:.6f})")
        out[j] = u
    return out.clamp(0.0, 1.0).float()


def load_preset(path: str | Path, synth: Synth) -> Tensor:
    """Read a preset file for ``synth``; return normalised values ``(P,)`` on ``synth.device``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PresetError: the JSON is malformed or does not fit ``synth`` (the message names the
            field).
    """
    path = Path(path)
    if isinstance(synth, FrozenSynth):
        full = load_preset(path, synth.inner)
        return full[synth.free_index.to(full.device)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PresetError(f"{path}: not a text file (a preset is JSON)") from None
    except json.JSONDecodeError as err:
        raise PresetError(f"{path}: not valid JSON ({err})") from None
    try:
        return preset_from_dict(data, synth.params, synth.name, synth.probe).to(synth.device)
    except PresetError as err:
        raise PresetError(f"{path}: {err}") from None
