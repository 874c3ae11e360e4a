"""Reward fine-tuning's archive of presets and the (1+1)-ES that improves it, round picking
and weight interpolation."""

from __future__ import annotations

import torch

from synthmatch.agents.prior_finetune import (
    SIGMA_RANGE,
    refine_archive,
    refine_archive_gradient,
    update_archive,
)
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import make_synth


def near_misses(n: int):
    """The subtractive synth, its distance, ``n`` sounds of random presets, and starts a
    little away from those presets (so closer presets exist) with their distances."""
    synth = make_synth("subtractive")
    distance = PerceptualDistance(synth.sample_rate)
    gen = torch.Generator().manual_seed(0)
    truth = synth.params.sample(n, gen)
    with torch.no_grad():
        audio = synth.render(truth)
    start = (truth + 0.1 * torch.randn(truth.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        start_d = distance(synth.render(start), audio)
    return synth, distance, audio, start, start_d


def test_refine_archive_only_gets_closer_and_records_true_distances():
    synth, distance, audio, start, start_d = near_misses(4)
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


def test_gradient_refinement_follows_adam_and_keeps_the_closest_render():
    """refine_archive_gradient against torch.optim.Adam (projected onto [0, 1]) as the
    oracle, and each sound keeps the closest preset rendered. The oracle is compared over
    two renders (one Adam step): the synth's gradient is so sensitive that rounding
    differences of 1e-7 between two Adam implementations part the paths after that."""
    synth, distance, audio, start, start_d = near_misses(3)

    u = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.01)
    renders = []
    for _ in range(2):
        d = distance(synth.render(u), audio)
        renders.append((u.detach().clone(), d.detach()))
        opt.zero_grad()
        d.sum().backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(0.0, 1.0)
    (_, d0), (u1, d1) = renders
    torch.testing.assert_close(d0, start_d)
    archive, archive_d = start.clone(), start_d.clone()
    refine_archive_gradient(synth, distance, audio, archive, archive_d, 2, 0.01)
    closer = d1 < start_d
    assert bool(closer.any())
    torch.testing.assert_close(archive_d, torch.where(closer, d1, start_d), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(archive, torch.where(closer[:, None], u1, start), atol=1e-6,
                               rtol=0)

    # A longer search only gets closer, stays in the box and records true distances.
    archive, archive_d = start.clone(), start_d.clone()
    refine_archive_gradient(synth, distance, audio, archive, archive_d, 12, 0.01)
    assert torch.all(archive_d <= start_d) and bool((archive_d < start_d).all())
    assert torch.all((archive >= 0) & (archive <= 1))
    with torch.no_grad():
        rescored = distance(synth.render(archive), audio)
    torch.testing.assert_close(archive_d, rescored, rtol=1e-4, atol=1e-5)


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
    # With one render checked too, a row that drifts there is refused even if fine at 16.
    for h, one in ((a, [0.50, 0.50, 0.56, 0.50]), (b, [0.50, 0.50, 0.56, 0.50])):
        for row, d in zip(h, one, strict=True):
            row["val/in_domain_best_of_1"] = d
    assert pick_round([a, b], max_drift=0.2) == 3
    assert pick_round([a, b], max_drift=0.2, domain_ks=(1, 16)) == 3
    assert pick_round([a, b], domain_ks=(1, 16)) == 1
    assert pick_round([a, b]) == 1  # by default every in-domain figure logged is checked
    assert pick_round([a, b], domain_ks=(16,)) == 2
    with pytest.raises(ValueError, match="in_domain_best_of_4"):
        pick_round([a, b], domain_ks=(4,))


def test_interpolate_priors_lies_on_the_line_and_refuses_other_priors():
    import pytest

    from synthmatch.agents.prior import FlowPrior, PriorConfig
    from synthmatch.agents.prior_finetune import interpolate_priors

    torch.manual_seed(0)
    config = dict(param_names=["a", "b"], choice_steps=[0, 0], mel_shape=[8, 4],
                  mel_mean=[0.0] * 8, mel_std=[1.0] * 8, sample_rate=16000, num_samples=16000,
                  mel_settings={"n_mels": 8},
                  embed_dim=8, hidden=8, depth=1, channels=[4])
    base, tuned = FlowPrior(PriorConfig(**config)), FlowPrior(PriorConfig(**config))
    tuned.finetuned = {"round": 3}
    for alpha in (0.0, 0.3, 1.0):
        mixed = interpolate_priors(base, tuned, alpha)
        for name, w in mixed.state_dict().items():
            want = base.state_dict()[name] + alpha * (tuned.state_dict()[name]
                                                      - base.state_dict()[name])
            torch.testing.assert_close(w, want)
        assert mixed.finetuned == {"round": 3, "interpolated": {"alpha": alpha,
                                                                 "base_finetuned": None}}
    assert all(torch.equal(w, base.state_dict()[n])
               for n, w in interpolate_priors(base, tuned, 0.0).state_dict().items())
    with pytest.raises(ValueError, match="alpha"):
        interpolate_priors(base, tuned, 1.5)
    other = FlowPrior(PriorConfig(**{**config, "hidden": 16}))
    with pytest.raises(ValueError, match="interpolated"):
        interpolate_priors(base, other, 0.5)


def test_curves_and_pick_round_scripts_read_finetune_histories(tmp_path):
    """plot_curves.py draws each run that logged a key (older runs lacking it get a note),
    and pick_round.py prints the per-round table and the pick."""
    import json
    import subprocess
    import sys

    from tests.agents.test_training import ROOT, run_script

    keys = ("val/val_pool_best_of_16", "val/in_domain_best_of_16")
    for name, extra in (("old", {}), ("new", {"val/val_pool_vital_best_of_16": 0.7})):
        (tmp_path / name).mkdir()
        rows = [{"round": r, keys[0]: 1.0 - 0.1 * r, keys[1]: 0.3, **extra} for r in range(3)]
        (tmp_path / name / "history.json").write_text(json.dumps(rows))
    # A restart policy's history (train_restarts.py) is per episode, keyed by env steps.
    (tmp_path / "restarts").mkdir()
    (tmp_path / "restarts" / "history.json").write_text(json.dumps(
        [{"timesteps": 64 * t, keys[0]: 0.5} for t in (1, 2)]))
    out = run_script("plot_curves.py", str(tmp_path / "old"), str(tmp_path / "new"),
                     str(tmp_path / "restarts"), "--tag", keys[0],
                     "val/val_pool_vital_best_of_16", "--out", str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 0 and "old has no" in out.stdout
    assert "restarts has no" in out.stdout  # it has keys[0] only
    missing = subprocess.run([sys.executable, str(ROOT / "experiments/plot_curves.py"),
                              str(tmp_path / "old"), "--tag", "val/nothing", "--out",
                              str(tmp_path / "d.png")], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
    assert missing.returncode == 2 and "no run has" in missing.stderr
    assert "Traceback" not in missing.stderr
    table = run_script("pick_round.py", str(tmp_path / "old"), str(tmp_path / "new")).stdout
    assert "| 2 | 0.800 (-20.0%) | 0.300 (+0.0%) |" in table and "Picked round: 2" in table


def test_plot_curves_reads_sb3_scalars_beside_a_history_and_prints_the_difference(tmp_path):
    """A run whose history.json lacks the tag is read from the TensorBoard events SB3 writes in
    a subdirectory, and --base prints each run's difference from the base run."""
    import json

    from torch.utils.tensorboard import SummaryWriter

    from tests.agents.test_training import run_script

    for name, rewards in (("untrained", [0.4, 0.3, 0.3, 0.2]), ("trained", [0.4, 0.3, 0.2, 0.1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "history.json").write_text(json.dumps([{"timesteps": 64}]))
        with SummaryWriter(str(tmp_path / name / "ppo_1")) as writer:
            for step, r in enumerate(rewards):
                writer.add_scalar("rollout/ep_rew_mean", r, step)
    out = run_script("plot_curves.py", str(tmp_path / "untrained"), str(tmp_path / "trained"),
                     "--tag", "rollout/ep_rew_mean", "--base", str(tmp_path / "untrained"),
                     "--out", str(tmp_path / "c.png")).stdout
    # Differences 0, 0, -0.1, -0.1: the second half's mean and the last are -0.1.
    assert "| trained | rollout/ep_rew_mean | 0.4 | 0.1 | 0.1 | 0.4 | -0.1 | -0.1 |" in out
    assert "| untrained | rollout/ep_rew_mean | 0.4 | 0.2 | 0.2 | 0.4 | +0 | +0 |" in out


def test_update_archive_keeps_the_closest_presets_seen_in_any_round():
    """Against an oracle that remembers every candidate: after each round the archive holds
    each sound's m closest presets so far, closest first, and never loses one for a tie."""
    gen = torch.Generator().manual_seed(0)
    b, m, k, p = 5, 3, 4, 2
    archive, archive_d = torch.zeros(b, m, p), torch.full((b, m), float("inf"))
    seen_p, seen_d = [], []
    for _ in range(4):
        cand = torch.rand(b, k, p, generator=gen)
        cand_d = torch.rand(b, k, generator=gen).round(decimals=1)  # ties happen
        archive, archive_d = update_archive(archive, archive_d, cand, cand_d)
        seen_p.append(cand)
        seen_d.append(cand_d)
        all_d = torch.cat(seen_d, dim=1)
        torch.testing.assert_close(archive_d, all_d.sort(dim=1).values[:, :m])
        for row in range(b):  # each kept preset is a candidate with the distance it is kept at
            for slot in range(m):
                j = (torch.cat(seen_p, dim=1)[row] == archive[row, slot]).all(dim=1)
                assert bool(j.any()) and bool((all_d[row, j] == archive_d[row, slot]).all())
    # A new candidate as close as the kept one does not displace it.
    tie, tie_d = update_archive(archive, archive_d, torch.full((b, 1, p), 9.0),
                                archive_d[:, :1].clone())
    assert torch.equal(tie[:, 0], archive[:, 0]) and torch.equal(tie_d[:, 0], archive_d[:, 0])


def test_archive_size_must_fit_in_one_rounds_samples(tmp_path):
    import pytest

    from synthmatch.agents.prior_finetune import FinetuneSettings, check_settings

    prior = tmp_path / "prior.pt"
    prior.write_bytes(b"")
    with pytest.raises(ValueError, match="cannot exceed --k"):
        check_settings(FinetuneSettings(prior=str(prior), data=None, synthetic_fraction=0.0,
                                        k=4, archive_size=5))
    with pytest.raises(ValueError, match="--archive-size must be >= 1"):
        check_settings(FinetuneSettings(prior=str(prior), data=None, synthetic_fraction=0.0,
                                        archive_size=0))


def test_best_of_k_loss_is_the_best_samples_distance_and_reaches_the_weights():
    """The set objective scores the very samples FlowPrior.sample draws from the same noise
    (the library's solver without gradients is the oracle), its value is the mean of each
    sound's closest distance, and its gradient reaches the encoder and the velocity net."""
    import pytest

    pytest.importorskip("flow_matching")
    from synthmatch.agents.prior_finetune import best_of_k_loss
    from tests.agents.test_prior import tiny_prior

    synth = make_synth("subtractive")
    distance = PerceptualDistance(synth.sample_rate)
    prior = tiny_prior(synth, seed=1)
    for p in prior.parameters():  # zero-initialised output layers would pass no gradient
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        audio = synth.render(synth.params.sample(3, torch.Generator().manual_seed(2)))
    mel = prior.mel(audio)
    loss, d, samples = best_of_k_loss(prior, synth, distance, audio, mel, 4,
                                      torch.Generator().manual_seed(5))
    expected = prior.sample(mel, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(samples, expected)
    with torch.no_grad():
        rescored = distance(synth.render(expected.reshape(12, -1)),
                            audio.repeat_interleave(4, 0)).view(3, 4)
    torch.testing.assert_close(d, rescored, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss.detach(), rescored.min(1).values.mean(), rtol=1e-4,
                               atol=1e-5)
    loss.backward()
    for module in (prior.encoder, prior.velocity):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_best_of_k_refuses_what_it_cannot_use(tmp_path):
    import pytest

    from synthmatch.agents.prior_finetune import FinetuneSettings, check_settings

    prior = tmp_path / "prior.pt"
    prior.write_bytes(b"")
    for extra in ({"data": "x", "synthetic_fraction": 0.5}, {"archive_size": 2},
                  {"refine_steps": 3}):
        settings = {"data": None, "synthetic_fraction": 0.0, **extra}
        with pytest.raises(ValueError, match="learns from the pool alone"):
            check_settings(FinetuneSettings(prior=str(prior), objective="best-of-k",
                                            **settings))
    with pytest.raises(ValueError, match="--refine-lr must be positive"):
        check_settings(FinetuneSettings(prior=str(prior), refine="gradient", refine_steps=3,
                                        refine_lr=0.0))
    with pytest.raises(ValueError, match="--sounds-per-step must be >= 1"):
        check_settings(FinetuneSettings(prior=str(prior), data=None, synthetic_fraction=0.0,
                                        objective="best-of-k", sounds_per_step=0))


class GaussianFlow(torch.nn.Module):
    """The exact velocity of the conditional optimal-transport path from ``N(0, I)`` to
    ``N(m, s^2 I)`` (closed form), dressed as a prior for the SDE functions: an oracle whose
    marginals are known at every time."""

    def __init__(self, m: float, s: float, p: int = 3):
        super().__init__()
        self.m, self.s, self.p = m, s, p

    def velocity(self, x, t, embedding):
        t = t[:, None]
        var = t ** 2 * self.s ** 2 + (1 - t) ** 2
        centred = x - t * self.m
        x1 = self.m + t * self.s ** 2 / var * centred
        x0 = (1 - t) / var * centred
        return x1 - x0

    def draw_noise(self, n, generator=None):
        return torch.randn(n, self.p, generator=generator)


def test_the_sde_keeps_the_flows_marginals():
    """Run as an SDE, an exact flow still ends at its data distribution (the drift's score
    term is right), at every noise scale; a drift without that term would widen the end."""
    from synthmatch.agents.prior import sde_rollout

    flow = GaussianFlow(m=0.4, s=0.3)
    embedding = torch.zeros(20_000, 1)
    for noise in (0.3, 1.0):
        end = sde_rollout(flow, embedding, 200, noise, torch.Generator().manual_seed(0))[:, -1]
        assert abs(float(end.mean()) - 0.4) < 0.01
        assert abs(float(end.std()) - 0.3) < 0.01
    # Without the score term the same noise leaves the end far too wide: the check can fail.
    gen = torch.Generator().manual_seed(0)
    x, h = flow.draw_noise(20_000, gen), 1 / 200
    for i in range(200):
        t = torch.full((x.shape[0],), i * h)
        x = x + h * flow.velocity(x, t, None) + torch.sqrt((1 - t[:, None]) * h) * \
            torch.randn(x.shape, generator=gen)
    assert float(x.std()) > 0.4


def test_the_sde_samplers_end_only_rollout_is_the_full_rollouts_last_state():
    """``end_only`` (what ``FlowPrior.sample(method="sde")`` draws by) keeps no trajectory,
    yet ends where the full rollout does from the same generator."""
    from synthmatch.agents.prior import sde_rollout

    flow = GaussianFlow(m=0.4, s=0.3)
    embedding = torch.zeros(64, 1)
    full = sde_rollout(flow, embedding, 16, 0.7, torch.Generator().manual_seed(3))
    end = sde_rollout(flow, embedding, 16, 0.7, torch.Generator().manual_seed(3), end_only=True)
    assert full.shape[:2] == (64, 17) and end.shape == (64, full.shape[2])
    assert torch.equal(end, full[:, -1])
    assert not torch.equal(end, full[:, -2])


def test_sde_log_prob_is_the_steps_gaussian_density_and_reaches_the_weights():
    """The trajectory log-density is the sum of each step's Gaussian log-density (torch's
    Normal is the oracle, up to the weights-free constant), and its gradient reaches the
    encoder and the velocity net."""
    import math

    import pytest

    pytest.importorskip("flow_matching")
    from synthmatch.agents.prior import sde_mean, sde_rollout, sde_std
    from synthmatch.agents.prior_finetune import sde_log_prob
    from tests.agents.test_prior import tiny_prior

    synth = make_synth("subtractive")
    prior = tiny_prior(synth, seed=1)
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.05)
    with torch.no_grad():
        audio = synth.render(synth.params.sample(2, torch.Generator().manual_seed(2)))
    embedding = prior.embed(prior.mel(audio))
    states = sde_rollout(prior, embedding.detach(), 4, 0.7, torch.Generator().manual_seed(3))
    assert states.shape == (2, 5, prior.config.num_params)
    logp = sde_log_prob(prior, embedding, states, 0.7)
    expected = torch.zeros(2)
    with torch.no_grad():
        for i in range(4):
            t = torch.full((2,), i / 4)
            step = torch.distributions.Normal(
                sde_mean(prior, states[:, i], t, embedding, 0.25, 0.7),
                sde_std(t, 0.25, 0.7).expand(-1, states.shape[2]))
            const = -(0.5 * math.log(2 * math.pi) + step.scale.log()).sum(1)
            expected += step.log_prob(states[:, i + 1]).sum(1) - const
    torch.testing.assert_close(logp.detach(), expected, rtol=1e-4, atol=1e-3)
    logp.sum().backward()
    for module in (prior.encoder, prior.velocity):
        assert any(float(p.grad.abs().sum()) > 0 for p in module.parameters()
                   if p.grad is not None)


def test_group_advantages_rank_each_sounds_samples_against_each_other():
    from synthmatch.agents.prior_finetune import group_advantages

    d = torch.tensor([[1.0, 2.0, 3.0], [10.0, 10.0, 10.0], [0.5, 0.1, 0.3]])
    a = group_advantages(d)
    torch.testing.assert_close(a[0], torch.tensor([1.0, 0.0, -1.0]))
    assert torch.equal(a[1], torch.zeros(3))  # nothing to learn from equal samples
    assert a[2].argmax() == 1 and abs(float(a[2].sum())) < 1e-6
    # best-of-k: only the closest sample earns, by its margin over the runner-up
    b = group_advantages(d, "best-of-k")
    torch.testing.assert_close(b[0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(b[1], torch.zeros(3))
    torch.testing.assert_close(b[2], torch.tensor([0.0, 0.2, 0.0]) / d[2].std())


def test_best_of_k_advantages_are_each_samples_share_of_the_best():
    """Brute force as the oracle: each sample's advantage is the group's best reward minus the
    best reward without that sample, over the group's spread."""
    from synthmatch.agents.prior_finetune import group_advantages

    d = torch.rand(50, 6, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([
        torch.stack([d[b, [j for j in range(6) if j != i]].min() - d[b].min()
                     for i in range(6)]) for b in range(50)]) / d.std(dim=1, keepdim=True)
    torch.testing.assert_close(group_advantages(d, "best-of-k"), expected)


def test_policy_gradient_refuses_what_it_cannot_use(tmp_path):
    import pytest

    from synthmatch.agents.prior_finetune import FinetuneSettings, check_settings

    prior = tmp_path / "prior.pt"
    prior.write_bytes(b"")
    pool_only = {"data": None, "synthetic_fraction": 0.0, "objective": "policy-gradient"}
    with pytest.raises(ValueError, match="learns from the pool alone"):
        check_settings(FinetuneSettings(prior=str(prior), objective="policy-gradient",
                                        data="x", synthetic_fraction=0.5))
    with pytest.raises(ValueError, match="--k must be >= 2"):
        check_settings(FinetuneSettings(prior=str(prior), k=1, **pool_only))
    with pytest.raises(ValueError, match="--sde-noise must be positive"):
        check_settings(FinetuneSettings(prior=str(prior), sde_noise=0.0, **pool_only))
    with pytest.raises(ValueError, match="--sde-steps must be >= 1"):
        check_settings(FinetuneSettings(prior=str(prior), sde_steps=0, **pool_only))
    # A search from the samples: only for the policy gradient, by Adam, within --k samples.
    with pytest.raises(ValueError, match="no --archive-size or --refine-steps"):
        check_settings(FinetuneSettings(prior=str(prior), refine_steps=5, **pool_only))
    searched = {**pool_only, "refine": "gradient", "refine_steps": 5, "k": 4}
    for bad in ({"refine_top": 5}, {"refine": "es"}, {"objective": "best-of-k"}):
        with pytest.raises(ValueError, match="--refine-top searches from"):
            check_settings(FinetuneSettings(prior=str(prior), **{**searched, "refine_top": 2,
                                                                 **bad}))
    with pytest.raises(ValueError, match="--refine-top must be >= 0"):
        check_settings(FinetuneSettings(prior=str(prior), **searched, refine_top=-1))
    check_settings(FinetuneSettings(prior=str(prior), **searched, refine_top=2))


def test_searched_scores_replace_each_sounds_closest_samples_by_where_adam_ends():
    """Each sound's ``top`` closest samples are searched from (refine_archive_gradient on
    those presets alone is the oracle), their scores go back to their own slots, and the
    other samples keep their own distances."""
    from synthmatch.agents.prior_finetune import searched_scores

    synth, distance, audio, start, start_d = near_misses(2)
    gen = torch.Generator().manual_seed(5)
    u = (start[:, None] + 0.05 * torch.randn(2, 4, start.shape[1], generator=gen)).clamp(0, 1)
    with torch.no_grad():
        d = distance(synth.render(u.reshape(8, -1)), audio.repeat_interleave(4, 0)).view(2, 4)
    scores = searched_scores(synth, distance, audio, u, d, 2, 6, 0.01)
    top = d.argsort(dim=1)[:, :2]
    searched = torch.zeros(2, 4, dtype=torch.bool).scatter(1, top, True)
    assert torch.equal(scores[~searched], d[~searched])
    for b in range(2):
        oracle, oracle_d = u[b, top[b]].clone(), d[b, top[b]].clone()
        refine_archive_gradient(synth, distance, audio[b:b + 1].expand(2, -1), oracle,
                                oracle_d, 6, 0.01)
        torch.testing.assert_close(scores[b, top[b]], oracle_d, rtol=1e-4, atol=1e-5)
    assert torch.all(scores <= d) and bool((scores[searched] < d[searched]).any())


def test_policy_gradient_scores_samples_by_the_search_when_asked():
    """With ``search``, the loss's scores are the searched ones: the same draw, each sound's
    closest sample lowered by its Adam run, the rest as drawn."""
    import pytest

    pytest.importorskip("flow_matching")
    from synthmatch.agents.prior_finetune import policy_gradient_loss
    from tests.agents.test_prior import tiny_prior

    synth = make_synth("subtractive")
    distance = PerceptualDistance(synth.sample_rate)
    prior = tiny_prior(synth, seed=1)
    with torch.no_grad():
        audio = synth.render(synth.params.sample(2, torch.Generator().manual_seed(2)))
    mel = prior.mel(audio)
    runs = [policy_gradient_loss(prior, synth, distance, audio, mel, 3, 0.7, 4,
                                 torch.Generator().manual_seed(3), "best-of-k", search)
            for search in (None, (1, 4, 0.01))]
    (_, drawn, u0), (loss, searched, u1) = runs
    assert torch.equal(u0, u1)
    closest = drawn.argmin(dim=1, keepdim=True)
    assert torch.all(searched.gather(1, closest) <= drawn.gather(1, closest))
    assert bool((searched.gather(1, closest) < drawn.gather(1, closest)).any())
    others = torch.ones_like(drawn, dtype=torch.bool).scatter(1, closest, False)
    assert torch.equal(searched[others], drawn[others])
    loss.backward()
