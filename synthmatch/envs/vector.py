"""The native Gymnasium vector env: all episodes stepped as one torch batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from synthmatch.envs.core import SynthMatchCore, to_numpy
from synthmatch.envs.drawing import side_by_side
from synthmatch.envs.seeding import per_env_seeds
from synthmatch.envs.single import make_spaces

ARRAY_TYPES = ("numpy", "torch")


class SynthMatchVectorEnv(VectorEnv):
    """``num_envs`` synth-matching episodes rendered and scored as one batch on ``device``.

    Returned by ``gymnasium.make_vec("SynthMatch-v0", num_envs=N)``; same spaces, rewards and
    options as :class:`~synthmatch.envs.single.SynthMatchEnv`, batched. Env ``i`` seeded with
    ``seed + i`` plays exactly the episodes of a single env seeded with ``seed + i``.

    Autoreset is same-step, as in Gymnasium's own vector envs: when an episode ends, the
    returned observation and info already belong to the next episode; the last ones are in
    ``info["final_obs"]`` and ``info["final_info"]``, masked by ``info["_final_obs"]``.

    Two array types:

    - ``"numpy"`` (default, for Gymnasium and SB3 users): numpy arrays, copied from the device
      in one transfer per step; ``info["final_obs"]`` is an object array of per-env dicts, as
      Gymnasium's own vector envs return it.
    - ``"torch"``: torch tensors on ``device``, nothing copied to the host, for learners that
      live on the device (``experiments/ppo_gpu.py``). Actions may be device tensors.
      ``info["final_obs"]`` (and ``final_info``) is then a batched dict present at every step:
      the last observation of the envs that were reset, the current one elsewhere, so it can
      be fed to a value network as is, with no branch on the host.
      Treat returned tensors as read-only; the env never writes into them later.

    ``reset(seed=...)`` takes an integer (env ``i`` gets ``seed + i``) or one seed per env;
    ``options`` are the single env's (arrays may carry a leading axis with one row per env
    being reset) plus ``reset_mask``, a boolean ``(num_envs,)`` array selecting which envs to
    reset: the others, seed included, are left as they are.

    Args:
        num_envs: Number of episodes.
        max_episode_steps: Truncation limit (the registry passes 50).
        render_mode: ``None`` or ``"rgb_array"`` (one picture per env).
        array_type: ``"numpy"`` or ``"torch"`` (see above).
        **kwargs: Forwarded to :class:`~synthmatch.envs.core.SynthMatchCore`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 50,
                 render_mode: str | None = None, array_type: str = "numpy", **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if array_type not in ARRAY_TYPES:
            raise ValueError(f"array_type must be one of {ARRAY_TYPES}, got {array_type!r}")
        self.render_mode = render_mode
        self.array_type = array_type
        self.core = SynthMatchCore(num_envs, max_episode_steps=max_episode_steps, **kwargs)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = make_spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.param_names = self.core.synth.params.names
        self._target_host: np.ndarray | None = None  # numpy target_mel, replaced at resets

    @property
    def device(self) -> torch.device:
        return self.core.device

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict | None = None):
        if options is not None and not isinstance(options, dict):
            raise ValueError(f"options must be a dict, got {type(options).__name__}")
        per_env_seeds(seed, self.num_envs)  # refuse a bad seed before anything changes
        super().reset(seed=seed if isinstance(seed, int) and seed < 2**63 else None)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        idx = np.arange(self.num_envs) if mask is None else np.flatnonzero(
            self._check_mask(mask))
        self.core.seed(seed, idx)
        self.core.reset_envs(torch.as_tensor(idx), options)
        obs, info = self.core.observation(), self._info_tensors()
        if self.array_type == "torch":
            return dict(obs), info
        host = to_numpy({**obs, **info})
        self._target_host = host.pop("target_mel")
        return self._split_host(host)

    def _check_mask(self, mask) -> np.ndarray:
        if isinstance(mask, Tensor):
            mask = mask.cpu().numpy()
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
        return mask

    def step(self, actions):
        if self.core.target_features is None:
            raise RuntimeError("call reset() before step()")
        t = self.core.step_autoreset(actions)
        obs, info = self.core.observation(), self._info_tensors()
        if self.array_type == "torch":
            idx, keys = t.reset_idx, [k for k in info if not k.startswith("_")]
            if idx.numel():
                info["final_obs"] = {k: v.index_put((idx,), t.final_obs[k])
                                     for k, v in obs.items()}
                info["final_info"] = {k: info[k].index_put((idx,), t.final_info[k])
                                      for k in keys}
            else:
                info["final_obs"], info["final_info"] = dict(obs), {k: info[k] for k in keys}
            info["_final_obs"] = info["_final_info"] = t.terminated | t.truncated
            return dict(obs), t.reward, t.terminated, t.truncated, info

        fields = {k: v for k, v in obs.items() if k != "target_mel"}
        fields.update(info, reward=t.reward, terminated=t.terminated, truncated=t.truncated)
        k = t.reset_idx.numel()
        if k:  # the ended episodes' last values and the new targets travel in the same copy
            fields.update({f"final_obs.{key}": v for key, v in t.final_obs.items()})
            fields.update({f"final_info.{key}": v for key, v in t.final_info.items()})
            fields["new_target_mel"] = obs["target_mel"][t.reset_idx]
            fields["reset_idx"] = t.reset_idx.to(torch.float32)
        host = to_numpy(fields)
        reward, terminated, truncated = (host.pop(key) for key in
                                         ("reward", "terminated", "truncated"))
        finals = None
        if k:
            idx = host.pop("reset_idx").astype(np.int64)
            self._target_host = self._target_host.copy()  # earlier observations stay intact
            self._target_host[idx] = host.pop("new_target_mel")
            finals = {part: {key.split(".", 1)[1]: host.pop(key) for key in list(host)
                             if key.startswith(part + ".")}
                      for part in ("final_obs", "final_info")}
        obs_np, info_np = self._split_host(host)
        info_np["_final_obs"] = info_np["_final_info"] = terminated | truncated
        if finals is not None:
            info_np["final_obs"] = self._scatter(finals["final_obs"], idx)
            info_np["final_info"] = self._scatter(finals["final_info"], idx)
        return obs_np, reward, terminated, truncated, info_np

    def _info_tensors(self) -> dict[str, Tensor]:
        info = dict(self.core.info())
        ones = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        masks = {f"_{key}": ones for key in info}
        masks["_param_mae"] = ~torch.isnan(info["param_mae"])
        return {**info, **masks}

    def _split_host(self, host: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """Host arrays (no target_mel) -> observation (with the cached target) and info."""
        obs = {"target_mel": self._target_host}
        obs.update((key, host.pop(key)) for key in self.single_observation_space.spaces
                   if key != "target_mel")
        return obs, host

    def _scatter(self, rows: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """Per-env dicts for the envs in ``idx`` in an object array (None elsewhere)."""
        out = np.full(self.num_envs, None, dtype=object)
        for j, i in enumerate(idx):
            out[i] = {key: v[j] for key, v in rows.items()}
        return out

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        obs = to_numpy({k: v for k, v in self.core.observation().items() if k != "params"})
        return [side_by_side(t, c) for t, c in zip(obs["target_mel"], obs["current_mel"],
                                                   strict=True)]
