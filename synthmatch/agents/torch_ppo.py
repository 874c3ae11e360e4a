"""PPO's pieces that live on the device, for experiments/ppo_gpu.py: the actor-critic network
(SB3's MultiInputPolicy as train_ppo.py builds it) and generalised advantage estimation over a
same-step-autoreset rollout with truncation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Normal

from synthmatch.agents.extractor import SpectrogramExtractor


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias_const: float = 0.0
               ) -> nn.Module:
    """Orthogonal weights with gain ``std`` and a constant bias (CleanRL's and SB3's init)."""
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """SB3's MultiInputPolicy as train_ppo.py builds it: the spectrogram CNN shared by actor and
    critic, a 64-64 tanh MLP each, a state-independent log std, orthogonal init.

    Actions are Gaussian and clipped to [-1, 1] when stepping, not squashed with tanh: SB3's
    PPO and CleanRL do the same, the log-probabilities stay those of a plain Gaussian (no
    Jacobian term), and the mean can sit at the bounds without vanishing gradients.

    Args:
        observation_space: The env's single ``Dict`` observation space.
        action_dim: Number of parameters the agent moves (P).
        features_dim: Output size of the spectrogram extractor.
        log_std_init: Initial log standard deviation of every action dimension.
    """

    def __init__(self, observation_space: gym.spaces.Dict, action_dim: int, features_dim: int,
                 log_std_init: float):
        super().__init__()
        self.features = SpectrogramExtractor(observation_space, features_dim)
        for module in self.features.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                layer_init(module)

        def mlp(out: int, std: float) -> nn.Sequential:
            return nn.Sequential(layer_init(nn.Linear(features_dim, 64)), nn.Tanh(),
                                 layer_init(nn.Linear(64, 64)), nn.Tanh(),
                                 layer_init(nn.Linear(64, out), std=std))

        self.actor_mean, self.critic = mlp(action_dim, 0.01), mlp(1, 1.0)
        self.actor_logstd = nn.Parameter(torch.full((1, action_dim), float(log_std_init)))

    def get_value(self, obs: dict[str, Tensor]) -> Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def get_action_and_value(self, obs: dict[str, Tensor], action: Tensor | None = None
                             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Action ``(B, P)`` (sampled unless given), its log-probability, entropy, value."""
        hidden = self.features(obs)
        mean = self.actor_mean(hidden)
        # No argument checks: they would make the GPU wait for the host at every step.
        probs = Normal(mean, self.actor_logstd.expand_as(mean).exp(), validate_args=False)
        if action is None:
            action = probs.sample()
        return (action, probs.log_prob(action).sum(1), probs.entropy().sum(1),
                self.critic(hidden).squeeze(-1))


class DeterministicPredictor:
    """The agent's mean action behind SB3's ``predict``, so that the held-out evaluation of
    train_ppo.py (``training.evaluate_model``) scores this agent exactly as an SB3 model."""

    def __init__(self, agent: Agent, device: torch.device, num_timesteps: int):
        self.agent, self.device, self.num_timesteps = agent, device, num_timesteps

    @torch.no_grad()
    def predict(self, obs: dict[str, np.ndarray], deterministic: bool = True):
        batch = {k: torch.as_tensor(v, device=self.device) for k, v in obs.items()}
        mean = self.agent.actor_mean(self.agent.features(batch))
        return mean.clamp(-1.0, 1.0).cpu().numpy(), None


def gae(rewards: Tensor, values: Tensor, terminated: Tensor, truncated: Tensor,
        final_values: Tensor, next_value: Tensor, gamma: float, gae_lambda: float
        ) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates (Schulman et al., 2016) of a same-step-autoreset rollout.

    Step ``t`` of env ``i`` ended its episode if ``terminated[t, i] | truncated[t, i]``; the
    next stored observation then belongs to a new episode. A terminated episode is worth 0 after
    its end; a truncated one is bootstrapped from ``final_values``, the value of its last
    observation (``info["final_obs"]``), folded into the reward as SB3 does.

    Args:
        rewards, values, final_values: ``(T, N)``.
        terminated, truncated: ``(T, N)`` bool.
        next_value: ``(N,)`` value of the observation after the rollout.

    Returns:
        Advantages and returns (advantages + values), each ``(T, N)``.
    """
    rewards = rewards + gamma * torch.where(truncated & ~terminated, final_values, 0.0)
    alive = (~(terminated | truncated)).float()
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        following = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * following * alive[t] - values[t]
        last = delta + gamma * gae_lambda * alive[t] * last
        advantages[t] = last
    return advantages, advantages + values
