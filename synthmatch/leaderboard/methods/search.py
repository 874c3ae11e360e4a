"""Per-target search without learning: the default preset, random search and CMA-ES."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.leaderboard.methods.base import MatchTask, Method, best_so_far

# CMA-ES settings (pycma): start at the centre of the normalised box with step size 0.3 (the
# box is [0, 1] per parameter, so 0.3 covers most of it at the start), pycma's default
# population 4 + 3 ln(P), and IPOP restarts (population doubled, new random start) whenever
# pycma's own termination criteria fire before the budget is spent.
CMAES_SIGMA0 = 0.3


class DefaultPreset(Method):
    """The synth's init preset, one render: the floor every method must beat."""

    name = "default"
    max_budget = 1

    def run(self, task: MatchTask) -> Tensor:
        defaults = task.synth.params.defaults(task.num_targets)
        task.meter.score(defaults[:, None])
        return defaults


class RandomSearch(Method):
    """The best of uniform random presets (discrete parameters snapped)."""

    name = "random"

    def run(self, task: MatchTask) -> Tensor:
        meter, gen = task.meter, task.generator()
        while int(meter.remaining().min()) > 0:
            k = meter.next_stop() - int(meter.used.min())
            u = task.synth.params.sample(task.num_targets * k, gen)
            meter.score(u.reshape(task.num_targets, k, -1))
        return best_so_far(meter)


def cmaes_search(task: MatchTask, x0: Tensor, sigma0: float, *, seed_offset: int = 0,
                 decode: Callable[[Tensor, Tensor], Tensor] | None = None,
                 popsize: int | None = None) -> None:
    """CMA-ES (pycma) for every target from ``x0`` ``(B, D)``, all targets' populations
    rendered as one batch per generation, until every target's budget is spent.

    Each target has its own strategy and its own normal generator (pycma's ``randn`` option),
    so a target's search does not depend on which other targets share its batch.

    By default the search runs in the parameter box ``[0, 1]^P`` and an IPOP restart starts
    from a uniform preset. With ``decode`` it runs in an unbounded space whose points
    ``(M, D)`` of targets ``owners`` ``(M,)`` ``decode`` turns into presets ``(M, P)`` (the
    prior's noise, ``prior+latent-cmaes``), and a restart starts from a standard normal draw.
    ``popsize`` is the first population (None: pycma's ``4 + 3 ln D``).
    """
    try:
        import cma
    except ImportError:
        raise ImportError("the cmaes methods need pycma: pip install 'synthmatch[leaderboard]'") \
            from None
    meter = task.meter
    b, p = x0.shape
    rngs = [np.random.default_rng([task.seed, seed_offset, i]) for i in range(b)]

    def strategy(i: int, start: np.ndarray, popsize: int | None) -> Any:
        opts = {"seed": np.nan, "verbose": -9,
                "randn": lambda lam, n, r=rngs[i]: r.standard_normal((lam, n))}
        if decode is None:
            opts["bounds"] = [0.0, 1.0]
        if popsize is not None:
            opts["popsize"] = popsize
        return cma.CMAEvolutionStrategy(start, sigma0, opts)

    def restart_point(i: int) -> np.ndarray:
        rng = rngs[i]
        return rng.uniform(0.0, 1.0, p) if decode is None else rng.standard_normal(p)

    strategies = [strategy(i, x0[i].double().cpu().numpy(), popsize) for i in range(b)]
    while True:
        left = meter.remaining()
        active = [i for i in range(b) if int(left[i]) > 0]
        if not active:
            return
        asked = {}
        for i in active:
            es = strategies[i]
            if es.stop():
                # IPOP restart: a fresh start with twice the population.
                es = strategies[i] = strategy(i, restart_point(i), 2 * es.popsize)
            asked[i] = es.ask()[: int(left[i])]
        flat = torch.tensor(np.concatenate([np.stack(asked[i]) for i in active]),
                            dtype=torch.float32)
        owners = torch.cat([torch.full((len(asked[i]),), i) for i in active])
        presets = flat.clamp(0.0, 1.0) if decode is None else decode(flat, owners)
        d = meter.score(presets, owners).double().cpu().numpy()
        start = 0
        for i in active:
            n = len(asked[i])
            if n == strategies[i].popsize:  # a cut population is the last: nothing to learn
                strategies[i].tell(asked[i], d[start:start + n].tolist())
            start += n


class CMAES(Method):
    """CMA-ES from the centre of the parameter box (see :data:`CMAES_SIGMA0`)."""

    name = "cmaes"
    min_budget = 2

    def __init__(self, sigma0: float = CMAES_SIGMA0):
        self.sigma0 = sigma0

    def settings(self) -> dict[str, Any]:
        return {"sigma0": self.sigma0, "x0": "centre", "popsize": "4 + 3 ln P",
                "restarts": "IPOP"}

    def run(self, task: MatchTask) -> Tensor:
        x0 = torch.full((task.num_targets, task.synth.num_params), 0.5)
        cmaes_search(task, x0, self.sigma0)
        return best_so_far(task.meter)
