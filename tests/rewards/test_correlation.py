"""The perceptual distance grows with parameter distance on the default synth."""

from __future__ import annotations

import torch
from scipy.stats import spearmanr

from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import make_synth


def test_distance_rank_correlates_with_parameter_distance():
    synth = make_synth("subtractive")
    distance = PerceptualDistance(synth.sample_rate)
    gen = torch.Generator().manual_seed(0)
    a = synth.params.sample(192, gen)
    b = synth.params.sample(192, gen)
    # Random pairs at random parameter distances: b moved a random share of the way from a.
    share = torch.rand(192, 1, generator=gen)
    b = synth.params.quantize(a + share * (b - a))
    param_distance = (a - b).abs().mean(1)
    d = distance(synth.render(a), synth.render(b))
    assert spearmanr(param_distance, d).statistic > 0.5
    # And on average: pairs in the closest third are closer than those in the farthest third.
    order = param_distance.argsort()
    assert d[order[:64]].median() < 0.5 * d[order[-64:]].median()
