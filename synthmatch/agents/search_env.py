"""What the training envs of the search policies share (:mod:`~synthmatch.agents.restarts`,
:mod:`~synthmatch.agents.latent`): a Stable-Baselines3 ``VecEnv`` whose ``num_envs`` targets
are random presets of a synth, searched in lockstep (all envs start and end their episodes
together, one render each per step), and the callback that logs each episode."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv
from torch import Tensor

from synthmatch.cli import require_counts
from synthmatch.devices import resolve_device
from synthmatch.fileio import write_json_atomic
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import Synth


def check_search_settings(s: Any) -> None:
    """Refuse a search policy's training settings (the fields both runs share) that cannot make
    a sensible run, before anything is written."""
    require_counts(s, "total_timesteps", "num_envs", "k", "episode_steps", "n_steps")
    if not 0 < s.gamma <= 1:
        raise ValueError(f"--gamma must be in (0, 1], got {s.gamma}")
    if not s.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {s.learning_rate}")
    if not Path(s.prior).is_file():
        raise FileNotFoundError(f"--prior: no prior checkpoint at {s.prior}")
    resolve_device(s.device)


def open_run(s: Any) -> tuple[Path, torch.device]:
    """The run directory of a search policy's training settings ``s`` and the device; refuses
    a directory that already holds a policy. Nothing is written (see :func:`save_config`)."""
    name = s.run_name or f"{Path(s.prior).parent.name}_s{s.seed}_{int(time.time())}"
    run_dir = Path(s.log_dir) / name
    if (run_dir / "policy.pt").exists():
        raise ValueError(f"{run_dir} already holds a policy; pick another --run-name")
    device = resolve_device(s.device)
    torch.manual_seed(s.seed)
    return run_dir, device


def save_config(run_dir: Path, s: Any) -> None:
    """Create the run directory with ``config.json``: once the run is sure to start."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", asdict(s))


class SearchVecEnv(VecEnv):
    """Base of the search envs. Subclasses implement ``reset`` (calling :meth:`draw_targets`)
    and ``step_wait`` (:meth:`take_actions`, then :meth:`finish_step`).

    Args:
        num_envs: Targets searched at once.
        observation_space, action_space: The policy's spaces.
        synth: The synth whose random presets are the targets.
        seed: Seed of the targets (and of whatever else the subclass draws from
            :attr:`generator`).
    """

    def __init__(self, num_envs: int, observation_space: gym.spaces.Space,
                 action_space: gym.spaces.Space, synth: Synth, seed: int):
        self.render_mode = None
        super().__init__(num_envs, observation_space, action_space)
        self.synth = synth
        self.distance = PerceptualDistance(synth.sample_rate).to(synth.device)
        self.generator = torch.Generator(synth.device).manual_seed(seed)
        self._actions: np.ndarray | None = None

    def draw_targets(self) -> Tensor:
        """Render ``num_envs`` random presets; keep their features as :attr:`target` and
        return their audio ``(num_envs, T)``."""
        table = self.synth.params
        with torch.no_grad():
            audio = self.synth.render(table.sample(self.num_envs, self.generator,
                                                   device=self.synth.device))
            self.target = self.distance.features(audio)
        return audio

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def take_actions(self) -> np.ndarray:
        """The actions handed to ``step_async`` (once)."""
        if self._actions is None or getattr(self, "search", None) is None:
            raise RuntimeError("call reset() and step_async() before step_wait()")
        actions, self._actions = self._actions, None
        return actions

    def episode_info(self) -> dict[str, list[Any]]:
        """Per-env values added to the infos at an episode's end (name -> one per env)."""
        return {}

    def finish_step(self, obs: np.ndarray, reward: np.ndarray, best: Tensor, done: bool):
        """``step_wait``'s return: infos with each env's best distance; at an episode's end
        the terminal observation and :meth:`episode_info`, and a fresh episode."""
        infos: list[dict[str, Any]] = [{"best_distance": float(d)} for d in best]
        dones = np.full(self.num_envs, done)
        if done:
            extra = self.episode_info()
            for i, info in enumerate(infos):
                info.update({name: values[i] for name, values in extra.items()})
                info["terminal_observation"] = obs[i]
                info["TimeLimit.truncated"] = True
            obs = self.reset()
        return obs, reward, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        return [getattr(self, method_name)(*method_args, **method_kwargs)
                for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class EpisodeLog(BaseCallback):
    """TensorBoard (``episode/<name>``) and ``history.json`` (one row per episode): the median
    best distance, the mean over envs of each ``per_env`` info entry (info key -> logged name)
    and each ``scalars`` callable's value."""

    def __init__(self, run_dir: Path, per_env: dict[str, str] | None = None,
                 **scalars: Callable[[], float]):
        super().__init__()
        self.run_dir, self.history = run_dir, []
        self.per_env, self.scalars = per_env or {}, scalars

    def _on_step(self) -> bool:
        if self.locals["dones"][0]:
            infos = self.locals["infos"]
            row = {"median_best_distance": float(np.median([i["best_distance"] for i in infos]))}
            row.update({name: float(np.mean([i[key] for i in infos]))
                        for key, name in self.per_env.items()})
            row.update({name: float(f()) for name, f in self.scalars.items()})
            for name, value in row.items():
                self.logger.record(f"episode/{name}", value)
            self.history.append({"timesteps": int(self.num_timesteps), **row})
            write_json_atomic(self.run_dir / "history.json", self.history)
        return True
