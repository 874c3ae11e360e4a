"""Every environment id, registered in one place.

Ids: ``SynthMatch-v0`` (the subtractive synth, all parameters free) with ``-Easy`` (a few
salient parameters) and ``-Medium`` (about half) variants, and the same three per backend:
``SynthMatch-{Subtractive,FM,TorchSynth}[-Easy|-Medium]-v0``. Parameters that are not free
stay at the synth's default preset.

Real synthesizers need something from outside the package: ``SynthMatch-VST-v0`` a VST3
instrument (``synth_kwargs={"plugin_path": ..., "parameters": [...]}``), ``SynthMatch-Vital-v0``
the ``vita`` package (``pip install "synthmatch[vital]"``).
"""

from __future__ import annotations

import gymnasium as gym

MAX_EPISODE_STEPS = 50
ENTRY_POINT = "synthmatch.envs.single:SynthMatchEnv"
VECTOR_ENTRY_POINT = "synthmatch.envs.vector:SynthMatchVectorEnv"

_TORCHSYNTH_EASY = ("vco_2_shape", "mixer_vco_1", "mixer_vco_2", "mixer_noise")
_TORCHSYNTH_MEDIUM = (
    *(f"adsr_{i}_{p}" for i in (1, 2) for p in ("attack_s", "decay_s", "sustain", "release_s",
                                                  "alpha")),
    "vco_1_tuning_semitones", "vco_1_mod_depth_semitones", "vco_2_tuning_semitones",
    "vco_2_mod_depth_semitones", *_TORCHSYNTH_EASY,
    *(f"mod_matrix_adsr_{i}_to_{t}" for i in (1, 2)
      for t in ("vco_1_pitch", "vco_1_amp", "vco_2_pitch", "vco_2_amp", "noise_amp")),
    "lfo_1_frequency_hz", "lfo_1_mod_depth_hz",
    *(f"mod_matrix_lfo_1_to_{t}" for t in ("vco_1_pitch", "vco_1_amp", "vco_2_pitch",
                                           "vco_2_amp", "noise_amp")),
)

# backend id part -> (registry synth name, {difficulty: free parameter names or None for all})
TASKS: dict[str, tuple[str, dict[str, tuple[str, ...] | None]]] = {
    "Subtractive": ("subtractive", {
        "Easy": ("osc1_shape", "cutoff_hz", "amp_attack_s", "amp_decay_s"),
        "Medium": ("osc1_shape", "osc2_shape", "osc2_level", "osc2_semitones", "noise_level",
                   "cutoff_hz", "resonance", "filter_env_octaves", "filter_decay_s",
                   "amp_attack_s", "amp_decay_s", "amp_sustain"),
        "": None,
    }),
    "FM": ("fm", {
        "Easy": ("mod_ratio", "mod_index", "amp_decay_s"),
        "Medium": ("mod_ratio", "mod_index", "index_decay_s", "index_sustain", "amp_attack_s",
                   "amp_decay_s", "amp_sustain"),
        "": None,
    }),
    "TorchSynth": ("torchsynth", {"Easy": _TORCHSYNTH_EASY, "Medium": _TORCHSYNTH_MEDIUM,
                                  "": None}),
}
DEFAULT_BACKEND = "Subtractive"
# id -> registry synth name, for backends that need a plugin file or an optional extra.
EXTERNAL: dict[str, str] = {"SynthMatch-VST-v0": "vst3", "SynthMatch-Vital-v0": "vital"}


def _env_id(backend: str | None, difficulty: str) -> str:
    parts = ["SynthMatch", backend, difficulty or None, "v0"]
    return "-".join(p for p in parts if p)


def env_ids(external: bool = True) -> list[str]:
    """All registered ids, default synth first; ``external=False`` leaves out those that need
    a plugin file or an optional extra (:data:`EXTERNAL`)."""
    ids = [_env_id(None, d) for d in TASKS[DEFAULT_BACKEND][1]]
    ids += [_env_id(b, d) for b, (_, levels) in TASKS.items() for d in levels]
    return ids + list(EXTERNAL) if external else ids


def register_all() -> None:
    """Register every id (idempotent)."""
    for backend, (synth, levels) in TASKS.items():
        for difficulty, free in levels.items():
            kwargs = {"synth": synth, "free_params": free}
            names = [_env_id(backend, difficulty)]
            if backend == DEFAULT_BACKEND:
                names.append(_env_id(None, difficulty))
            for env_id in names:
                if env_id in gym.registry:
                    continue
                gym.register(id=env_id, entry_point=ENTRY_POINT,
                             vector_entry_point=VECTOR_ENTRY_POINT,
                             max_episode_steps=MAX_EPISODE_STEPS, kwargs=dict(kwargs))
    for env_id, synth in EXTERNAL.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=ENTRY_POINT,
                         vector_entry_point=VECTOR_ENTRY_POINT,
                         max_episode_steps=MAX_EPISODE_STEPS, kwargs={"synth": synth})


def env_settings(env_id: str) -> tuple[str, tuple[str, ...] | None, dict]:
    """``(synth name, free parameter names or None, synth_kwargs)`` of a registered id.

    Raises:
        ValueError: ``env_id`` is not a registered synthmatch id (the message lists them).
    """
    register_all()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        raise ValueError(f"unknown env id {env_id!r}; available: {', '.join(env_ids())}") \
            from None
    if spec.entry_point != ENTRY_POINT:
        raise ValueError(f"{env_id!r} is not a synthmatch env; available: "
                         f"{', '.join(env_ids())}")
    kwargs = spec.kwargs
    free = kwargs.get("free_params")
    return kwargs["synth"], None if free is None else tuple(free), kwargs.get("synth_kwargs", {})


def env_synth(env_id: str, device: str = "cpu", **synth_kwargs):
    """The synth an env of ``env_id`` renders with: the backend, wrapped in a
    :class:`~synthmatch.synths.FrozenSynth` when the id frees only some parameters."""
    from synthmatch.synths import FrozenSynth, make_synth

    name, free, kwargs = env_settings(env_id)
    synth = make_synth(name, device=device, **{**kwargs, **synth_kwargs})
    return synth if free is None else FrozenSynth(synth, free)
