"""A conditional flow-matching prior from a target's mel spectrogram to synth parameters.

The model learns the distribution of normalised parameters ``u`` in ``[0, 1]^P`` given the
log-mel spectrogram of the sound they make. Training regresses a velocity field on the
conditional optimal-transport path of Meta's ``flow_matching`` (``x_t = t x_1 + (1 - t) x_0``
from Gaussian noise ``x_0`` to the parameters ``x_1 = 2u - 1``); sampling integrates it from
noise with the library's ``ODESolver``. Samples are clipped to ``[0, 1]`` and discrete
parameters snapped to their choices, so every sample is a valid preset.

The two networks are this project's own: :class:`MelEncoder`, a small convolutional network
over the normalised log-mel, and :class:`VelocityNet`, a residual MLP over the parameter
vector whose blocks are modulated (FiLM) by the audio embedding and the flow time.

Example:
    >>> prior = FlowPrior.load("runs/prior/.../prior.pt")
    >>> u = prior.sample_audio(target_audio, k=16)      # (B, 16, P) candidate presets
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from flow_matching.path import CondOTProbPath
from flow_matching.solver import ODESolver
from torch import Tensor, nn

from synthmatch.fileio import load_weights
from synthmatch.rewards.features import LogMelSpectrogram

# Checkpoint format: bump when the saved layout changes incompatibly.
CHECKPOINT_FORMAT = 1
# Log-mel values below this (dB) are treated as silence before normalisation.
MEL_FLOOR_DB = -100.0
# Noise scale s of the SDE sampler (diffusion s * sqrt(1 - t)): the policy gradient's default.
SDE_NOISE = 0.7


@dataclass
class PriorConfig:
    """Everything needed to rebuild a prior: data description and network sizes.

    Only plain Python types, so a checkpoint holding ``asdict(config)`` loads with
    ``torch.load(..., weights_only=True)``.
    """

    param_names: list[str]
    choice_steps: list[int]  # per parameter: number of choices - 1, or 0 for continuous
    mel_shape: list[int]  # (n_mels, frames)
    sample_rate: int
    num_samples: int
    mel_settings: dict[str, Any]  # LogMelSpectrogram keyword arguments
    mel_mean: list[float]  # per mel band (dB), for normalisation
    mel_std: list[float]
    data: dict[str, Any] = field(default_factory=dict)  # the dataset's config (to re-render)
    embed_dim: int = 256
    hidden: int = 256
    depth: int = 4
    time_dim: int = 64
    channels: list[int] = field(default_factory=lambda: [128, 128, 128])

    def __post_init__(self) -> None:
        p = len(self.param_names)
        if p == 0:
            raise ValueError("a prior needs at least one parameter")
        if len(self.choice_steps) != p:
            raise ValueError(f"choice_steps has {len(self.choice_steps)} entries for {p} params")
        if len(self.mel_shape) != 2 or min(self.mel_shape) < 1:
            raise ValueError(f"mel_shape must be (n_mels, frames), got {self.mel_shape}")
        if not len(self.mel_mean) == len(self.mel_std) == self.mel_shape[0]:
            raise ValueError("mel_mean and mel_std need one value per mel band")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PriorConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown prior config fields {sorted(unknown)}")
        return cls(**d)

    @property
    def num_params(self) -> int:
        return len(self.param_names)


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features of flow times ``t`` ``(B,)`` in ``[0, 1]``: ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), half, device=t.device))
    angles = t.reshape(-1, 1).float() * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class MelEncoder(nn.Module):
    """Normalised log-mel ``(B, n_mels, frames)`` -> embedding ``(B, embed_dim)``.

    Mel bands are the channels of stride-2 convolutions along time (each layer halves the
    frames), followed by a two-layer head over the flattened map, so the embedding keeps where
    in pitch and time the energy lies.
    """

    def __init__(self, mel_shape: tuple[int, int], embed_dim: int, channels: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = mel_shape[0]
        for c_out in channels:
            layers += [nn.Conv1d(c_in, c_out, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, *mel_shape)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, embed_dim), nn.SiLU(),
                                  nn.Linear(embed_dim, embed_dim))

    def forward(self, mel: Tensor) -> Tensor:
        return self.head(self.conv(mel))


class FiLMBlock(nn.Module):
    """Pre-norm residual MLP block whose normalised input is scaled and shifted by ``cond``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(),
                                 nn.Linear(2 * hidden, hidden))
        nn.init.zeros_(self.mlp[-1].weight)  # each block starts as the identity
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1.0 + scale) + shift)


class VelocityNet(nn.Module):
    """Velocity ``v(x_t, t | audio embedding)``: ``(B, P)``, ``(B,)``, ``(B, E)`` -> ``(B, P)``."""

    def __init__(self, num_params: int, embed_dim: int, hidden: int, depth: int,
                 time_dim: int):
        super().__init__()
        self.time_dim = time_dim
        self.inp = nn.Linear(num_params, hidden)
        self.cond = nn.Sequential(nn.Linear(embed_dim + time_dim, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden), nn.SiLU())
        self.blocks = nn.ModuleList(FiLMBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_params))

    def forward(self, x: Tensor, t: Tensor, embedding: Tensor) -> Tensor:
        cond = self.cond(torch.cat([embedding, time_embedding(t, self.time_dim)], dim=-1))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)


class _SolverModel(nn.Module):
    """Adapter for ``ODESolver``: it calls ``model(x=, t=, **extras)`` with a 0-d ``t``."""

    def __init__(self, velocity: VelocityNet):
        super().__init__()
        self.velocity = velocity

    def forward(self, x: Tensor, t: Tensor, embedding: Tensor) -> Tensor:
        return self.velocity(x, t.reshape(-1).expand(x.shape[0]), embedding)


class FlowPrior(nn.Module):
    """Conditional flow-matching prior ``p(u | log-mel)`` over normalised synth parameters.

    Args:
        config: Data description and sizes (:class:`PriorConfig`).
    """

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        # How finetune_prior.py made it (settings, plain types), or None for a prior trained
        # on synthetic data alone; set from the checkpoint on loading.
        self.finetuned: dict[str, Any] | None = None
        self.encoder = MelEncoder(tuple(config.mel_shape), config.embed_dim, config.channels)
        self.velocity = VelocityNet(config.num_params, config.embed_dim, config.hidden,
                                    config.depth, config.time_dim)
        self.log_mel = LogMelSpectrogram(config.sample_rate, **config.mel_settings)
        self.path = CondOTProbPath()
        self.register_buffer("mel_mean", torch.tensor(config.mel_mean).reshape(-1, 1),
                             persistent=False)
        self.register_buffer("mel_std", torch.tensor(config.mel_std).clamp_min(1e-3)
                             .reshape(-1, 1), persistent=False)
        self.register_buffer("choice_steps", torch.tensor(config.choice_steps,
                                                          dtype=torch.float32),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mel_mean.device

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.config.param_names)

    # ------------------------------------------------------------------ conditioning
    def mel(self, audio: Tensor) -> Tensor:
        """Log-mel ``(B, n_mels, frames)`` of ``(B, T)`` audio, as the training data has it.

        Raises:
            ValueError: ``audio`` does not have the prior's length.
        """
        if audio.ndim != 2 or audio.shape[1] != self.config.num_samples:
            raise ValueError(f"audio must have shape (B, {self.config.num_samples}) (the "
                             f"prior's {self.config.sample_rate} Hz render length), got "
                             f"{tuple(audio.shape)}")
        return self.log_mel(audio.to(self.device, torch.float32))

    def embed(self, mel_db: Tensor) -> Tensor:
        """Audio embedding ``(B, E)`` of log-mel ``(B, n_mels, frames)`` in dB."""
        if tuple(mel_db.shape[1:]) != tuple(self.config.mel_shape):
            raise ValueError(f"mel must have shape (B, {self.config.mel_shape[0]}, "
                             f"{self.config.mel_shape[1]}), got {tuple(mel_db.shape)}")
        return self.encoder(self.normalize_mel(mel_db.to(self.device, torch.float32)))

    def normalize_mel(self, mel_db: Tensor) -> Tensor:
        """The encoder's input: log-mel floored at -100 dB, standardised per band with the
        training data's statistics."""
        return (mel_db.clamp_min(MEL_FLOOR_DB) - self.mel_mean) / self.mel_std

    # ------------------------------------------------------------------ training
    def loss(self, params: Tensor, mel_db: Tensor, generator: torch.Generator | None = None,
             *, teacher: FlowPrior | None = None, taught: Tensor | None = None) -> Tensor:
        """Conditional flow-matching loss of a batch: mean squared velocity error.

        Args:
            params: ``(B, P)`` normalised target parameters.
            mel_db: ``(B, n_mels, frames)`` their log-mel in dB.
            generator: Draws the noise and times (on the prior's device).
            teacher: Another prior whose velocity field is the regression target of the
                ``taught`` rows (distillation at the same points of the same paths: a
                low-variance pull towards the teacher's whole conditional flow, where the
                data's target ``x1 - x0`` matches it only in expectation).
            taught: ``(B,)`` boolean mask of the rows regressed on ``teacher`` (default: all).
        """
        x1 = params.to(self.device, torch.float32) * 2.0 - 1.0
        x0 = torch.randn(x1.shape, generator=generator, device=self.device)
        t = torch.rand(x1.shape[0], generator=generator, device=self.device)
        path = self.path.sample(x_0=x0, x_1=x1, t=t)
        v = self.velocity(path.x_t, path.t, self.embed(mel_db))
        target = path.dx_t
        if teacher is not None:
            if taught is None:
                taught = torch.ones(x1.shape[0], dtype=torch.bool, device=self.device)
            with torch.no_grad():
                taught_v = teacher.velocity(path.x_t[taught], path.t[taught],
                                            teacher.embed(mel_db[taught]))
            target = target.clone()
            target[taught] = taught_v
        return F.mse_loss(v, target)

    # ------------------------------------------------------------------ sampling
    def to_unit(self, x: Tensor) -> Tensor:
        """Flow space -> valid normalised presets: clip to ``[0, 1]``, snap discrete columns."""
        u = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
        steps = self.choice_steps.to(u.device)
        snapped = torch.round(u * steps.clamp_min(1.0)) / steps.clamp_min(1.0)
        return torch.where(steps > 0, snapped, u)

    def sample_flow(self, embedding: Tensor, noise: Tensor, steps: int = 16,
                    method: str = "midpoint", enable_grad: bool = False) -> Tensor:
        """Integrate the flow from ``noise`` ``(B, P)`` given embeddings ``(B, E)``: the
        unclipped flow-space end point ``(B, P)``. With ``enable_grad`` the end point is
        differentiable in the weights and the embeddings (backpropagation through the
        sampler, as a reward gradient needs)."""
        solver = ODESolver(velocity_model=_SolverModel(self.velocity))
        return solver.sample(x_init=noise, step_size=1.0 / steps, method=method,
                             enable_grad=enable_grad, embedding=embedding)

    @torch.no_grad()
    def sample(self, mel_db: Tensor, k: int = 1, *, steps: int = 16, method: str = "midpoint",
               generator: torch.Generator | None = None, temperature: float = 1.0,
               sde_noise: float = SDE_NOISE) -> Tensor:
        """``k`` candidate presets per target log-mel: ``(B, k, P)`` in ``[0, 1]``.

        Args:
            mel_db: ``(B, n_mels, frames)`` log-mel in dB (see :meth:`mel`).
            k: Candidates per target.
            steps: ODE steps (``midpoint`` costs two network calls per step), or SDE steps.
            method: ``ODESolver`` method (``euler``, ``midpoint``...), or ``sde``: the SDE
                with the flow's marginals (:func:`sde_rollout`), the sampler that
                policy-gradient fine-tuning trains.
            generator: Draws the starting noise (on the prior's device), and the SDE's.
            temperature: Scales the starting noise: above 1 spreads the samples wider than
                the learned distribution, 0 gives one deterministic sample per target.
            sde_noise: The SDE's noise scale ``s`` (``method="sde"`` only).
        """
        if k < 1 or steps < 1:
            raise ValueError(f"need k >= 1 and steps >= 1, got k={k}, steps={steps}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        was_training = self.training
        self.eval()
        embedding = self.embed(mel_db).repeat_interleave(k, dim=0)
        noise = temperature * self.draw_noise(embedding.shape[0], generator)
        if method == "sde":
            end = sde_rollout(self, embedding, steps, sde_noise, generator, start=noise,
                              end_only=True)
            u = self.to_unit(end)
        else:
            u = self.decode(embedding, noise, steps=steps, method=method)
        self.train(was_training)
        return u.reshape(-1, k, self.config.num_params)

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, P)`` starting noise of the flow, as :meth:`sample` draws it."""
        return torch.randn(n, self.config.num_params, generator=generator, device=self.device)

    @torch.no_grad()
    def decode(self, embedding: Tensor, noise: Tensor, *, steps: int = 16,
               method: str = "midpoint") -> Tensor:
        """Valid presets ``(B, P)`` in ``[0, 1]`` the flow carries ``noise`` ``(B, P)`` to,
        given embeddings ``(B, E)``: a deterministic map, so a search may move the noise."""
        was_training = self.training
        self.eval()
        x = self.sample_flow(embedding, noise, steps, method)
        self.train(was_training)
        return self.to_unit(x)

    @torch.no_grad()
    def sample_audio(self, audio: Tensor, k: int = 1, **kwargs) -> Tensor:
        """:meth:`sample` from ``(B, T)`` audio at the prior's sample rate and length."""
        return self.sample(self.mel(audio), k, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        """A ``torch.save``-able dict of plain types and tensors (``weights_only`` loads it)."""
        return {"format": CHECKPOINT_FORMAT, "config": asdict(self.config),
                "model": self.state_dict(), **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> FlowPrior:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported prior checkpoint format {ckpt.get('format')!r} "
                             f"(this version reads {CHECKPOINT_FORMAT})")
        prior = cls(PriorConfig.from_dict(ckpt["config"]))
        prior.load_state_dict(ckpt["model"])
        prior.finetuned = ckpt.get("finetuned")
        return prior

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> FlowPrior:
        """Load a prior saved by ``experiments/train_prior.py`` (``prior.pt`` or a
        checkpoint), in eval mode on ``device``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a prior checkpoint.
        """
        path = Path(path)
        ckpt = load_weights(path, "prior checkpoint")
        if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
            raise ValueError(f"{path} is not a synthmatch prior checkpoint (expected the "
                             "prior.pt or checkpoints/latest.pt that train_prior.py writes)")
        return cls.from_checkpoint(ckpt).to(device).eval()


# ---------------------------------------------------------------------- the SDE sampler
# The flow's probability path x_t = t x_1 + (1 - t) x_0 has score -(x - t v) / (1 - t), so
# dx = [v - (s^2 / 2)(x - t v)] dt + s sqrt(1 - t) dW has the ODE's marginals for any s (the
# noise scale cancels the score's pole at t = 1). Euler-Maruyama makes each step Gaussian, so
# a trajectory's log-density is exact: the stochastic policy that policy-gradient
# fine-tuning (agents/prior_finetune.py) trains, and what ``FlowPrior.sample(method="sde")``
# draws from.

def flow_score(prior: FlowPrior, x: Tensor, t: Tensor, embedding: Tensor) -> Tensor:
    """``(B, P)`` score of the prior's posterior noised to times ``t`` ``(B,)`` (all below 1)
    at flow-space points ``x`` ``(B, P)``: ``(t v - x) / (1 - t)``, one call of the velocity
    net."""
    v = prior.velocity(x, t, embedding)
    return (t[:, None] * v - x) / (1.0 - t)[:, None]


def sde_mean(prior: FlowPrior, x: Tensor, t: Tensor, embedding: Tensor, h: float,
             noise: float) -> Tensor:
    """The mean of one Euler-Maruyama step of length ``h`` of the prior's marginal-preserving
    SDE from ``x`` ``(B, P)`` at times ``t`` ``(B,)``: ``x + h (v - noise^2 / 2 (x - t v))``."""
    v = prior.velocity(x, t, embedding)
    return x + h * (v - 0.5 * noise ** 2 * (x - t[:, None] * v))


def sde_std(t: Tensor, h: float, noise: float) -> Tensor:
    """``(B, 1)`` standard deviation of that step: ``noise * sqrt((1 - t) h)``."""
    return (noise * torch.sqrt((1.0 - t) * h))[:, None]


@torch.no_grad()
def sde_rollout(prior: FlowPrior, embedding: Tensor, steps: int, noise: float,
                generator: torch.Generator | None, start: Tensor | None = None,
                end_only: bool = False) -> Tensor:
    """Trajectories ``(B, steps + 1, P)`` of the SDE from Gaussian noise (row 0: ``start``, or
    drawn from ``generator``) to its end point (row ``steps``, flow space), one per embedding
    ``(B, E)``; with ``end_only``, just the end points ``(B, P)`` (a sampler needs no more)."""
    x = prior.draw_noise(embedding.shape[0], generator) if start is None else start
    h = 1.0 / steps
    states = [x]
    for i in range(steps):
        t = torch.full((x.shape[0],), i * h, device=x.device)
        x = (sde_mean(prior, x, t, embedding, h, noise) + sde_std(t, h, noise)
             * torch.randn(x.shape, generator=generator, device=x.device))
        if not end_only:
            states.append(x)
    return x if end_only else torch.stack(states, dim=1)
