"""Stable-Baselines3 ``VecEnv`` over the same batched core (SB3 does not take Gymnasium's
``VectorEnv``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from synthmatch.envs.vector import SynthMatchVectorEnv


class SB3VecEnv(VecEnv):
    """Present a :class:`SynthMatchVectorEnv` to Stable-Baselines3.

    Steps go straight to the batched core: one render and one reward computation per step for
    all envs. Follows SB3's conventions: numpy observations, same-step autoreset with the last
    observation in ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]``,
    and ``infos[i]["is_success"]`` for SB3's success-rate logging.

    Args:
        venv: The vector env to adapt, e.g. ``gymnasium.make_vec("SynthMatch-v0", 8)``.

    Example:
        >>> from stable_baselines3 import PPO
        >>> vec_env = make_sb3_vec_env("SynthMatch-Easy-v0", num_envs=8, seed=0)
        >>> model = PPO("MultiInputPolicy", vec_env, n_steps=16).learn(256)
    """

    def __init__(self, venv: SynthMatchVectorEnv):
        venv = venv.unwrapped if hasattr(venv, "unwrapped") else venv
        if not isinstance(venv, SynthMatchVectorEnv):
            raise TypeError(f"SB3VecEnv adapts a SynthMatchVectorEnv, got {type(venv).__name__}")
        self.venv = venv
        self.core = venv.core
        self.render_mode = venv.render_mode
        super().__init__(venv.num_envs, venv.single_observation_space,
                         venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._started = False

    def reset(self):
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        if seeds is not None or not self._started:
            self.venv.reset(seed=seeds if seeds is None else list(seeds),
                            options=self._options[0] if self._options else None)
        else:
            self.core.reset_envs(torch.arange(self.num_envs), self._options[0] or None)
        self._started = True
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.venv._obs()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called before step_async()")
        result = self.core.step(torch.as_tensor(self._actions))
        self._actions = None
        terminated = result.terminated.cpu().numpy()
        truncated = result.truncated.cpu().numpy()
        done = terminated | truncated
        info = {k: v.cpu().numpy() for k, v in self.core.info().items()}
        infos: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            entry = {"distance": float(info["distance"][i]),
                     "best_distance": float(info["best_distance"][i]),
                     "is_success": bool(info["is_success"][i])}
            if not np.isnan(info["param_mae"][i]):
                entry["param_mae"] = float(info["param_mae"][i])
            infos.append(entry)
        if done.any():
            last = self.venv._obs()
            idx = np.flatnonzero(done)
            for i in idx:
                infos[i]["terminal_observation"] = {k: v[i] for k, v in last.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self.core.reset_envs(torch.as_tensor(idx))
        return self.venv._obs(), result.reward.cpu().numpy(), done, infos

    def close(self) -> None:
        self.venv.close()

    def render(self, mode: str | None = None):
        frames = self.venv.render()
        return None if frames is None else np.concatenate(frames, axis=0)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.venv.render() or [None] * self.num_envs

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_sb3_vec_env(env_id: str = "SynthMatch-v0", num_envs: int = 8,
                     seed: int | None = None, **kwargs: Any) -> SB3VecEnv:
    """``gymnasium.make_vec(env_id, num_envs, **kwargs)`` adapted for Stable-Baselines3.

    Args:
        env_id: A registered synthmatch id.
        num_envs: Number of parallel episodes (one torch batch).
        seed: Seeds env ``i`` with ``seed + i`` at the first reset.
        **kwargs: Env arguments (``device="cuda"``, ``max_step``...).
    """
    venv = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        **kwargs)
    vec_env = SB3VecEnv(venv)
    if seed is not None:
        vec_env.seed(seed)
    return vec_env
