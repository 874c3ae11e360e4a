"""The critic of the prior's proposals: its ranking figures, its loss, and a run of
train_critic.py end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from synthmatch.agents.critic import (
    PresetCritic,
    central_order,
    critic_loss,
    load_critic,
    rank_correlation,
    target_mel,
)


def test_rank_correlation_is_spearmans():
    scipy_stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 20, generator=gen)
    b = a + torch.randn(6, 20, generator=gen)  # related, not identical
    got = rank_correlation(a, b)
    want = [scipy_stats.spearmanr(a[i], b[i]).statistic for i in range(6)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=got.dtype), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rank_correlation(a, a), torch.ones(6))
    torch.testing.assert_close(rank_correlation(a, -a), -torch.ones(6))


def test_the_loss_is_mostly_about_each_targets_ranking():
    y = torch.randn(4, 8)
    assert critic_loss(y, y) == 0
    shifted = y + torch.arange(4.0)[:, None]  # right ranking, wrong level per target
    scrambled = y[:, torch.randperm(8)]       # right level, wrong ranking
    assert 0 < critic_loss(shifted, y) < critic_loss(scrambled, y)


def test_central_order_starts_at_the_proposal_nearest_the_median():
    proposals = torch.tensor([[[0.0, 0.0], [0.5, 0.5], [0.4, 0.6], [1.0, 1.0], [0.6, 0.4]]])
    # Coordinate-wise median (0.5, 0.5): proposal 1 sits on it, 0 and 3 are farthest.
    assert central_order(proposals)[0, 0] == 1
    assert set(central_order(proposals)[0, -2:].tolist()) == {0, 3}


def test_the_critic_learns_a_ranking_from_rewards():
    """Rewards that depend on the preset (closer to 0.3 in every parameter is better) and on
    the target (its mel's mean shifts the best preset): after a short fit the critic ranks
    held-out proposals nearly as the rewards do."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    critic = PresetCritic(3, hidden=64, channels=(4, 8, 8))
    opt = torch.optim.Adam(critic.parameters(), 3e-3)

    def draw(n):
        level = torch.rand(n, generator=gen)
        mel = level[:, None, None] + 0.1 * torch.randn(n, 16, 16, generator=gen)
        presets = torch.rand(n, 8, 3, generator=gen)
        best = 0.2 + 0.6 * level
        log_d = ((presets - best[:, None, None]) ** 2).sum(-1).clamp_min(1e-3).log()
        return mel, presets, log_d

    held_out = draw(64)
    before = rank_correlation(critic(critic.embed(held_out[0]), held_out[1]), held_out[2])
    for _ in range(400):
        mel, presets, log_d = draw(32)
        loss = critic_loss(critic(critic.embed(mel), presets), log_d)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = rank_correlation(critic(critic.embed(held_out[0]), held_out[1]), held_out[2])
    assert abs(float(before.mean())) < 0.4
    assert float(after.mean()) > 0.8


def subtractive_prior(tmp_path):
    """An untrained prior of the subtractive synth, saved as train_prior.py would: (synth,
    prior, path)."""
    pytest.importorskip("flow_matching")
    from synthmatch.synths import make_synth
    from tests.agents.test_prior import tiny_prior

    synth = make_synth("subtractive")
    prior = tiny_prior(synth)
    prior.config.data = {"synth": "subtractive", "n": 1}
    prior_path = tmp_path / "prior.pt"
    torch.save(prior.checkpoint(), prior_path)
    return synth, prior, prior_path


def test_train_critic_writes_a_critic_that_names_its_prior(tmp_path):
    from synthmatch.fileio import sha256_file
    from tests.agents.test_training import ROOT, run_script

    synth, prior, prior_path = subtractive_prior(tmp_path)
    run_script("train_critic.py", "--prior", str(prior_path), "--targets", "24",
               "--proposals", "4", "--val-targets", "8", "--epochs", "2", "--batch-size", "8",
               "--hidden", "16", "--log-dir", str(tmp_path / "runs"), "--run-name", "c")
    run = tmp_path / "runs" / "c"
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    row = history[-1]
    assert -1 <= row["rank_correlation"] <= 1
    assert row["best"] <= min(row["first_choice"], row["random_choice"], row["central_choice"])
    critic, meta = load_critic(run / "critic.pt")
    assert meta["prior"] == str(prior_path) and meta["prior_sha256"] == sha256_file(prior_path)
    assert critic(critic.embed(torch.zeros(2, *prior.config.mel_shape)),
                  torch.rand(2, 5, synth.num_params)).shape == (2, 5)
    # A second run into the same directory is refused (one line, exit 2), not overwritten.
    again = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_critic.py"), "--prior",
         str(prior_path), "--log-dir", str(tmp_path / "runs"), "--run-name", "c"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 2 and "already holds a critic" in again.stderr
    assert "Traceback" not in again.stderr


def test_train_critic_learns_from_a_pool_of_sounds_without_parameters(tmp_path):
    from synthmatch.leaderboard.suites import write_suite
    from tests.agents.test_training import ROOT, run_script

    synth, _, prior_path = subtractive_prior(tmp_path)
    with torch.no_grad():
        audio = synth.render(synth.params.sample(10, torch.Generator().manual_seed(3)))
    write_suite("pool/train", audio.numpy(), sample_rate=synth.sample_rate,
                probe=synth.probe.to_dict(), description="test pool", made_by="tests",
                env_id=None, params=None, param_names=None, root=tmp_path)
    pool = tmp_path / "pool" / "train"
    run_script("train_critic.py", "--prior", str(prior_path), "--pool", str(pool),
               "--targets", "1000", "--proposals", "3", "--val-targets", "4", "--epochs", "1",
               "--batch-size", "4", "--hidden", "16", "--log-dir", str(tmp_path / "runs"),
               "--run-name", "p")
    row = json.loads((tmp_path / "runs" / "p" / "history.json").read_text())[-1]
    assert row["best"] <= row["random_choice"]
    too_small = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_critic.py"), "--prior",
         str(prior_path), "--pool", str(pool), "--val-targets", "10",
         "--log-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert too_small.returncode == 2 and "more than --val-targets" in too_small.stderr


def test_train_critic_refuses_a_missing_prior_in_one_line(tmp_path):
    from tests.agents.test_training import ROOT

    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_critic.py"), "--prior",
         str(tmp_path / "nope.pt"), "--log-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "no prior checkpoint" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_the_critic_ranks_samples_as_the_synth_plays_them():
    """Samples' discrete columns are snapped before the critic reads them (it trained on
    snapped ones); the samples themselves are returned unchanged, reordered."""
    from synthmatch.agents.critic import rank_proposals
    from synthmatch.rewards import PerceptualDistance
    from synthmatch.synths import make_synth

    torch.manual_seed(0)
    synth = make_synth("subtractive")
    distance = PerceptualDistance(synth.sample_rate)
    critic = PresetCritic(synth.num_params, hidden=32, channels=(4, 4, 4)).eval()
    audio = torch.randn(1, synth.num_samples) * 0.1
    proposals = torch.rand(1, 64, synth.num_params, generator=torch.Generator().manual_seed(2))
    ranked = rank_proposals(critic, target_mel(distance, audio), proposals, synth.params)
    with torch.no_grad():
        emb = critic.embed(target_mel(distance, audio))
        snapped = critic(emb, synth.params.quantize(proposals)).argsort(1)
        raw = critic(emb, proposals).argsort(1)
    assert not torch.equal(snapped, raw)  # the snapping matters for these samples
    torch.testing.assert_close(ranked, proposals.gather(1, snapped[..., None].expand_as(
        proposals)))


def test_load_critic_refuses_other_checkpoints(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a critic checkpoint"):
        load_critic(path)
