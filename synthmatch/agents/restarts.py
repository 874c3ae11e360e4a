"""Gradient descent from the prior's samples, with a policy that decides when to restart.

Adam through the perceptual distance, started from the prior's best sample, is the strongest
refiner on the differentiable synths (``prior+gradient`` on the leaderboard), but it settles in
local minima: a partial slightly off its target's frequency gets no gradient towards it, and
discrete parameters get none at all. ``prior+gradient`` restarts from the next-best sample
every 100 steps whatever happens, so renders past a minimum are wasted and a good basin may be
left too soon. When to restart is a sequential decision with a delayed payoff: a stopping
problem, which is what RL is for and a gradient cannot learn.

:class:`RestartingAdam` is the mechanism, written once for training and for the leaderboard:
Adam on ``B`` presets at once with per-target restarts, and the observation a restart policy
reads. :class:`RestartEnv` is the training env, a Stable-Baselines3 ``VecEnv``: each step
renders every target's current preset once (with its gradient), the action is restart (1) or
go on (0), and the reward is the drop of the log of the best distance so far. The
observation holds only distances and counts, nothing about the synth, so a policy's decisions
mean the same on any differentiable synth.
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

# Adam's constants (torch's defaults).
BETAS = (0.9, 0.999)
EPS = 1e-8
# A run (the steps since its start) has stalled while its best improves by less than this
# fraction per step.
STALL_TOLERANCE = 0.005
# Distances are floored here before the log (a perfect match would be -inf).
MIN_DISTANCE = 1e-4
# The policy's hidden layers (SB3's default MLP size for PPO).
NET_ARCH = (64, 64)
# Probability of a restart at every step before training (the bias of the action logits):
# a coin flip would restart every other render and teach the policy only to stop doing that.
INITIAL_RESTART_PROBABILITY = 0.05
OBS_NAMES = ("log10 best", "log run best / best", "log distance / run best", "run steps / 100",
             "stalled steps / 10", "log run best / 5 steps ago", "log next start / best",
             "next start / K")


def observation_space() -> gym.spaces.Box:
    """The space of :meth:`RestartingAdam.observation` rows, for the env and the policy."""
    return gym.spaces.Box(-np.inf, np.inf, (len(OBS_NAMES),), np.float32)


def _log(x: Tensor) -> Tensor:
    return x.clamp_min(MIN_DISTANCE).log()


class RestartingAdam:
    """Adam on every target's preset at once, restarted per target on request.

    The starts are each target's samples sorted from closest to farthest (their renders are
    already counted); restart ``r`` of a target goes to its sample ``r mod K``, so the first
    run starts from the best sample, as ``prior+gradient``'s does. Past the K-th, Adam from
    the same start would repeat an earlier run exactly, so with ``redraw`` restart ``r >= K``
    goes instead to sample ``r mod K`` of ``redraw(r // K)``, fresh and unranked (the
    observation's "next start" stays the first K's). Each step the caller renders :attr:`u`
    with its gradient, hands both to :meth:`record`, then calls :meth:`advance`. Without
    restarts this is ``torch.optim.Adam`` projected onto ``[0, 1]``.

    Args:
        starts: ``(B, K, P)`` samples, each target's sorted by ``start_distance``.
        start_distance: ``(B, K)`` their distances, ascending.
        lr: Adam's step size.
        redraw: ``cycle -> (B, K, P)`` fresh samples for every target (called once per cycle
            ``1, 2, ...`` some target reaches); ``None`` cycles back through ``starts``.
    """

    def __init__(self, starts: Tensor, start_distance: Tensor, lr: float,
                 redraw: Callable[[int], Tensor] | None = None):
        self.restarts = torch.zeros(starts.shape[0], dtype=torch.long, device=starts.device)
        self.starts, self.start_distance, self.lr = starts, start_distance, lr
        self.redraw, self.drawn = redraw, {}
        b, self.k, _ = starts.shape
        device = starts.device
        self.start_index = torch.zeros(b, dtype=torch.long, device=device)
        self.best = start_distance[:, 0].clone()
        self.u = starts[:, 0].clone()
        self.grad = torch.zeros_like(self.u)
        self.distance = self.best.clone()
        # Adam's moments and step count, and the current run's statistics (reset by _begin):
        # its best, renders, renders since it last improved, and its best over the last six.
        self.m, self.v = torch.zeros_like(self.u), torch.zeros_like(self.u)
        self.t = torch.zeros(b, device=device)
        self.run_best = torch.full((b,), math.inf, device=device)
        self.run_steps, self.stalled = torch.zeros(b, device=device), torch.zeros(b, device=device)
        self.recent = torch.full((b, 6), math.inf, device=device)

    def _begin(self, rows: Tensor) -> None:
        """Fresh Adam moments and run statistics for ``rows``."""
        self.m[rows], self.v[rows], self.t[rows] = 0.0, 0.0, 0.0
        self.run_best[rows], self.run_steps[rows], self.stalled[rows] = math.inf, 0.0, 0.0
        self.recent[rows] = math.inf

    def record(self, distance: Tensor, grad: Tensor) -> None:
        """The distance ``(B,)`` and gradient ``(B, P)`` of the render of :attr:`u`."""
        distance, grad = distance.detach(), grad.detach()
        self.distance, self.grad = distance, grad
        improved = distance < self.run_best * (1.0 - STALL_TOLERANCE)
        self.stalled = torch.where(improved, torch.zeros_like(self.stalled), self.stalled + 1)
        self.run_best = torch.minimum(self.run_best, distance)
        self.best = torch.minimum(self.best, distance)
        self.run_steps += 1
        self.recent = torch.cat([self.recent[:, 1:], self.run_best[:, None]], dim=1)

    def advance(self, restart: Tensor) -> None:
        """Take Adam's step where ``restart`` ``(B,)`` is false; elsewhere go to the next
        start with fresh moments."""
        b1, b2 = BETAS
        self.t += 1
        self.m = b1 * self.m + (1 - b1) * self.grad
        self.v = b2 * self.v + (1 - b2) * self.grad * self.grad
        step_size = self.lr / (1 - b1 ** self.t)
        denom = self.v.sqrt() / (1 - b2 ** self.t).sqrt()[:, None] + EPS
        stepped = (self.u - step_size[:, None] * self.m / denom).clamp(0.0, 1.0)
        restart = restart.to(self.u.device).bool()
        self.start_index = torch.where(restart, self.start_index + 1, self.start_index)
        self.restarts += restart.long()
        rows = torch.arange(self.u.shape[0], device=self.u.device)
        fresh = self.starts[rows, self.start_index % self.k]
        if self.redraw is not None:
            cycle = self.start_index // self.k
            for c in cycle[restart & (cycle > 0)].unique().tolist():
                if c not in self.drawn:
                    self.drawn[c] = self.redraw(c).to(self.u)
                take = restart & (cycle == c)
                fresh[take] = self.drawn[c][rows[take], self.start_index[take] % self.k]
        self.u = torch.where(restart[:, None], fresh, stepped)
        if restart.any():
            self._begin(restart)

    def observation(self) -> Tensor:
        """``(B, len(OBS_NAMES))``: what a restart policy reads, after :meth:`record`."""
        rows = torch.arange(self.u.shape[0], device=self.u.device)
        following = self.start_distance[rows, (self.start_index + 1) % self.k]
        five_ago = torch.where(self.recent[:, 0].isinf(), self.recent[:, -1], self.recent[:, 0])
        return torch.stack([
            _log(self.best) / math.log(10),
            _log(self.run_best) - _log(self.best),
            _log(self.distance) - _log(self.run_best),
            self.run_steps.clamp(max=300) / 100,
            self.stalled.clamp(max=50) / 10,
            _log(self.run_best) - _log(five_ago),
            _log(following) - _log(self.best),
            ((self.start_index + 1) % self.k).float() / self.k,
        ], dim=1).float()


def render_with_grad(render: Callable[[Tensor], Tensor], u: Tensor) -> tuple[Tensor, Tensor]:
    """``render(x)`` ``(B,)`` distances of presets ``x`` ``(B, P)`` through an autograd graph;
    returns the distances and their gradients with respect to ``u``."""
    x = u.detach().clone().requires_grad_(True)
    d = render(x)
    (grad,) = torch.autograd.grad(d.sum(), x)
    return d.detach(), grad


class PatienceRule:
    """The untrained control: restart once a run has stalled for ``patience`` steps."""

    def __init__(self, patience: int):
        self.patience = patience

    def __call__(self, search: RestartingAdam) -> Tensor:
        return search.stalled >= self.patience


class RestartEnv(SearchVecEnv):
    """Training env of a restart policy: ``num_envs`` targets searched at once.

    An episode draws a random preset of ``synth`` per env as the target (seeds from
    ``seed``), draws ``k`` samples of ``sample_starts`` (the prior) for it, renders and sorts
    them, and runs :class:`RestartingAdam` for ``episode_steps`` renders. All envs start and
    end their episodes together (the steps are renders, one each). Reward: the drop of the
    log of each target's best distance so far.

    Args:
        synth: A differentiable synth.
        sample_starts: ``(target_audio (B, T), k, generator) -> (B, k, P)`` samples.
        num_envs: Targets per batch.
        k: Samples per target (the first run starts from the best).
        lr: Adam's step size.
        episode_steps: Renders per episode after the samples.
        seed: Seed of the targets and samples.
    """

    def __init__(self, synth: Synth, sample_starts: Callable[..., Tensor], num_envs: int,
                 k: int, lr: float, episode_steps: int, seed: int):
        if not synth.differentiable:
            raise ValueError(f"the {synth.name} synth is not differentiable: restarts steer "
                             "gradient descent")
        super().__init__(num_envs, observation_space(), gym.spaces.Discrete(2), synth, seed)
        self.sample_starts = sample_starts
        self.k, self.lr, self.episode_steps = k, lr, episode_steps
        self.search: RestartingAdam | None = None

    def _score(self, x: Tensor) -> Tensor:
        return self.distance.distance(self.distance.features(self.synth.render(x)),
                                      self.target)

    def reset(self) -> np.ndarray:
        audio = self.draw_targets()
        with torch.no_grad():
            starts = self.sample_starts(audio, self.k, self.generator)
            d = score_candidates(self.synth, self.distance, audio, starts,
                                 target_features=self.target)
        order = d.argsort(1)
        starts = starts.gather(1, order[..., None].expand_as(starts))
        self.search = RestartingAdam(starts, d.gather(1, order), self.lr)
        self.steps = 0
        self._render()
        return self.search.observation().cpu().numpy()

    def _render(self) -> None:
        self.search.record(*render_with_grad(self._score, self.search.u))

    def step_wait(self):
        actions = self.take_actions()
        before = _log(self.search.best)
        self.search.advance(torch.as_tensor(actions.reshape(-1) == 1))
        self._render()
        self.steps += 1
        reward = (before - _log(self.search.best)).cpu().numpy().astype(np.float32)
        return self.finish_step(self.search.observation().cpu().numpy(), reward,
                                self.search.best.cpu(), self.steps >= self.episode_steps)

    def episode_info(self) -> dict[str, list[Any]]:
        return {"restarts": self.search.restarts.cpu().tolist()}


@dataclass
class RestartSettings:
    """Settings of a restart-policy run (tyro turns the field docstrings into ``--help``)."""

    prior: str = "runs/prior/subtractive/prior.pt"
    """the prior whose samples the searches start from (prior.pt of train_prior.py); its
    synth must be differentiable (subtractive or FM)"""
    total_timesteps: int = 100_000
    """renders to train on (every env renders once per step)"""
    num_envs: int = 64
    """targets searched at once: random presets of the prior's synth (seeds from --seed, no
    suite's or held-out seed)"""
    k: int = 16
    """prior samples per target, rendered first (the first run starts from the best)"""
    episode_steps: int = 184
    """renders per episode after the samples (200 renders per target in all)"""
    lr: float = 0.01
    """Adam's step size: prior+gradient's, tuned on validation targets (the leaderboard's
    PRIOR_GRADIENT_LR)"""
    n_steps: int = 46
    """steps per env in each PPO rollout"""
    gamma: float = 0.98
    """discount: a restart pays off over tens of renders"""
    ent_coef: float = 0.01
    """PPO's entropy bonus"""
    learning_rate: float = 3e-4
    """PPO's learning rate"""
    seed: int = 0
    """seed of the targets, the prior's samples and the policy"""
    device: str = "cpu"
    """cpu or cuda"""
    log_dir: str = "runs/restarts"
    """parent directory of the runs"""
    run_name: str | None = None
    """run directory name (default: the prior's run name, seed and time)"""


def check_settings(s: RestartSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written."""
    if not s.lr > 0:
        raise ValueError(f"--lr must be positive, got {s.lr}")
    check_search_settings(s)


def prior_starts(prior: FlowPrior, synth: Synth) -> Callable[..., Tensor]:
    """``sample_starts`` of :class:`RestartEnv`: the prior's samples in the synth's columns."""
    columns = check_compatible(prior, synth)

    def sample(audio: Tensor, k: int, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            u = prior.sample_audio(audio.to(prior.device), k, generator=generator)
        return u[..., columns].to(synth.device)

    return sample


def make_policy(net_arch: tuple[int, ...] = NET_ARCH) -> ActorCriticPolicy:
    """The policy network: SB3's actor-critic MLP over the observation, two actions."""
    return ActorCriticPolicy(observation_space(), gym.spaces.Discrete(2), lambda _: 0.0,
                             net_arch=list(net_arch))


def save_policy(policy: ActorCriticPolicy, path: Path, settings: RestartSettings,
                timesteps: int) -> None:
    """The policy's weights with the settings it was trained with (plain tensors and JSON:
    nothing in the file runs when it is loaded)."""
    save_checkpoint({"kind": "restart_policy", "state_dict": policy.state_dict(),
                     "settings": asdict(settings), "net_arch": list(NET_ARCH),
                     "timesteps": timesteps, "observation": list(OBS_NAMES)}, path)


def load_policy(path: str | Path) -> tuple[ActorCriticPolicy, dict[str, Any]]:
    """A policy saved by :func:`train_restart_policy` and its checkpoint's other entries."""
    ckpt = load_weights(path, "restart policy")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "restart_policy":
        raise ValueError(f"{path} is not a restart policy (policy.pt of train_restarts.py)")
    if tuple(ckpt["observation"]) != OBS_NAMES:
        raise ValueError(f"{path} reads another observation than this version writes")
    policy = make_policy(tuple(ckpt["net_arch"]))
    policy.load_state_dict(ckpt["state_dict"])
    return policy.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


class LearnedRule:
    """A trained policy as a restart rule: its most likely action."""

    def __init__(self, policy: ActorCriticPolicy):
        self.policy = policy

    @torch.no_grad()
    def __call__(self, search: RestartingAdam) -> Tensor:
        obs = search.observation().to(self.policy.device)
        return self.policy.get_distribution(obs).mode().bool().to(search.u.device)


def train_restart_policy(settings: RestartSettings) -> Path:
    """Train a restart policy with SB3's PPO; returns the run directory, which holds
    ``config.json``, TensorBoard events, ``history.json`` (per episode: the median best
    distance and restarts per target) and ``policy.pt``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    check_settings(settings)
    run_dir, device = open_run(settings)
    prior = FlowPrior.load(settings.prior, device)
    synth = prior_synth(prior, device)
    env = RestartEnv(synth, prior_starts(prior, synth), settings.num_envs, settings.k,
                     settings.lr, settings.episode_steps, settings.seed)
    save_config(run_dir, settings)
    model = PPO("MlpPolicy", VecMonitor(env), n_steps=settings.n_steps,
                batch_size=settings.n_steps * settings.num_envs // 4, gamma=settings.gamma,
                ent_coef=settings.ent_coef, learning_rate=settings.learning_rate,
                policy_kwargs={"net_arch": list(NET_ARCH)}, seed=settings.seed,
                device=device, tensorboard_log=str(run_dir), verbose=0)
    with torch.no_grad():  # the action head starts at zero weights (SB3's gain 0.01)
        model.policy.action_net.bias.copy_(torch.tensor(
            [0.0, math.log(INITIAL_RESTART_PROBABILITY / (1 - INITIAL_RESTART_PROBABILITY))]))
    model.learn(settings.total_timesteps,
                callback=EpisodeLog(run_dir, {"restarts": "restarts_per_target"}),
                tb_log_name="ppo", progress_bar=True)
    save_policy(model.policy, run_dir / "policy.pt", settings, int(model.num_timesteps))
    return run_dir
