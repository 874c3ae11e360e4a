"""Synth backends behind one interface: normalised ``(B, P)`` parameters in, ``(B, T)`` audio out.

Backends are created by name with :func:`make_synth`; heavy ones import lazily so
``import synthmatch`` stays fast.
"""

from __future__ import annotations

import importlib

from synthmatch.synths.base import ProbeNote, Synth
from synthmatch.synths.frozen import FrozenSynth
from synthmatch.synths.params import ParamSpec, ParamTable

# name -> "module:Class"; modules import on first use.
BACKENDS: dict[str, str] = {
    "subtractive": "synthmatch.synths.subtractive:SubtractiveSynth",
    "fm": "synthmatch.synths.fm:FMSynth",
    "torchsynth": "synthmatch.synths.torchsynth_voice:TorchSynthVoice",
    "vst3": "synthmatch.synths.vst3:VST3Synth",
    "vital": "synthmatch.synths.vital:VitalSynth",
}


def synth_class(name: str) -> type[Synth]:
    """The backend class registered under ``name``."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown synth {name!r}; available: {', '.join(BACKENDS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_synth(name: str, **kwargs) -> Synth:
    """Create a backend by registry name, e.g. ``make_synth("fm", probe=ProbeNote(...))``."""
    return synth_class(name)(**kwargs)


__all__ = ["BACKENDS", "FrozenSynth", "ParamSpec", "ParamTable", "ProbeNote", "Synth",
           "make_synth", "synth_class"]
