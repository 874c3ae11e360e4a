"""The native Gymnasium vector env: all episodes stepped as one torch batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from synthmatch.envs.core import SynthMatchCore
from synthmatch.envs.drawing import side_by_side
from synthmatch.envs.single import make_spaces


class SynthMatchVectorEnv(VectorEnv):
    """``num_envs`` synth-matching episodes rendered and scored as one batch on ``device``.

    Returned by ``gymnasium.make_vec("SynthMatch-v0", num_envs=N)``; same spaces, rewards and
    options as :class:`~synthmatch.envs.single.SynthMatchEnv`, batched. Env ``i`` seeded with
    ``seed + i`` plays exactly the episodes of a single env seeded with ``seed + i``.

    Autoreset is same-step: when an episode ends, the returned observation already belongs to
    the next episode; the last one is in ``info["final_obs"][i]`` (and its info in
    ``info["final_info"]``), masked by ``info["_final_obs"]``.

    ``reset(options=...)`` takes the single env's options (arrays may carry a leading
    ``num_envs`` axis for per-env targets) plus ``reset_mask``, a boolean ``(num_envs,)`` array
    selecting which envs to reset.

    Args:
        num_envs: Number of episodes.
        max_episode_steps: Truncation limit (the registry passes 50).
        render_mode: ``None`` or ``"rgb_array"`` (one picture per env).
        **kwargs: Forwarded to :class:`~synthmatch.envs.core.SynthMatchCore`.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = 50,
                 render_mode: str | None = None, **kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.core = SynthMatchCore(num_envs, max_episode_steps=max_episode_steps, **kwargs)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = make_spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.param_names = self.core.synth.params.names
        self._seeded = False

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict | None = None):
        super().reset(seed=seed if isinstance(seed, int) else None)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        idx = np.arange(self.num_envs) if mask is None else np.flatnonzero(
            self._check_mask(mask))
        if seed is not None:
            seeds = ([seed + i for i in range(self.num_envs)] if isinstance(seed, int)
                     else list(seed))
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
            self.core.seed(seeds)
        elif not self._seeded:
            self.core.seed([int(s) for s in self.np_random.integers(2**63 - 1,
                                                                    size=self.num_envs)])
        self._seeded = True
        self.core.reset_envs(torch.as_tensor(idx), options)
        return self._obs(), self._info()

    def _check_mask(self, mask) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"reset_mask must be a bool array of shape ({self.num_envs},)")
        return mask

    def step(self, actions):
        result = self.core.step(torch.as_tensor(np.asarray(actions, dtype=np.float32)))
        done = (result.terminated | result.truncated).cpu().numpy()
        infos = self._info()
        if done.any():
            final_obs = self._obs()
            idx = np.flatnonzero(done)
            infos["final_obs"] = self._select(final_obs, idx)
            infos["final_info"] = self._select(self._info(), idx)
            infos["_final_obs"] = infos["_final_info"] = done
            self.core.reset_envs(torch.as_tensor(idx))
        return (self._obs(), result.reward.cpu().numpy(), result.terminated.cpu().numpy(),
                result.truncated.cpu().numpy(), infos)

    def _select(self, batch: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """Per-env dicts for the envs in ``idx``, in an object array (None elsewhere)."""
        out = np.full(self.num_envs, None, dtype=object)
        for i in idx:
            out[i] = {k: v[i] for k, v in batch.items() if not k.startswith("_")}
        return out

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        obs = self._obs()
        return [side_by_side(t, c) for t, c in zip(obs["target_mel"], obs["current_mel"],
                                                   strict=True)]

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in self.core.observation().items()}

    def _info(self) -> dict[str, np.ndarray]:
        info = {k: v.cpu().numpy() for k, v in self.core.info().items()}
        known = ~np.isnan(info["param_mae"])
        masks = {f"_{k}": np.ones(self.num_envs, dtype=bool) for k in info}
        masks["_param_mae"] = known
        return {**info, **masks}
