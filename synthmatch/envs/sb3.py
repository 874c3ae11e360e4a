"""Stable-Baselines3 ``VecEnv`` over the same batched core (SB3 does not take Gymnasium's
``VectorEnv``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
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
        if venv.array_type != "numpy":
            raise ValueError("SB3VecEnv needs a vector env with array_type='numpy'")
        self._actions: np.ndarray | None = None
        self._started = False

    def reset(self):
        obs, _ = self.venv.reset(seed=list(self._seeds), options=self._options[0] or None)
        self._started = True
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called before step_async()")
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.venv.step(actions)
        done = terminated | truncated
        keys = ("distance", "best_distance", "is_success")
        columns = [info[key].tolist() for key in keys]
        mae = np.where(info["_param_mae"], info["param_mae"], np.nan).tolist()
        infos: list[dict[str, Any]] = []
        for i, values in enumerate(zip(*columns, strict=True)):
            entry = dict(zip(keys, values, strict=True))
            if mae[i] == mae[i]:  # not NaN: the target's parameters are known
                entry["param_mae"] = mae[i]
            infos.append(entry)
        for i in np.flatnonzero(done):
            # SB3 wants the ended episode's info, not the new one's.
            last = info["final_info"][i]
            infos[i] = {"distance": float(last["distance"]),
                        "best_distance": float(last["best_distance"]),
                        "is_success": bool(last["is_success"]),
                        **({} if np.isnan(last["param_mae"]) else
                           {"param_mae": float(last["param_mae"])}),
                        "terminal_observation": info["final_obs"][i],
                        "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
        return obs, reward, done, infos

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
