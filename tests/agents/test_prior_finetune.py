"""The search step of reward fine-tuning: a (1+1)-ES that improves archived presets."""

from __future__ import annotations

import torch

from synthmatch.agents.prior_finetune import SIGMA_RANGE, refine_archive
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import make_synth


def test_refine_archive_only_gets_closer_and_records_true_distances():
    synth = make_synth("subtractive")
    distance = PerceptualDistance(synth.sample_rate)
    gen = torch.Generator().manual_seed(0)
    truth = synth.params.sample(4, gen)
    with torch.no_grad():
        audio = synth.render(truth)
    # Start a little away from the truth (continuous columns), so closer presets exist.
    start = (truth + 0.1 * torch.randn(truth.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        start_d = distance(synth.render(start), audio)
    archive, archive_d = start.clone(), start_d.clone()
    sigma = torch.full((4,), 0.05)
    refine_archive(synth, distance, audio, archive, archive_d, sigma, 12,
                   torch.Generator().manual_seed(1))
    assert torch.all(archive_d <= start_d) and bool((archive_d < start_d).any())
    assert torch.all((archive >= 0) & (archive <= 1))
    assert torch.all((sigma >= SIGMA_RANGE[0]) & (sigma <= SIGMA_RANGE[1]))
    assert not torch.equal(sigma, torch.full((4,), 0.05))  # adapted per sound
    with torch.no_grad():
        rescored = distance(synth.render(archive), audio)
    torch.testing.assert_close(archive_d, rescored, rtol=1e-4, atol=1e-5)
    # Unchanged rows keep their preset exactly.
    same = archive_d == start_d
    torch.testing.assert_close(archive[same], start[same])


def test_pick_round_takes_the_best_pool_round_within_the_drift():
    import pytest

    from synthmatch.agents.prior_finetune import pick_round

    def run(pool, domain):
        return [{"round": r, "val/val_pool_best_of_16": p, "val/in_domain_best_of_16": d}
                for r, (p, d) in enumerate(zip(pool, domain, strict=True))]

    a = run([1.0, 0.8, 0.6, 0.5], [0.30, 0.31, 0.33, 0.34])
    b = run([1.0, 0.8, 0.6, 0.5], [0.30, 0.31, 0.29, 0.34])
    # Means of the two runs: round 2 drifts +3.3% (kept), round 3 +13% (refused).
    assert pick_round([a, b]) == 2
    assert pick_round([a, b], max_drift=0.2) == 3
    assert pick_round([a], max_drift=0.01) is None
    with pytest.raises(ValueError, match="val_pool"):
        pick_round([a], val_k=4)
