"""Using a trained :class:`~synthmatch.agents.prior.FlowPrior`: one-shot matching and
warm-started episodes.

:class:`OneShotMatcher` samples K presets per target, renders them and returns the closest.
:class:`PriorInitializer` is the env-side hook: environments accept any callable from target
audio to starting parameters (``SynthMatchCore.initializer``), so they never import agents;
this one starts each episode from a prior sample (or the best of K).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.search import MatchResult, best_of
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import Synth


def prior_synth(prior: FlowPrior, device: torch.device | str = "cpu") -> Synth:
    """The synth (and parameter subset) the prior's training data was rendered with."""
    from synthmatch.data import DatasetConfig

    if not prior.config.data:
        raise ValueError("this prior records no dataset config; pass the synth explicitly")
    return DatasetConfig.from_dict(prior.config.data).make_synth(device)


def check_compatible(prior: FlowPrior, synth: Synth) -> list[int]:
    """Columns of the prior's parameters that ``synth`` takes, in the synth's order.

    The synth may expose a subset of the prior's parameters (an ``-Easy`` env, say): its
    columns are picked from each sample.

    Raises:
        ValueError: different sample rate or length, or parameters the prior does not know.
    """
    cfg = prior.config
    if (synth.sample_rate, synth.num_samples) != (cfg.sample_rate, cfg.num_samples):
        raise ValueError(f"the prior was trained on {cfg.num_samples} samples at "
                         f"{cfg.sample_rate} Hz, the synth renders {synth.num_samples} at "
                         f"{synth.sample_rate} Hz")
    missing = [n for n in synth.params.names if n not in cfg.param_names]
    if missing:
        raise ValueError(f"the prior does not know parameter(s) {missing}; it was trained on "
                         f"{len(cfg.param_names)} parameters of {cfg.data.get('synth', '?')}")
    return [cfg.param_names.index(n) for n in synth.params.names]


class OneShotMatcher:
    """Match target sounds by rendering ``k`` prior samples each and keeping the closest.

    Args:
        prior: A trained prior (moved to ``device``).
        synth: The synth to render with; default: the one the prior's dataset was made with.
        k: Candidates per target (``k`` renders per target).
        steps: ODE steps per sample.
        device: Where prior, synth and scoring run.
        seed: Seed of the sampling noise.
        temperature: Scale of the sampling noise (:meth:`FlowPrior.sample`).
        method: The sampler (:meth:`FlowPrior.sample`: ``midpoint``, or ``sde``).
    """

    def __init__(self, prior: FlowPrior, synth: Synth | None = None, *, k: int = 16,
                 steps: int = 16, device: torch.device | str = "cpu", seed: int = 0,
                 temperature: float = 1.0, method: str = "midpoint"):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.device = torch.device(device)
        self.prior = prior.to(self.device).eval()
        self.synth = (synth or prior_synth(prior, self.device)).to(self.device)
        self.columns = check_compatible(prior, self.synth)
        self.distance = PerceptualDistance(self.synth.sample_rate).to(self.device)
        self.k = k
        self.steps = steps
        self.temperature = temperature
        self.method = method
        self.generator = torch.Generator(self.device).manual_seed(seed)

    def propose(self, target_audio: Tensor, k: int | None = None) -> Tensor:
        """``(B, k, P)`` prior samples for ``(B, T)`` targets, in the synth's columns."""
        u = self.prior.sample_audio(target_audio.to(self.device), k or self.k, steps=self.steps,
                                    generator=self.generator, temperature=self.temperature,
                                    method=self.method)
        return u[..., self.columns]

    def match(self, target_audio: Tensor) -> MatchResult:
        """The best of ``k`` prior samples per target."""
        target_audio = target_audio.to(self.device)
        return best_of(self.synth, self.distance, target_audio, self.propose(target_audio))


class PriorInitializer:
    """Episode starts from the prior: ``(n, T)`` target audio -> ``(n, P)`` parameters.

    Set it on an env's core (``core.initializer = PriorInitializer(prior, core.synth)``) or
    pass it as the ``initializer`` reset option. Sampling runs batched on the env's device.

    Args:
        prior: A trained prior.
        synth: The env's synth (its parameters must be the prior's or a subset).
        k: 1 takes one sample per target; more renders ``k`` samples and starts from the
            closest (``k`` extra renders per reset).
        steps: ODE steps per sample.
        seed: Seed of the sampling noise.
    """

    def __init__(self, prior: FlowPrior, synth: Synth, *, k: int = 1, steps: int = 16,
                 seed: int = 0):
        self.matcher = OneShotMatcher(prior, synth, k=k, steps=steps, device=synth.device,
                                      seed=seed)
        if set(synth.params.names) != set(prior.param_names):
            warnings.warn(f"the env controls {synth.num_params} of the prior's "
                          f"{len(prior.param_names)} parameters; its targets may come from "
                          "another distribution than the prior's training data", stacklevel=2)

    def __call__(self, target_audio: Tensor) -> Tensor:
        if self.matcher.k == 1:
            return self.matcher.propose(target_audio)[:, 0].to(target_audio.device)
        return self.matcher.match(target_audio).params.to(target_audio.device)
