"""The interface every leaderboard method shares."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from synthmatch.leaderboard.meter import RenderMeter
from synthmatch.synths import Synth


@dataclass
class MatchTask:
    """What a method is given: the synth, the meter that renders for it, and a seed.

    The targets are ``meter.target_audio`` ``(B, T)``; each has ``meter.budget`` renders.
    """

    synth: Synth
    meter: RenderMeter
    seed: int

    @property
    def target_audio(self) -> Tensor:
        return self.meter.target_audio

    @property
    def num_targets(self) -> int:
        return self.meter.num_targets

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator for this task's random draws (``offset`` separates streams)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


class Method(abc.ABC):
    """A way to match target sounds, run under a render budget per target.

    Subclasses set :attr:`name` and implement :meth:`run`. ``run`` renders only through
    ``task.meter`` (which refuses to go past the budget), may stop early, must not depend on
    the budget's size beyond stopping when it is spent (so one run gives every smaller budget:
    see :mod:`synthmatch.leaderboard.meter`), and returns its best rendered preset per target.
    """

    name: ClassVar[str]
    min_budget: ClassVar[int] = 1
    # Largest budget the method can use; above it the result would repeat this one.
    max_budget: ClassVar[int | None] = None
    # Whether it steps along gradients of the distance (a differentiable synth only).
    needs_gradients: ClassVar[bool] = False

    def supports(self, budget: int) -> bool:
        return budget >= self.min_budget and (self.max_budget is None
                                              or budget <= self.max_budget)

    def settings(self) -> dict[str, Any]:
        """The method's settings (JSON): recorded with results and part of the cache key."""
        return {}

    def files(self) -> list[Path]:
        """The files its results depend on (checkpoints): the cache keeps their sha256 with
        each result and recomputes a result whose files changed since."""
        return []

    @abc.abstractmethod
    def run(self, task: MatchTask) -> Tensor:
        """Match every target of ``task``; return ``(B, P)`` best rendered presets."""


def best_so_far(meter: RenderMeter) -> Tensor:
    """Each target's best preset among everything it has rendered."""
    return meter.best(meter.budget)[0]
