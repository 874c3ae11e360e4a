"""Search in the prior's noise space: the mechanism, the training env, and train_latent.py end
to end with the prior+latent-rl method it feeds."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from synthmatch.agents.latent import (
    SIGMA,
    LatentEnv,
    LatentSearch,
    load_policy,
    make_policy,
    policy_step,
)

pytest.importorskip("flow_matching")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.agents.test_critic import subtractive_prior

    return subtractive_prior(tmp_path_factory.mktemp("latent"))


def test_start_keeps_the_noise_of_the_best_of_the_priors_own_draw(setup):
    synth, prior, _ = setup
    with torch.no_grad():
        audio = synth.render(synth.params.sample(2, torch.Generator().manual_seed(1)))
    seen = []

    def score(u):
        seen.append(u)
        return torch.tensor([[0.5, 0.2, 0.9], [0.1, 0.3, 0.4]])

    search = LatentSearch.start(prior, synth, audio, 3, torch.Generator().manual_seed(7), score)
    expected = prior.sample_audio(audio, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(seen[0], expected)
    torch.testing.assert_close(search.best, torch.tensor([0.2, 0.1]))
    noise = prior.draw_noise(6, torch.Generator().manual_seed(7)).reshape(2, 3, -1)
    torch.testing.assert_close(search.z, noise[[0, 1], [1, 0]])
    # The kept noise decodes to the kept sample.
    torch.testing.assert_close(search.propose(torch.zeros_like(search.z)),
                               expected[[0, 1], [1, 0]])


def test_record_keeps_only_the_proposals_that_sound_closer(setup):
    _, prior, _ = setup
    p = prior.config.num_params
    search = LatentSearch(prior, list(range(p)), torch.zeros(2, prior.config.embed_dim),
                          torch.zeros(2, p), torch.tensor([0.5, 0.5]))
    with pytest.raises(RuntimeError, match="propose"):
        search.record(torch.tensor([0.1, 0.1]))
    search.propose(torch.ones(2, p))
    search.record(torch.tensor([0.4, 0.6]))
    assert search.z[:, 0].tolist() == [1.0, 0.0]
    torch.testing.assert_close(search.best, torch.tensor([0.4, 0.5]))
    obs = search.observation()
    assert obs.shape == (2, prior.config.embed_dim + p + 2)
    assert obs[0, -2].item() == pytest.approx(math.log10(0.4))
    assert obs[0, -1].item() == pytest.approx(0.01)


def test_the_env_rewards_the_drop_of_the_log_best_and_restarts_episodes(setup):
    synth, prior, _ = setup
    env = LatentEnv(synth, prior, num_envs=3, k=4, episode_steps=3, seed=0)
    obs = env.reset()
    assert obs.shape == (3, env.observation_space.shape[0])
    total = np.zeros(3)
    start = env.search.best.clone()
    for step in range(3):
        env.step_async(np.random.default_rng(step).normal(0, 0.3, (3, prior.config.num_params)))
        best = env.search.best.clone()
        obs, reward, done, infos = env.step_wait()
        assert (reward >= 0).all() and done.all() == (step == 2)
        total += reward
        if step < 2:
            np.testing.assert_allclose(reward, (best.log() - env.search.best.log()).numpy(),
                                       rtol=1e-5)
    final = [info["best_distance"] for info in infos]
    np.testing.assert_allclose(total, np.log(start.numpy()) - np.log(final), rtol=1e-4)
    assert "terminal_observation" in infos[0] and env.search.t == 0  # a fresh episode


def test_an_untrained_policy_is_the_untrained_rule(setup):
    """Mean near zero and scale SIGMA: before PPO moves it, prior+latent-rl steps like
    prior+latent-es."""
    _, prior, _ = setup
    p = prior.config.num_params
    policy = make_policy(prior)
    search = LatentSearch(prior, list(range(p)), torch.randn(4, prior.config.embed_dim),
                          torch.randn(4, p), torch.rand(4))
    step = policy_step(policy, search, torch.Generator().manual_seed(0))
    normal = torch.randn(4, p, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(step, SIGMA * normal, atol=0.05, rtol=0.0)


def test_train_latent_writes_a_policy_that_prior_latent_rl_runs(setup, tmp_path):
    from synthmatch.leaderboard.meter import RenderMeter
    from synthmatch.leaderboard.methods import METHODS, MatchTask
    from synthmatch.rewards import PerceptualDistance
    from tests.agents.test_training import run_script

    synth, _, prior_path = setup
    result = run_script("train_latent.py", "--prior", str(prior_path), "--num-envs", "4",
                        "--k", "16", "--episode-steps", "6", "--n-steps", "3",
                        "--total-timesteps", "48", "--target-kl", "0.02",
                        "--log-dir", str(tmp_path / "runs"), "--run-name", "l")
    assert "Median best distance after 22 renders" in result.stdout
    run = tmp_path / "runs" / "l"
    assert json.loads((run / "config.json").read_text())["target_kl"] == 0.02
    history = json.loads((run / "history.json").read_text())
    assert [row["timesteps"] for row in history] == [24, 48]
    method = METHODS["prior+latent-rl"](run / "policy.pt")
    assert method.prior_path == prior_path and method.settings()["timesteps"] == 48
    _, meta = load_policy(run / "policy.pt", method.prior)
    assert meta["settings"]["prior"] == str(prior_path)
    with torch.no_grad():
        audio = synth.render(synth.params.sample(2, torch.Generator().manual_seed(4)))

    def match(budget):
        meter = RenderMeter(synth, PerceptualDistance(synth.sample_rate), audio, budget)
        meter.check_rendered(method.run(MatchTask(synth, meter, 0)))
        return meter

    big, small = match(30), match(20)
    assert big.used.tolist() == [30, 30]
    torch.testing.assert_close(small.history_params[:, :20], big.history_params[:, :20])
    with pytest.raises(ValueError, match="not a latent-search policy"):
        METHODS["prior+latent-rl"](prior_path)


def test_settings_that_cannot_train_are_refused_before_a_run_starts():
    from synthmatch.agents.latent import LatentSettings, check_settings
    from tests.agents.test_training import ROOT

    prior = str(ROOT / "synthmatch/app/data/prior-subtractive.pt")
    with pytest.raises(ValueError, match="--target-kl must be positive"):
        check_settings(LatentSettings(prior=prior, target_kl=0.0))
    check_settings(LatentSettings(prior=prior, target_kl=0.02))
