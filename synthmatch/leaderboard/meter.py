"""The harness's render meter: every render a method makes goes through it and is counted.

A method never holds the synth directly. It asks the :class:`RenderMeter` to score candidate
presets (render them and measure the env's perceptual distance to their targets); the meter
refuses any request that would take a target past its budget, and records every scored preset
with its distance and the time it was made. A method's result at budget ``b`` is then the best
preset among its first ``b`` renders of each target, as the meter saw them: a method cannot
exceed or misreport its budget.

Because every method here is an anytime algorithm (nothing it does depends on the budget it
was given), one run at the largest budget gives the result at every smaller one: the meter
keeps each render's position, and :meth:`RenderMeter.best` reads any prefix.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from synthmatch.agents.search import score_chunk
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import Synth


class BudgetExceeded(RuntimeError):
    """A method asked for more renders than a target has left."""


class RenderMeter:
    """Render, score and count candidate presets for a batch of targets.

    Args:
        synth: The synth every candidate is rendered with.
        distance: The perceptual distance (the env's reward distance).
        target_audio: ``(B, T)`` targets, on any device.
        budget: Renders allowed per target.
        stops: Budgets at which the harness reads results (sorted); methods that draw
            candidates in bulk may use :meth:`next_stop` to draw just enough.
    """

    def __init__(self, synth: Synth, distance: PerceptualDistance, target_audio: Tensor,
                 budget: int, stops: tuple[int, ...] = ()):
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        self.synth = synth
        self.distance = distance
        self.budget = int(budget)
        self.stops = tuple(sorted({*stops, self.budget}))
        self.device = synth.device
        self.target_audio = target_audio.to(self.device)
        b, p = target_audio.shape[0], synth.num_params
        with torch.no_grad():
            self.target_features = distance.features(self.target_audio)
        self.used = torch.zeros(b, dtype=torch.long)
        self.history_params = torch.full((b, self.budget, p), float("nan"))
        self.history_distance = torch.full((b, self.budget), float("inf"))
        self.history_time = torch.zeros(b, self.budget, dtype=torch.float64)
        self.start_time = time.perf_counter()

    @property
    def num_targets(self) -> int:
        return self.used.shape[0]

    def remaining(self) -> Tensor:
        """``(B,)`` renders each target has left."""
        return self.budget - self.used

    def next_stop(self) -> int:
        """The smallest stop above the fewest renders any target has used."""
        low = int(self.used.min())
        return next(s for s in self.stops if s > low) if low < self.budget else self.budget

    def score(self, candidates: Tensor, owners: Tensor | None = None, *,
              grad: bool = False) -> Tensor:
        """Render and score candidates; each one costs its target one render.

        Args:
            candidates: ``(B, K, P)`` (``K`` per target, every target) or ``(M, P)`` with
                ``owners``.
            owners: ``(M,)`` target index of each row of a flat ``candidates``.
            grad: Keep the autograd graph (differentiable synths only); otherwise no graph.

        Returns:
            Distances, ``(B, K)`` or ``(M,)``.

        Raises:
            BudgetExceeded: some target would go past its budget (nothing is rendered).
        """
        if owners is None:
            b, k, p = candidates.shape
            if b != self.num_targets:
                raise ValueError(f"{b} candidate sets for {self.num_targets} targets")
            owners = torch.arange(b).repeat_interleave(k)
            return self._score(candidates.reshape(b * k, p), owners, grad)[0].reshape(b, k)
        return self._score(candidates, owners.cpu().long(), grad)[0]

    def render(self, params: Tensor) -> Tensor:
        """Render one preset per target, ``(B, P)``, counting and scoring it like
        :meth:`score`; returns the audio ``(B, T)`` (for methods that need to listen)."""
        return self._score(params, torch.arange(self.num_targets), False)[1]

    def _score(self, flat: Tensor, owners: Tensor, grad: bool) -> tuple[Tensor, Tensor]:
        counts = torch.bincount(owners, minlength=self.num_targets)
        over = (self.used + counts > self.budget).nonzero().flatten()
        if over.numel():
            i = int(over[0])
            raise BudgetExceeded(f"target {i} would use {int(self.used[i] + counts[i])} renders "
                                 f"of its budget of {self.budget}")
        flat = flat.to(self.device)
        device_owners = owners.to(self.device)
        chunk = score_chunk(self.device)
        distances, audio = [], []
        with torch.set_grad_enabled(grad):
            for start in range(0, flat.shape[0], chunk):
                rows = slice(start, start + chunk)
                sound = self.synth.render(flat[rows])
                feats = self.distance.features(sound)
                target = self.target_features.index(device_owners[rows])
                distances.append(self.distance.distance(feats, target))
                audio.append(sound.detach())
        d = torch.cat(distances)
        self._record(flat.detach(), owners, d.detach(), counts)
        return d, torch.cat(audio)

    def _record(self, flat: Tensor, owners: Tensor, d: Tensor, counts: Tensor) -> None:
        # Position of each row among its target's renders: its rank within the call (stable by
        # owner) after the renders the target made before.
        order = torch.argsort(owners, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(owners)
        rank[order] = torch.arange(owners.numel()) - starts[owners[order]]
        pos = self.used[owners] + rank
        self.history_params[owners, pos] = flat.float().cpu()
        self.history_distance[owners, pos] = d.float().cpu()
        self.history_time[owners, pos] = time.perf_counter() - self.start_time
        self.used += counts

    def best(self, budget: int) -> tuple[Tensor, Tensor, Tensor, float]:
        """The best preset of each target among its first ``budget`` renders.

        Returns:
            ``params (B, P)``, ``distance (B,)``, renders used ``(B,)`` (at most ``budget``)
            and the wall time in seconds until the last of those renders.
        """
        b = min(int(budget), self.budget)
        d = self.history_distance[:, :b]
        idx = d.argmin(1)
        rows = torch.arange(self.num_targets)
        used = self.used.clamp(max=b)
        last = (used - 1).clamp(min=0)
        wall = float(self.history_time[rows, last].max()) if int(used.max()) else 0.0
        return self.history_params[rows, idx], d[rows, idx], used, wall

    def check_rendered(self, presets: Tensor) -> None:
        """Raise unless every row of ``presets`` ``(B, P)`` is a preset this meter rendered
        for that target (a method must return what it actually heard)."""
        diff = (self.history_params - presets.detach().cpu().float()[:, None]).abs()
        seen = (diff.nan_to_num(float("inf")).amax(2) <= 1e-6).any(1)
        if not bool(seen.all()):
            i = int((~seen).nonzero()[0])
            raise RuntimeError(f"the method returned a preset for target {i} that it never "
                               "rendered")
