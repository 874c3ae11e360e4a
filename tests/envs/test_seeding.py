"""Seeding, batched resets and the torch-native path of the vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import synthmatch  # noqa: F401
from synthmatch.envs.seeding import (
    TARGET_STREAM,
    EnvSeeds,
    check_seed,
    hashed_uniform,
    per_env_seeds,
)

MASK64 = (1 << 64) - 1


def splitmix_reference(seed: int, episode: int, stream: int, width: int) -> np.ndarray:
    """The same draws with Python integers, written from the published algorithm."""

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    golden = 0x9E3779B97F4A7C15
    key = mix((mix((seed + golden) & MASK64) + episode * golden) & MASK64)
    out = [mix((key + (stream * (1 << 16) + j) * golden) & MASK64) >> 40
           for j in range(1, width + 1)]
    return np.array(out, dtype=np.float64) / 2.0**24


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63 - 1, 2**63, 2**64 - 1])
def test_hashed_uniform_matches_the_reference(seed):
    seeds = torch.tensor([seed - (1 << 64) if seed >= 1 << 63 else seed])
    for episode, stream in [(0, 0), (3, 1), (10**6, 0)]:
        got = hashed_uniform(seeds, torch.tensor([episode]), stream, 24)[0].numpy()
        np.testing.assert_array_equal(got, splitmix_reference(seed, episode, stream, 24))


def test_hashed_uniform_is_uniform_and_row_independent():
    seeds = torch.arange(4000)
    u = hashed_uniform(seeds, torch.zeros(4000, dtype=torch.long), TARGET_STREAM, 8)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 0.01
    # A row is the same whatever else is in the batch.
    alone = hashed_uniform(seeds[17:18], torch.zeros(1, dtype=torch.long), TARGET_STREAM, 8)
    torch.testing.assert_close(alone[0], u[17], rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["abc", 1.5, True, -1, 2**64, [1, 2]])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ValueError, match="seed"):
        per_env_seeds(bad, 3)


def test_check_seed_accepts_numpy_integers():
    assert check_seed(np.int64(7)) == 7


def test_masked_reset_with_a_seed_leaves_other_envs_alone():
    venv = gym.make_vec("SynthMatch-Easy-v0", num_envs=3, max_episode_steps=50)
    venv.reset(seed=0)
    venv.step(np.zeros(venv.action_space.shape, np.float32))
    before = venv.unwrapped.core.rng.seeds.clone()
    target_before = venv.unwrapped.core.target_params.clone()
    mask = np.array([False, True, False])
    venv.reset(seed=100, options={"reset_mask": mask})
    core = venv.unwrapped.core
    torch.testing.assert_close(core.rng.seeds[[0, 2]], before[[0, 2]])
    torch.testing.assert_close(core.target_params[[0, 2]], target_before[[0, 2]])
    assert int(core.steps[0]) == 1 and int(core.steps[1]) == 0
    # env 1 now plays what a single env seeded 100 + 1 plays.
    single = gym.make("SynthMatch-Easy-v0")
    single.reset(seed=101)
    torch.testing.assert_close(core.target_params[1], single.unwrapped.core.target_params[0])


def test_unseeded_envs_get_fresh_entropy_and_then_continue():
    rng = EnvSeeds(2, torch.device("cpu"))
    rng.seed(None, [0, 1])
    first = rng.seeds.clone()
    assert rng.seeded.all() and first[0] != first[1]
    rng.seed(None)
    torch.testing.assert_close(rng.seeds, first)


def test_episodes_of_a_seed_differ_and_repeat():
    env = gym.make("SynthMatch-Easy-v0")
    targets = []
    for _ in range(3):
        env.reset()
        targets.append(env.unwrapped.core.target_params[0].clone())
    env.reset(seed=5)
    a = env.unwrapped.core.target_params[0].clone()
    env.reset()
    b = env.unwrapped.core.target_params[0].clone()
    env.reset(seed=5)
    torch.testing.assert_close(env.unwrapped.core.target_params[0], a)
    assert not torch.equal(a, b) and not torch.equal(targets[0], targets[1])


def test_torch_path_equals_numpy_path():
    kwargs = {"num_envs": 3, "max_episode_steps": 2}
    np_env = gym.make_vec("SynthMatch-Easy-v0", **kwargs)
    th_env = gym.make_vec("SynthMatch-Easy-v0", array_type="torch", **kwargs)
    a_obs, _ = np_env.reset(seed=3)
    b_obs, _ = th_env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        for key in a_obs:
            np.testing.assert_allclose(a_obs[key], b_obs[key].numpy(), atol=1e-6)
        actions = rng.uniform(-1, 1, np_env.action_space.shape).astype(np.float32)
        a_obs, a_rew, a_term, a_trunc, a_info = np_env.step(actions)
        b_obs, b_rew, b_term, b_trunc, b_info = th_env.step(torch.from_numpy(actions))
        assert isinstance(b_rew, torch.Tensor) and b_term.dtype == torch.bool
        np.testing.assert_allclose(a_rew, b_rew.numpy(), atol=1e-6)
        np.testing.assert_array_equal(a_trunc, b_trunc.numpy())
        np.testing.assert_array_equal(a_info["_final_obs"], b_info["_final_obs"].numpy())
        for i in np.flatnonzero(a_info["_final_obs"]):
            for key, value in a_info["final_obs"][i].items():
                np.testing.assert_allclose(value, b_info["final_obs"][key][i].numpy(),
                                           atol=1e-6)
        # Rows that did not end carry the current observation in the torch path.
        for i in np.flatnonzero(~a_info["_final_obs"]):
            np.testing.assert_allclose(b_info["final_obs"]["params"][i].numpy(),
                                       a_obs["params"][i], atol=1e-6)


def test_returned_observations_never_change_afterwards():
    venv = gym.make_vec("SynthMatch-Easy-v0", num_envs=2, max_episode_steps=1)
    obs, _ = venv.reset(seed=0)
    kept = {k: v.copy() for k, v in obs.items()}
    venv.step(np.ones(venv.action_space.shape, np.float32))  # every env resets
    for key in obs:
        np.testing.assert_array_equal(obs[key], kept[key])


@pytest.mark.parametrize("make", ["single", "vector"])
def test_step_before_reset_says_so(make):
    env = (gym.make("SynthMatch-Easy-v0").unwrapped if make == "single"
           else gym.make_vec("SynthMatch-Easy-v0", num_envs=2))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(env.action_space.shape, np.float32))


def test_complex_actions_are_refused():
    env = gym.make("SynthMatch-Easy-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="real"):
        env.step(np.zeros(env.action_space.shape, np.complex64))
