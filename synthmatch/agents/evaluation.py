"""Evaluate a policy on a fixed, seeded set of held-out targets, one episode per target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from synthmatch.envs.core import SynthMatchCore

# Held-out targets are drawn from seeds far from those training runs use (0, 1, 2...).
HELD_OUT_SEED = 1_000_000
# policy(observation dict of (N, ...) numpy arrays) -> (N, P) actions in [-1, 1]
Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class EpisodeResults:
    """Per-target results of one evaluation, each ``(N,)``."""

    initial_distance: np.ndarray
    final_distance: np.ndarray
    best_distance: np.ndarray
    param_mae: np.ndarray
    success: np.ndarray
    renders: np.ndarray  # synth renders used, the starting render included

    def summary(self) -> dict[str, float]:
        """Medians, means and rates as plain floats (JSON-ready)."""
        return {
            "num_targets": int(self.final_distance.shape[0]),
            "median_initial_distance": float(np.median(self.initial_distance)),
            "median_final_distance": float(np.median(self.final_distance)),
            "mean_final_distance": float(np.mean(self.final_distance)),
            "median_best_distance": float(np.median(self.best_distance)),
            "success_rate": float(np.mean(self.success)),
            "median_param_mae": float(np.median(self.param_mae)),
            "mean_param_mae": float(np.mean(self.param_mae)),
            "mean_renders": float(np.mean(self.renders)),
        }


def held_out_presets(synth, n: int, seed: int = HELD_OUT_SEED) -> Tensor:
    """``(n, P)`` random presets of ``synth``, preset ``i`` drawn from seed ``seed + i``: the
    validation targets that evaluation and tuning use (never a benchmark suite's seeds)."""
    return torch.cat([synth.params.sample(1, torch.Generator().manual_seed(seed + i))
                      for i in range(n)])


def evaluate(core: SynthMatchCore, policy: Policy, *, max_steps: int = 50,
             seed: int = HELD_OUT_SEED) -> EpisodeResults:
    """Run one episode per env of ``core`` (env ``i`` seeded ``seed + i``), all in one batch.

    An env stops at success (distance below the threshold) or after ``max_steps``; its final
    values are frozen from then on while the others continue.

    Args:
        core: The batched core; its ``num_envs`` is the number of targets.
        policy: Maps observations to actions for all envs at once.
        max_steps: Episode length (the registry's 50).
        seed: Base seed of the targets.
    """
    n = core.num_envs
    core.seed([seed + i for i in range(n)])
    core.reset_envs(torch.arange(n))
    initial = core.dist.cpu().numpy().copy()
    info = {k: v.cpu().numpy() for k, v in core.info().items()}
    final = {k: info[k].copy() for k in ("distance", "best_distance", "param_mae")}
    success = info["is_success"].copy()
    renders = np.ones(n, dtype=np.int64)
    active = ~success
    for _ in range(max_steps):
        if not active.any():
            break
        obs = {k: v.cpu().numpy() for k, v in core.observation().items()}
        actions = np.asarray(policy(obs), dtype=np.float32)
        # Finished envs keep still: a zero delta (or their own parameters in absolute mode).
        if core.action_mode == "delta":
            actions[~active] = 0.0
        else:
            actions[~active] = obs["params"][~active] * 2.0 - 1.0
        result = core.step(torch.as_tensor(actions))
        info = {k: v.cpu().numpy() for k, v in core.info().items()}
        for key in final:
            final[key][active] = info[key][active]
        renders[active] += 1
        done = result.terminated.cpu().numpy() & active
        success |= done
        active &= ~done
    return EpisodeResults(initial, final["distance"], final["best_distance"],
                          final["param_mae"], success, renders)


def random_policy(action_dim: int, seed: int = 0) -> Policy:
    """Uniform random actions in ``[-1, 1]``: the baseline a learned policy must beat."""
    rng = np.random.default_rng(seed)

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, (obs["params"].shape[0], action_dim)).astype(np.float32)

    return act
