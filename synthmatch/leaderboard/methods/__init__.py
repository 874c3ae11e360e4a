"""Every leaderboard method, by name, behind one interface (:class:`Method`)."""

from __future__ import annotations

from synthmatch.leaderboard.methods.base import MatchTask, Method
from synthmatch.leaderboard.methods.gradient import Gradient
from synthmatch.leaderboard.methods.nearest import Nearest
from synthmatch.leaderboard.methods.prior import (
    FinetunedPrior,
    FinetunedPriorCritic,
    GatedPrior,
    GatedPriorRestarts,
    Prior,
    PriorCentral,
    PriorCMAES,
    PriorCritic,
    PriorES,
    PriorGradient,
    PriorLatentCMAES,
    PriorLatentES,
    PriorRestarts,
)
from synthmatch.leaderboard.methods.rl import PriorGradientRL, PriorLatentRL, PriorRL, RLPolicy
from synthmatch.leaderboard.methods.search import CMAES, DefaultPreset, RandomSearch

# name -> class, in the order tables list them.
METHODS: dict[str, type[Method]] = {m.name: m for m in (
    DefaultPreset, RandomSearch, CMAES, Gradient, Nearest, Prior, PriorCMAES, PriorGradient,
    PriorES, RLPolicy, PriorRL, PriorCentral, PriorCritic, FinetunedPrior,
    FinetunedPriorCritic, PriorRestarts, PriorGradientRL, GatedPrior,
    GatedPriorRestarts, PriorLatentES, PriorLatentCMAES, PriorLatentRL)}
# What each method needs besides the synth.
NEEDS = {"nearest": "dataset", "prior": "prior", "prior+cmaes": "prior",
         "prior+gradient": "prior", "prior+es": "prior", "rl": "rl_checkpoint",
         "prior+rl": "rl_checkpoint", "prior+central": "prior", "prior+critic": "critic",
         "prior-rlft": "finetuned_prior", "prior-rlft+critic": "critic",
         "prior+gradient-patience": "prior", "prior+gradient+rl": "restart_policy",
         "prior-rlft+gate": "gate", "prior-rlft+gate+gradient-patience": "gate",
         "prior+latent-es": "prior", "prior+latent-cmaes": "prior",
         "prior+latent-rl": "latent_policy"}

__all__ = ["METHODS", "NEEDS", "MatchTask", "Method"]
