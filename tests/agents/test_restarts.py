"""Gradient descent with restarts: the mechanism against torch's Adam, the restart rule, the
training env, and train_restarts.py end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthmatch.agents.restarts import (
    OBS_NAMES,
    PatienceRule,
    RestartEnv,
    RestartingAdam,
    load_policy,
)


def quadratic(centre: torch.Tensor):
    """Distances of presets to ``centre`` (a smooth stand-in for a render and its score)."""
    return lambda x: ((x - centre) ** 2).sum(1) + 0.01


def test_without_restarts_it_is_torchs_adam_projected_onto_the_box():
    gen = torch.Generator().manual_seed(0)
    starts = torch.rand(3, 4, 5, generator=gen)
    centre = torch.rand(3, 5, generator=gen) * 1.4 - 0.2  # partly outside: the clamp matters
    f = quadratic(centre)
    search = RestartingAdam(starts, ((starts - centre[:, None]) ** 2).sum(2) + 0.01, lr=0.05)
    u = starts[:, 0].clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.05)
    for _ in range(30):
        torch.testing.assert_close(search.u, u.detach())
        x = search.u.clone().requires_grad_(True)
        d = f(x)
        search.record(d, torch.autograd.grad(d.sum(), x)[0])
        search.advance(torch.zeros(3, dtype=torch.bool))
        opt.zero_grad()
        f(u).sum().backward()
        opt.step()
        with torch.no_grad():
            u.clamp_(0.0, 1.0)
    assert search.restarts.tolist() == [0, 0, 0]
    assert (search.best < f(starts[:, 0])).all()


def test_a_restart_goes_to_the_next_best_sample_with_fresh_moments():
    starts = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(1))
    search = RestartingAdam(starts, torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.6, 0.7]]), lr=0.1)
    rule = PatienceRule(2)
    grad = torch.ones(2, 4)
    # Target 0 keeps improving; target 1 stalls (no 0.5% gain) after its first render.
    for step, d in enumerate(([0.09, 0.5], [0.08, 0.499], [0.07, 0.4995])):
        search.record(torch.tensor(d), grad)
        obs = search.observation()
        assert obs.shape == (2, len(OBS_NAMES)) and torch.isfinite(obs).all()
        restart = rule(search)
        assert restart.tolist() == [False, step == 2]
        search.advance(restart)
    torch.testing.assert_close(search.u[1], starts[1, 1])
    assert search.u[0].lt(starts[0, 0]).all()  # Adam stepped down the gradient
    assert search.restarts.tolist() == [0, 1] and search.start_index.tolist() == [0, 1]
    assert search.m[1].abs().sum() == 0 and search.t.tolist() == [3, 0]
    assert search.run_steps.tolist() == [3, 0] and search.stalled[1] == 0
    assert search.best.tolist() == pytest.approx([0.07, 0.499])
    # The observation names the following start: target 1's third sample, 0.7 against 0.499.
    search.record(torch.tensor([0.06, 0.65]), grad)
    obs = search.observation()
    assert obs[1, OBS_NAMES.index("log next start / best")] == pytest.approx(
        math.log(0.7 / 0.499), rel=1e-5)
    # Past the last sample the restarts cycle back to the best one.
    search.advance(torch.tensor([False, True]))
    search.advance(torch.tensor([False, True]))
    torch.testing.assert_close(search.u[1], starts[1, 0])


def test_with_redraw_restarts_past_the_kth_go_to_fresh_samples():
    gen = torch.Generator().manual_seed(2)
    starts = torch.rand(2, 3, 4, generator=gen)
    cycles = {c: torch.rand(2, 3, 4, generator=gen) for c in (1, 2)}
    asked = []

    def redraw(cycle):
        asked.append(cycle)
        return cycles[cycle]

    search = RestartingAdam(starts, torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.6, 0.7]]), lr=0.1,
                            redraw=redraw)
    grad = torch.ones(2, 4)
    visited = []
    for _ in range(7):  # target 1 restarts every step, target 0 never
        search.record(torch.tensor([0.05, 0.5]), grad)
        search.advance(torch.tensor([False, True]))
        visited.append(search.u[1].clone())
    want = [starts[1, 1], starts[1, 2], cycles[1][1, 0], cycles[1][1, 1], cycles[1][1, 2],
            cycles[2][1, 0], cycles[2][1, 1]]
    for got, expected in zip(visited, want, strict=True):
        torch.testing.assert_close(got, expected)
    assert asked == [1, 2]  # each cycle drawn once, when a target first reaches it
    assert search.start_index.tolist() == [0, 7]
    search.record(torch.tensor([0.05, 0.5]), grad)
    assert torch.isfinite(search.observation()).all()


def test_the_env_rewards_the_drop_of_the_best_log_distance():
    from synthmatch.envs.registration import env_synth

    synth = env_synth("SynthMatch-Easy-v0")

    def starts(audio, k, generator):  # random presets instead of a prior's samples
        return synth.params.sample(audio.shape[0] * k, generator).reshape(audio.shape[0], k, -1)

    env = RestartEnv(synth, starts, num_envs=3, k=4, lr=0.01, episode_steps=5, seed=0)
    obs = env.reset()
    assert obs.shape == (3, len(OBS_NAMES)) and np.isfinite(obs).all()
    total = np.zeros(3)
    first_best = env.search.start_distance[:, 0].log()
    for step in range(5):
        before = env.search.best.clone()
        obs, reward, done, infos = env.step(np.array([0, 1, step % 2]))
        assert (reward >= 0).all() and np.isfinite(obs).all()
        total += reward
        if step < 4:
            np.testing.assert_allclose(reward, (before.log() - env.search.best.log()).numpy(),
                                       rtol=1e-5, atol=1e-6)
            assert not done.any()
    assert done.all() and all(info["TimeLimit.truncated"] for info in infos)
    assert [info["restarts"] for info in infos] == [0, 5, 2]
    # The episode's return is the log of the first best over the last.
    last = np.log([info["best_distance"] for info in infos])
    np.testing.assert_allclose(total, first_best.numpy() - last, rtol=1e-4, atol=1e-5)
    assert env.steps == 0  # the next episode has begun


def test_a_policy_file_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "policy.pt"
    torch.save({"kind": "preset_critic"}, path)
    with pytest.raises(ValueError, match="not a restart policy"):
        load_policy(path)


def test_train_restarts_refuses_a_missing_prior_in_one_line(tmp_path):
    import subprocess
    import sys

    from tests.agents.test_training import ROOT

    result = subprocess.run([sys.executable, str(ROOT / "experiments/train_restarts.py"),
                             "--prior", str(tmp_path / "nope.pt"), "--log-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "--prior: no prior checkpoint" in result.stderr
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


def test_a_synth_without_gradients_is_refused():
    from synthmatch.synths import make_synth

    synth = make_synth("subtractive")
    synth.differentiable = False  # as a plugin's or Vital's
    with pytest.raises(ValueError, match="not differentiable"):
        RestartEnv(synth, lambda *a: None, num_envs=2, k=2, lr=0.01, episode_steps=2, seed=0)


@pytest.mark.slow
def test_train_restarts_writes_a_policy_the_leaderboard_runs(tmp_path):
    from synthmatch.leaderboard.meter import RenderMeter
    from synthmatch.leaderboard.methods import METHODS, MatchTask
    from synthmatch.rewards import PerceptualDistance
    from tests.agents.test_critic import subtractive_prior
    from tests.agents.test_training import run_script

    synth, _, prior_path = subtractive_prior(tmp_path)
    result = run_script("train_restarts.py", "--prior", str(prior_path), "--num-envs", "4",
                        "--k", "16", "--episode-steps", "6", "--n-steps", "3",
                        "--total-timesteps", "48", "--log-dir", str(tmp_path / "runs"),
                        "--run-name", "r")
    assert "Median best distance after 22 renders" in result.stdout
    run = tmp_path / "runs" / "r"
    history = __import__("json").loads((run / "history.json").read_text())
    assert [row["timesteps"] for row in history] == [24, 48]
    policy, meta = load_policy(run / "policy.pt")
    assert meta["settings"]["prior"] == str(prior_path) and meta["timesteps"] == 48
    method = METHODS["prior+gradient+rl"](run / "policy.pt")
    assert method.prior_path == prior_path and method.settings()["lr"] == 0.01
    with torch.no_grad():
        audio = synth.render(synth.params.sample(2, torch.Generator().manual_seed(4)))

    def match(budget):
        meter = RenderMeter(synth, PerceptualDistance(synth.sample_rate), audio, budget)
        meter.check_rendered(method.run(MatchTask(synth, meter, 0)))
        return meter

    big, small = match(30), match(20)
    assert big.used.tolist() == [30, 30]
    torch.testing.assert_close(small.history_params[:, :20], big.history_params[:, :20])
