"""A spectrogram-aware features extractor for Stable-Baselines3 policies on synthmatch envs."""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor, nn


class SpectrogramExtractor(BaseFeaturesExtractor):
    """Small CNN over the target and current log-mels, joined with the parameters.

    The CNN sees three channels: the target, the current sound and their difference (where
    the two spectrograms disagree is what the policy has to act on). It halves the resolution
    three times, pools to a 4 x 4 grid and projects; the parameters pass through a small MLP;
    both are concatenated and projected to ``features_dim``.

    Args:
        observation_space: The env's ``Dict`` space with ``target_mel``, ``current_mel``
            ``(n_mels, frames)`` and ``params`` ``(P,)``.
        features_dim: Size of the output features.
        channels: Output channels of the three convolutions.

    Example:
        >>> PPO("MultiInputPolicy", env,
        ...     policy_kwargs=dict(features_extractor_class=SpectrogramExtractor))
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 256,
                 channels: tuple[int, int, int] = (16, 32, 64)):
        super().__init__(observation_space, features_dim)
        missing = {"target_mel", "current_mel", "params"} - set(observation_space.spaces)
        if missing:
            raise ValueError(f"observation space lacks {sorted(missing)}; SpectrogramExtractor "
                             "expects a synthmatch env's Dict observation")
        c1, c2, c3 = channels
        self.cnn = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(),
        )
        num_params = observation_space["params"].shape[0]
        self.params_mlp = nn.Sequential(nn.Linear(num_params, 64), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(c3 * 16 + 64, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        target, current = observations["target_mel"], observations["current_mel"]
        image = torch.stack([target, current, target - current], dim=1)  # (B, 3, mels, frames)
        joined = torch.cat([self.cnn(image), self.params_mlp(observations["params"])], dim=1)
        return self.head(joined)


class ProfileExtractor(BaseFeaturesExtractor):
    """An MLP over profiles of the spectrograms: cheap enough to train for millions of steps
    on a CPU, and shaped like the decisions a search makes.

    Inputs, concatenated: where in frequency the current sound has too much or too little
    energy (the target-minus-current log-mel averaged over time, ``n_mels``), when in time
    (averaged over frequency, ``frames``), the target's own spectrum (its log-mel averaged over
    time), the parameters, and ``last_step`` when the env has it (``accept="improve"``).

    Args:
        observation_space: A synthmatch env's ``Dict`` observation space.
        features_dim: Size of the output features.
        hidden: Width of the hidden layer.
    """

    def __init__(self, observation_space: spaces.Dict, features_dim: int = 256,
                 hidden: int = 256):
        super().__init__(observation_space, features_dim)
        missing = {"target_mel", "current_mel", "params"} - set(observation_space.spaces)
        if missing:
            raise ValueError(f"observation space lacks {sorted(missing)}; ProfileExtractor "
                             "expects a synthmatch env's Dict observation")
        n_mels, frames = observation_space["target_mel"].shape
        self.memory = "last_step" in observation_space.spaces
        size = 2 * n_mels + frames + observation_space["params"].shape[0]
        if self.memory:
            size += observation_space["last_step"].shape[0]
        self.mlp = nn.Sequential(nn.Linear(size, hidden), nn.ReLU(),
                                 nn.Linear(hidden, features_dim), nn.ReLU())

    def forward(self, observations: dict[str, Tensor]) -> Tensor:
        target, current = observations["target_mel"], observations["current_mel"]
        error = target - current
        parts = [error.mean(2), error.mean(1), target.mean(2), observations["params"]]
        if self.memory:
            parts.append(observations["last_step"])
        return self.mlp(torch.cat(parts, dim=1))


EXTRACTORS = {"cnn": SpectrogramExtractor, "mlp": ProfileExtractor}
