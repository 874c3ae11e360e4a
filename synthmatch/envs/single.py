"""The single Gymnasium env: the batched core with one episode."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from torch import Tensor

from synthmatch.envs.core import SynthMatchCore, to_numpy
from synthmatch.envs.drawing import side_by_side
from synthmatch.envs.seeding import check_seed


def make_spaces(core: SynthMatchCore) -> tuple[spaces.Dict, spaces.Box]:
    """Observation and action spaces of one env of ``core``."""
    mel = spaces.Box(-1.0, 1.0, core.mel_shape, dtype=np.float32)
    obs = spaces.Dict({
        "target_mel": mel,
        "current_mel": mel,
        "params": spaces.Box(0.0, 1.0, (core.num_params,), dtype=np.float32),
    })
    if core.accept == "improve":
        obs["last_step"] = spaces.Box(-1.0, 1.0, (core.num_params + 1,), dtype=np.float32)
    return obs, spaces.Box(-1.0, 1.0, (core.num_params,), dtype=np.float32)


class SynthMatchEnv(gym.Env):
    """Match a target sound by tuning a synthesizer's parameters.

    Each episode draws a target sound (a random preset of the synth, or audio/parameters given
    in ``reset(options=...)``) and starts the synth from its default preset (or a random or
    given one). Every step changes the parameters, renders the probe note and rewards the
    reduction of a perceptual distance (multi-resolution STFT, MFCC, spectral centroid and
    loudness, with penalties for degenerate audio) between the rendered and target sounds.

    ## Action Space
    ``Box(-1, 1, (P,), float32)``, one entry per free synth parameter (``env.unwrapped.
    param_names``). In ``action_mode="delta"`` (default) the normalised parameters move by
    ``max_step * action`` and are clipped to ``[0, 1]``; in ``"absolute"`` the action is the
    parameter vector mapped from ``[-1, 1]`` to ``[0, 1]`` (one-step matching as a bandit).
    Actions outside ``[-1, 1]`` are clipped; NaN/inf or a wrong shape raise ``ValueError``.

    ## Observation Space
    ``Dict`` of float32 arrays:

    - ``target_mel`` ``(n_mels, frames)``: log-mel spectrogram of the target, dB mapped from
      ``[-100, 20]`` to ``[-1, 1]`` (64 mels x 63 frames for 1 s at 16 kHz by default).
    - ``current_mel`` ``(n_mels, frames)``: the same for the current sound.
    - ``params`` ``(P,)``: the current normalised parameters in ``[0, 1]``.
    - ``last_step`` ``(P + 1,)``, with ``accept="improve"`` only: the last action (clipped)
      and whether its proposal was kept (+1), rejected (-1) or not made yet (0).

    ## Rewards
    ``(d_prev - d) / max(d_0, success_threshold)``: the reduction of the distance as a share of
    the episode's starting distance ``d_0``, so an episode's return is ``1 - d_final / d_0``
    (plus ``success_bonus`` once, on success).

    ## Episode End
    Terminated when the distance falls below ``success_threshold``; truncated after
    ``max_episode_steps`` (50 in the registry, enforced by Gymnasium's ``TimeLimit``).

    ## Info
    ``distance``, ``best_distance``, ``is_success`` and, when the target parameters are known,
    ``param_mae`` (mean absolute error of the normalised parameters).

    ## Arguments
    ``synth`` (``"subtractive"``, ``"fm"``, ``"torchsynth"`` or a ``Synth``), ``free_params``,
    ``frozen``, ``probe``, ``device``, ``action_mode``, ``max_step``, ``start``,
    ``success_threshold``, ``success_bonus``, ``reward_kwargs``, ``render_mode`` (``None`` or
    ``"rgb_array"``): see :class:`~synthmatch.envs.core.SynthMatchCore`.

    ``reset(options=...)`` accepts ``target_params`` (normalised ``(P,)``), ``target_audio``
    with ``target_sample_rate`` (mono or stereo array; resampled, averaged and trimmed/padded
    as documented in :func:`~synthmatch.envs.targets.prepare_target_audio`), ``start``
    (``"default"``, ``"random"`` or parameters) and ``initializer`` (a callable from target
    audio ``(1, T)`` to starting parameters ``(1, P)``).

    ## Version History
    - v0: initial release.

    ## Example
    >>> import gymnasium as gym, synthmatch
    >>> env = gym.make("SynthMatch-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> sorted(obs), round(float(info["distance"]), 3) >= 0
    (['current_mel', 'params', 'target_mel'], True)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None, **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.core = SynthMatchCore(1, **kwargs)
        self.observation_space, self.action_space = make_spaces(self.core)
        self.param_names = self.core.synth.params.names

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            check_seed(seed)
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        super().reset(seed=seed)
        if options and "target_audio" in options:
            # One env: the array is one clip, mono or multi-channel (the core reads a
            # leading axis as the env axis).
            options = {**options, "target_audio": [options["target_audio"]]}
        self.core.seed(None if seed is None else [seed])
        self.core.reset_envs([0], options)
        return self._obs_info()

    def step(self, action):
        if self.core.target_features is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, "
                             f"got {action.shape}")
        result = self.core.step(action[None])
        obs, info = self._obs_info(reward=result.reward, terminated=result.terminated,
                                   truncated=result.truncated)
        return (obs, float(info.pop("reward")), bool(info.pop("terminated")),
                bool(info.pop("truncated")), info)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        obs, _ = self._obs_info()
        return side_by_side(obs["target_mel"], obs["current_mel"])

    def _obs_info(self, **extra: Tensor) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Env 0's observation and info (plus ``extra`` scalars), in one copy to the host."""
        obs = self.core.observation()
        host = to_numpy({k: v[0] for k, v in {**obs, **self.core.info(), **extra}.items()})
        info = {k: host[k].item() for k in host if k not in obs}
        if np.isnan(info["param_mae"]):
            del info["param_mae"]
        return {k: host[k] for k in obs}, info
