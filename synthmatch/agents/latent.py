"""Search in the flow prior's noise space, and a policy trained by PPO that proposes its steps.

The prior carries noise ``z ~ N(0, I)`` to a preset through a deterministic ODE
(:meth:`~synthmatch.agents.prior.FlowPrior.decode`). A step in ``z`` moves the preset along what
the prior learned of the target's posterior: parameters the sound ties together move together,
and the preset stays where the prior puts its mass. A step in the parameter box knows none of
that. On TorchSynth's Voice, where the distance is rugged along the pitch and envelope
parameters and gradient steps are worth little, a (1+1)-ES in ``z`` from the prior's best of 16
beat CMA-ES in the box from the same start on the validation pool (docs/results.md).

:class:`LatentSearch` is the mechanism, written once for training and for the leaderboard: each
target keeps the noise of its closest render so far, starting from the best of ``K`` samples;
every step renders one proposal per target, the kept noise plus a step, and keeps it if it
sounds closer. The untrained rule draws the step from ``SIGMA * N(0, I)`` (``prior+latent-es``).
A policy draws it from a Gaussian whose mean and scale depend on the target's embedding, the
kept noise and the progress (``prior+latent-rl``): a refiner trained by PPO on the reward
alone, in the space where steps already work. Its action head starts at mean 0 (SB3's gain
0.01) and standard deviation ``SIGMA``, so before training it is the untrained rule.
:class:`LatentEnv` is its training env, a Stable-Baselines3 ``VecEnv``. No policy trained so
far has beaten the untrained rule, on validation or on its own training targets
(docs/results.md, "Sixteenth session"). ``prior+latent-cmaes`` runs pycma from the same start
through :meth:`LatentSearch.decode`, a population per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor

from synthmatch.agents.matching import check_compatible, prior_synth
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.prior_training import save_checkpoint
from synthmatch.agents.search import score_candidates
from synthmatch.agents.search_env import (
    EpisodeLog,
    SearchVecEnv,
    check_search_settings,
    open_run,
    save_config,
)
from synthmatch.fileio import load_weights
from synthmatch.synths import Synth

# The untrained rule's step size in noise space, tuned on Voice's validation pool (128
# presets, seeds 31,900,000...): medians at 100 renders 0.430 / 0.417 / 0.451 / 0.540 for
# 0.1 / 0.3 / 0.5 / 1.0. Also the policy's initial standard deviation.
SIGMA = 0.3
# Steps are clipped to this many standard normals per coordinate (SB3 clips to the box).
STEP_BOUND = 3.0
# Distances are floored here before the log (a perfect match would be -inf).
MIN_DISTANCE = 1e-4
# The policy's hidden layers.
NET_ARCH = (256, 256)


def _log(x: Tensor) -> Tensor:
    return x.clamp_min(MIN_DISTANCE).log()


class LatentSearch:
    """A (1+1) search in the prior's noise space for ``B`` targets at once.

    Build one with :meth:`start`. Each step, :meth:`propose` turns a step ``(B, P)`` in noise
    space into presets to render, and :meth:`record` keeps each proposal that sounds closer than
    its target's kept noise.

    Args:
        prior: The flow prior (its noise has ``P`` dimensions, one per prior parameter).
        columns: The synth's parameter columns of the prior's (``check_compatible``).
        embedding: ``(B, E)`` the targets' audio embeddings.
        noise: ``(B, P)`` the kept noise of each target.
        distance: ``(B,)`` its render's distance.
    """

    def __init__(self, prior: FlowPrior, columns: Tensor | list[int], embedding: Tensor,
                 noise: Tensor, distance: Tensor):
        self.prior, self.columns, self.embedding = prior, columns, embedding
        self.z, self.best = noise, distance.to(noise.device)
        self.t = 0
        self.proposed: Tensor | None = None

    @classmethod
    @torch.no_grad()
    def start(cls, prior: FlowPrior, synth: Synth, audio: Tensor, k: int,
              generator: torch.Generator,
              score: Callable[[Tensor], Tensor]) -> LatentSearch:
        """Draw ``k`` samples per target of ``audio`` ``(B, T)`` exactly as
        :meth:`FlowPrior.sample_audio` does with ``generator``, score them with ``score``
        (``(B, k, P_synth)`` presets -> ``(B, k)`` distances) and keep each target's best."""
        columns = check_compatible(prior, synth)
        was_training = prior.training
        prior.eval()
        embedding = prior.embed(prior.mel(audio.to(prior.device)))
        b = embedding.shape[0]
        noise = prior.draw_noise(b * k, generator)
        presets = prior.decode(embedding.repeat_interleave(k, dim=0), noise)
        prior.train(was_training)
        d = score(presets.reshape(b, k, -1)[..., columns].to(synth.device))
        best, pick = d.to(noise.device).min(1)
        kept = noise.reshape(b, k, -1)[torch.arange(b, device=noise.device), pick]
        return cls(prior, columns, embedding, kept, best)

    @torch.no_grad()
    def decode(self, noise: Tensor, owners: Tensor) -> Tensor:
        """Presets ``(M, P_synth)`` of noises ``(M, P)`` for targets ``owners`` ``(M,)``."""
        owners = owners.to(self.embedding.device)
        return self.prior.decode(self.embedding[owners], noise.to(self.z))[..., self.columns]

    def propose(self, step: Tensor) -> Tensor:
        """Presets ``(B, P_synth)`` of the kept noise plus ``step`` ``(B, P)``."""
        self.proposed = self.z + step.to(self.z)
        return self.decode(self.proposed, torch.arange(len(self.z)))

    def record(self, distance: Tensor) -> None:
        """The distances ``(B,)`` of the last proposals' renders: keep the closer ones."""
        if self.proposed is None:
            raise RuntimeError("record() needs a propose() before it")
        distance = distance.detach().to(self.z.device)
        keep = distance < self.best
        self.z = torch.where(keep[:, None], self.proposed, self.z)
        self.best = torch.where(keep, distance, self.best)
        self.proposed, self.t = None, self.t + 1

    def observation(self) -> Tensor:
        """``(B, E + P + 2)``: the embedding, the kept noise, the log10 of the best distance and
        the steps taken / 100 (not a share of the budget: the search is anytime)."""
        progress = torch.full_like(self.best, self.t / 100)
        return torch.cat([self.embedding, self.z, (_log(self.best) / math.log(10))[:, None],
                          progress[:, None]], dim=1).float()


def observation_space(prior: FlowPrior) -> gym.spaces.Box:
    size = prior.config.embed_dim + prior.config.num_params + 2
    return gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)


def action_space(prior: FlowPrior) -> gym.spaces.Box:
    n = prior.config.num_params
    return gym.spaces.Box(-STEP_BOUND, STEP_BOUND, (n,), np.float32)


def make_policy(prior: FlowPrior, net_arch: tuple[int, ...] = NET_ARCH) -> ActorCriticPolicy:
    """The policy: SB3's actor-critic MLP, a diagonal Gaussian whose scale starts at SIGMA."""
    return ActorCriticPolicy(observation_space(prior), action_space(prior), lambda _: 0.0,
                             net_arch=list(net_arch), log_std_init=math.log(SIGMA))


@torch.no_grad()
def policy_step(policy: ActorCriticPolicy, search: LatentSearch,
                generator: torch.Generator) -> Tensor:
    """One step per target sampled from the policy's Gaussian with ``generator``'s normals
    (the policy is a proposal distribution: its mean alone would re-render the kept noise)."""
    dist = policy.get_distribution(search.observation().to(policy.device)).distribution
    normal = torch.randn(dist.mean.shape, generator=generator).to(dist.mean)
    return (dist.mean + dist.stddev * normal).clamp(-STEP_BOUND, STEP_BOUND)


class LatentEnv(SearchVecEnv):
    """Training env of the proposal policy: ``num_envs`` random presets of the prior's synth
    searched at once, one render each per step.

    An episode draws a target per env, renders ``k`` prior samples and keeps the best
    (:meth:`LatentSearch.start`), then runs ``episode_steps`` proposals. Action: the step in
    noise space. Reward: the drop of the log of each target's best distance.
    """

    def __init__(self, synth: Synth, prior: FlowPrior, num_envs: int, k: int,
                 episode_steps: int, seed: int):
        super().__init__(num_envs, observation_space(prior), action_space(prior), synth, seed)
        self.prior, self.k, self.episode_steps = prior, k, episode_steps
        self.search: LatentSearch | None = None

    def _score(self, x: Tensor) -> Tensor:
        return self.distance.distance(self.distance.features(self.synth.render(x)),
                                      self.target)

    def reset(self) -> np.ndarray:
        audio = self.draw_targets()
        self.search = LatentSearch.start(
            self.prior, self.synth, audio, self.k, self.generator,
            lambda u: score_candidates(self.synth, self.distance, audio, u,
                                       target_features=self.target))
        self.steps = 0
        return self.search.observation().cpu().numpy()

    def step_wait(self):
        actions = self.take_actions()
        before = _log(self.search.best)
        with torch.no_grad():
            self.search.record(self._score(self.search.propose(torch.as_tensor(actions))))
        self.steps += 1
        reward = (before - _log(self.search.best)).cpu().numpy().astype(np.float32)
        return self.finish_step(self.search.observation().cpu().numpy(), reward,
                                self.search.best.cpu(), self.steps >= self.episode_steps)


@dataclass
class LatentSettings:
    """Settings of a proposal-policy run (tyro turns the field docstrings into ``--help``)."""

    prior: str = "runs/prior/subtractive/prior.pt"
    """the prior whose noise space the search moves in (prior.pt of train_prior.py)"""
    total_timesteps: int = 100_000
    """renders to train on (every env renders once per step)"""
    num_envs: int = 64
    """targets searched at once: random presets of the prior's synth (seeds from --seed, no
    suite's or held-out seed)"""
    k: int = 16
    """prior samples per target, rendered first (the search starts from the best)"""
    episode_steps: int = 84
    """proposals per episode after the samples (100 renders per target in all)"""
    n_steps: int = 84
    """steps per env in each PPO rollout"""
    gamma: float = 0.98
    """discount"""
    learning_rate: float = 3e-4
    """PPO's learning rate"""
    target_kl: float | None = None
    """stop a PPO update's epochs early once the approximate KL to the rollout's policy passes
    this (SB3's target_kl; None: all 10 epochs)"""
    seed: int = 0
    """seed of the targets, the prior's samples and the policy"""
    device: str = "cpu"
    """cpu or cuda"""
    log_dir: str = "runs/latent"
    """parent directory of the runs"""
    run_name: str | None = None
    """run directory name (default: the prior's run name, seed and time)"""


def check_settings(s: LatentSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written."""
    check_search_settings(s)
    if s.target_kl is not None and not s.target_kl > 0:
        raise ValueError(f"--target-kl must be positive, got {s.target_kl}")


def save_policy(policy: ActorCriticPolicy, path: Path, settings: LatentSettings,
                timesteps: int) -> None:
    """The policy's weights with the settings it was trained with (plain tensors and JSON)."""
    save_checkpoint({"kind": "latent_policy", "state_dict": policy.state_dict(),
                     "settings": asdict(settings), "net_arch": list(NET_ARCH),
                     "timesteps": timesteps}, path)


def load_policy(path: str | Path, prior: FlowPrior) -> tuple[ActorCriticPolicy, dict[str, Any]]:
    """A policy saved by :func:`train_latent_policy` for ``prior``, and its other entries."""
    ckpt = load_weights(path, "latent policy")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "latent_policy":
        raise ValueError(f"{path} is not a latent-search policy (policy.pt of train_latent.py)")
    policy = make_policy(prior, tuple(ckpt["net_arch"]))
    policy.load_state_dict(ckpt["state_dict"])
    return policy.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


def train_latent_policy(settings: LatentSettings) -> Path:
    """Train the proposal policy with SB3's PPO; returns the run directory, which holds
    ``config.json``, TensorBoard events, ``history.json`` (per episode: the median best
    distance and the policy's mean step scale) and ``policy.pt``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    check_settings(settings)
    run_dir, device = open_run(settings)
    prior = FlowPrior.load(settings.prior, device)
    env = LatentEnv(prior_synth(prior, device), prior, settings.num_envs, settings.k,
                    settings.episode_steps, settings.seed)
    save_config(run_dir, settings)
    model = PPO("MlpPolicy", VecMonitor(env), n_steps=settings.n_steps,
                batch_size=settings.n_steps * settings.num_envs // 4, gamma=settings.gamma,
                learning_rate=settings.learning_rate, target_kl=settings.target_kl,
                policy_kwargs={"net_arch": list(NET_ARCH), "log_std_init": math.log(SIGMA)},
                seed=settings.seed, device=device, tensorboard_log=str(run_dir), verbose=0)

    def step_scale() -> float:
        return float(model.policy.log_std.detach().exp().mean())

    model.learn(settings.total_timesteps, callback=EpisodeLog(run_dir, step_scale=step_scale),
                tb_log_name="ppo", progress_bar=True)
    save_policy(model.policy, run_dir / "policy.pt", settings, int(model.num_timesteps))
    return run_dir
