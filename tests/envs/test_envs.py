"""Registered environments: API checkers, determinism, vector/single parity, SB3, bad input."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.envs import (
    SB3VecEnv,
    SynthMatchEnv,
    SynthMatchVectorEnv,
    env_ids,
    make_sb3_vec_env,
)
from tests.conftest import cuda

ALL_IDS = env_ids(external=False)  # VST and Vital: tests/envs/test_external_envs.py


def test_registry_lists_every_backend_and_difficulty():
    assert ALL_IDS[:3] == ["SynthMatch-Easy-v0", "SynthMatch-Medium-v0", "SynthMatch-v0"]
    for backend in ("Subtractive", "FM", "TorchSynth"):
        for level in ("-Easy", "-Medium", ""):
            spec = gym.spec(f"SynthMatch-{backend}{level}-v0")
            assert spec.max_episode_steps == 50 and spec.vector_entry_point


def test_free_parameter_counts_follow_difficulty():
    sizes = {i: gym.make(i).action_space.shape[0] for i in
             ("SynthMatch-Easy-v0", "SynthMatch-Medium-v0", "SynthMatch-v0")}
    assert sizes == {"SynthMatch-Easy-v0": 4, "SynthMatch-Medium-v0": 12, "SynthMatch-v0": 24}


def test_module_prefixed_id():
    env = gym.make("synthmatch:SynthMatch-v0")
    assert env.unwrapped.param_names[0] == "osc1_shape"


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_and_sb3_checkers(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(gym.make(env_id, disable_env_checker=True).unwrapped)
        sb3_check_env(gym.make(env_id, disable_env_checker=True), warn=False)


def rollout(env: gym.Env, seed: int, steps: int) -> tuple[list, list]:
    rng = np.random.default_rng(123)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(
            rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    return observations, rewards


@pytest.mark.parametrize("env_id", ["SynthMatch-v0", "SynthMatch-FM-v0",
                                    "SynthMatch-TorchSynth-Easy-v0"])
def test_same_seed_same_episode(env_id):
    obs_a, rew_a = rollout(gym.make(env_id, max_episode_steps=4), seed=7, steps=10)
    obs_b, rew_b = rollout(gym.make(env_id, max_episode_steps=4), seed=7, steps=10)
    obs_c, _ = rollout(gym.make(env_id, max_episode_steps=4), seed=8, steps=10)
    assert rew_a == rew_b
    for a, b in zip(obs_a, obs_b, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(obs_a[0]["target_mel"], obs_c[0]["target_mel"])


@pytest.mark.parametrize("env_id", ["SynthMatch-v0", "SynthMatch-FM-Medium-v0",
                                    "SynthMatch-TorchSynth-Easy-v0"])
def test_vector_env_equals_single_envs(env_id):
    n, steps, limit = 4, 7, 3  # the limit forces autoresets mid-run
    venv = gym.make_vec(env_id, num_envs=n, max_episode_steps=limit)
    assert isinstance(venv, SynthMatchVectorEnv)
    singles = [gym.make(env_id, max_episode_steps=limit) for _ in range(n)]
    v_obs, _ = venv.reset(seed=10)
    s_obs = [env.reset(seed=10 + i)[0] for i, env in enumerate(singles)]
    for i, obs in enumerate(s_obs):
        for key in obs:
            np.testing.assert_allclose(v_obs[key][i], obs[key], atol=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        actions = rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32)
        v_obs, v_rew, v_term, v_trunc, v_info = venv.step(actions)
        for i, env in enumerate(singles):
            obs, rew, term, trunc, info = env.step(actions[i])
            assert (term, trunc) == (v_term[i], v_trunc[i])
            assert rew == pytest.approx(v_rew[i], abs=1e-4)
            # As in Gymnasium's vector envs, the info of an ended episode is in final_info;
            # info itself belongs to the new episode.
            v_last = v_info["final_info"][i] if term or trunc else {
                k: v_info[k][i] for k in ("distance", "best_distance")}
            assert info["distance"] == pytest.approx(v_last["distance"], rel=1e-4)
            assert info["best_distance"] == pytest.approx(v_last["best_distance"], rel=1e-4)
            if term or trunc:
                np.testing.assert_allclose(v_info["final_obs"][i]["params"], obs["params"],
                                           atol=1e-6)
                obs, _ = env.reset()
            for key in obs:
                np.testing.assert_allclose(v_obs[key][i], obs[key], atol=1e-4)


def test_vector_env_truncates_and_reports_final_observation():
    venv = gym.make_vec("SynthMatch-Easy-v0", num_envs=3, max_episode_steps=2)
    venv.reset(seed=0)
    zero = np.zeros(venv.action_space.shape, dtype=np.float32)
    _, _, _, trunc, info = venv.step(zero)
    assert not trunc.any() and "final_obs" not in info
    obs, _, term, trunc, info = venv.step(zero)
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all()
    assert set(info["final_obs"][0]) == {"target_mel", "current_mel", "params"}
    assert info["final_info"][1]["best_distance"] <= info["final_info"][1]["distance"]
    # info, like the observation, belongs to the new episode, which has not moved yet.
    np.testing.assert_allclose(info["best_distance"], info["distance"])
    # The returned observation already belongs to a fresh episode: new target.
    assert not np.array_equal(obs["target_mel"][0], info["final_obs"][0]["target_mel"])


def test_partial_reset_with_mask():
    venv = gym.make_vec("SynthMatch-Easy-v0", num_envs=3)
    obs, _ = venv.reset(seed=0)
    again, _ = venv.reset(options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(obs["target_mel"][0], again["target_mel"][0])
    assert not np.array_equal(obs["target_mel"][1], again["target_mel"][1])


def test_sb3_vec_env_matches_gymnasium_vector_env():
    a = make_sb3_vec_env("SynthMatch-Easy-v0", num_envs=3, seed=5, max_episode_steps=2)
    b = gym.make_vec("SynthMatch-Easy-v0", num_envs=3, max_episode_steps=2)
    obs_a = a.reset()
    obs_b, _ = b.reset(seed=5)
    np.testing.assert_array_equal(obs_a["target_mel"], obs_b["target_mel"])
    actions = np.full((3, 4), 0.5, dtype=np.float32)
    for _ in range(2):
        obs_a, rew_a, done_a, infos = a.step(actions)
        obs_b, rew_b, term_b, trunc_b, _ = b.step(actions)
        np.testing.assert_allclose(rew_a, rew_b, atol=1e-6)
    assert done_a.all()
    assert infos[0]["TimeLimit.truncated"] and "terminal_observation" in infos[0]
    assert "is_success" in infos[0] and "param_mae" in infos[0]
    np.testing.assert_array_equal(obs_a["target_mel"], obs_b["target_mel"])


@pytest.mark.slow
def test_sb3_ppo_learns_on_the_vector_env():
    from stable_baselines3 import PPO

    vec_env = make_sb3_vec_env("SynthMatch-Easy-v0", num_envs=4, seed=0)
    model = PPO("MultiInputPolicy", vec_env, n_steps=8, batch_size=16, n_epochs=1, seed=0,
                device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64
    action, _ = model.predict(vec_env.reset(), deterministic=True)
    assert action.shape == (4, 4)


def test_sb3_adapter_rejects_other_envs():
    with pytest.raises(TypeError, match="SynthMatchVectorEnv"):
        SB3VecEnv(gym.make("CartPole-v1"))


# ------------------------------------------------------------------ reset options and input


def test_target_params_option_gives_that_target():
    env = gym.make("SynthMatch-Easy-v0")
    target = np.array([0.1, 0.9, 0.3, 0.5], dtype=np.float32)
    _, info = env.reset(seed=0, options={"target_params": target, "start": target})
    assert info["distance"] == pytest.approx(0.0, abs=1e-6)
    assert info["param_mae"] == pytest.approx(0.0, abs=1e-7)
    _, reward, terminated, _, info = env.step(np.zeros(4, dtype=np.float32))
    assert terminated and info["is_success"] and reward == pytest.approx(1.0)


def test_target_audio_option_matches_its_own_render():
    env = gym.make("SynthMatch-Easy-v0")
    synth = env.unwrapped.core.synth
    target = np.array([0.7, 0.2, 0.4, 0.6], dtype=np.float32)
    audio = synth.render(torch.from_numpy(target)[None])[0].numpy()
    stereo = np.stack([audio, audio], axis=1)  # (T, 2)
    _, info = env.reset(seed=0, options={"target_audio": stereo, "target_sample_rate": 16000,
                                         "start": target})
    assert info["distance"] == pytest.approx(0.0, abs=1e-5)
    assert "param_mae" not in info  # unknown target parameters
    pcm = np.round(audio * 32767).astype(np.int16)
    env.reset(options={"target_audio": pcm, "target_sample_rate": 16000})
    np.testing.assert_allclose(env.unwrapped.core.target_audio[0].numpy(), audio, atol=1e-4)


def test_target_audio_is_resampled():
    env = gym.make("SynthMatch-Easy-v0")
    t = np.arange(44100) / 44100.0
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    obs, _ = env.reset(seed=0, options={"target_audio": tone, "target_sample_rate": 44100})
    audio = env.unwrapped.core.target_audio[0].numpy()
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=1)
    assert obs["target_mel"].shape == env.observation_space["target_mel"].shape


@pytest.mark.parametrize("audio, rate, match", [
    (np.zeros(0), 16000, "empty"),
    (np.zeros(16000), 16000, "silent"),
    (np.full(16000, np.nan), 16000, "NaN"),
    (np.full(16000, 3.0), 16000, r"\[-1, 1\]"),
    (np.zeros((3, 4, 5)), 16000, "1-D or 2-D"),
    (np.ones(100) * 0.1, -5, "sample rate"),
])
def test_bad_target_audio_raises(audio, rate, match):
    env = gym.make("SynthMatch-v0")
    with pytest.raises(ValueError, match=match):
        env.reset(options={"target_audio": audio, "target_sample_rate": rate})


def test_bad_options_raise():
    env = gym.make("SynthMatch-v0")
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"targt_params": [0.5] * 24})
    with pytest.raises(ValueError, match="target_sample_rate"):
        env.reset(options={"target_audio": np.ones(100) * 0.1})
    with pytest.raises(ValueError, match=r"target_params must have shape \(24,\)"):
        env.reset(options={"target_params": [0.5] * 3})
    with pytest.raises(ValueError, match="start"):
        env.reset(options={"start": "middle"})


def test_nan_and_misshapen_actions_raise_before_rendering():
    env = gym.make("SynthMatch-Easy-v0", disable_env_checker=True)
    env.reset(seed=0)
    before = env.unwrapped.core.params.clone()
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0.1, np.nan, 0.0, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5, dtype=np.float32))
    assert torch.equal(env.unwrapped.core.params, before)


def test_actions_are_clipped_and_scaled():
    env = gym.make("SynthMatch-Easy-v0", max_step=0.1, disable_env_checker=True)
    obs, _ = env.reset(seed=0)
    obs2, *_ = env.step(np.array([5.0, -5.0, 0.5, 0.0], dtype=np.float32))
    delta = obs2["params"] - obs["params"]
    expected = np.clip(obs["params"] + np.array([0.1, -0.1, 0.05, 0.0]), 0, 1) - obs["params"]
    np.testing.assert_allclose(delta, expected, atol=1e-6)


def test_absolute_action_mode_sets_parameters():
    env = gym.make("SynthMatch-Easy-v0", action_mode="absolute")
    env.reset(seed=0)
    obs, *_ = env.step(np.array([-1.0, 1.0, 0.0, 0.5], dtype=np.float32))
    np.testing.assert_allclose(obs["params"], [0.0, 1.0, 0.5, 0.75], atol=1e-6)


def test_initializer_starts_episodes_from_its_output():
    seen = []

    def initializer(audio: torch.Tensor) -> torch.Tensor:
        seen.append(audio.shape)
        return torch.full((audio.shape[0], 4), 0.25)

    env = gym.make("SynthMatch-Easy-v0")
    obs, _ = env.reset(seed=0, options={"initializer": initializer})
    assert seen == [(1, 16000)]
    np.testing.assert_allclose(obs["params"], 0.25)


def test_rewards_telescope_to_relative_improvement():
    env = gym.make("SynthMatch-v0", start="random")
    _, info = env.reset(seed=3)
    d0, total = info["distance"], 0.0
    rng = np.random.default_rng(1)
    for _ in range(5):
        _, reward, terminated, _, info = env.step(rng.uniform(-1, 1, 24).astype(np.float32))
        total += reward
    assert not terminated
    assert total == pytest.approx(1.0 - info["distance"] / d0, abs=1e-4)
    assert info["best_distance"] <= min(d0, info["distance"])


def test_improve_mode_keeps_only_proposals_that_sound_closer():
    """accept="improve": the state is the best preset so far; each step's render is kept only
    if its distance is lower, so rewards are never negative and still telescope."""
    env = gym.make("SynthMatch-v0", start="random", accept="improve", max_step=0.3)
    obs, info = env.reset(seed=3)
    d0, total, kept = info["distance"], 0.0, 0
    rng = np.random.default_rng(1)
    for _ in range(12):
        before, dist = obs["params"], info["distance"]
        obs, reward, _, _, info = env.step(rng.uniform(-1, 1, 24).astype(np.float32))
        assert reward >= 0.0 and info["distance"] <= dist
        if reward > 0:
            kept += 1
            assert info["distance"] < dist and not np.array_equal(obs["params"], before)
        else:
            assert info["distance"] == dist
            np.testing.assert_array_equal(obs["params"], before)
        total += reward
    assert 0 < kept < 12  # both branches ran
    assert total == pytest.approx(1.0 - info["distance"] / d0, abs=1e-4)
    # The current spectrogram is the kept preset's: a reset to it observes the same one.
    again = gym.make("SynthMatch-v0", start="random")
    again_obs, again_info = again.reset(seed=3, options={"start": obs["params"]})
    np.testing.assert_allclose(again_obs["current_mel"], obs["current_mel"], atol=1e-5)
    assert again_info["distance"] == pytest.approx(info["distance"], abs=1e-5)


def test_improve_mode_observes_its_last_proposal():
    """last_step: zeros at reset, then the clipped action and +1 (kept) or -1 (rejected), in
    the single env, both vector env array types and through the checkers."""
    env = gym.make("SynthMatch-Easy-v0", accept="improve", max_step=0.3)
    assert env.observation_space["last_step"].shape == (5,)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["last_step"], np.zeros(5, dtype=np.float32))
    obs, reward, *_ = env.step(np.array([2.0, -0.5, 0.25, 0.0], dtype=np.float32))
    np.testing.assert_allclose(obs["last_step"], [1.0, -0.5, 0.25, 0.0,
                                                  1.0 if reward > 0 else -1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(gym.make("SynthMatch-Easy-v0", accept="improve",
                               disable_env_checker=True).unwrapped)
    for array_type in ("numpy", "torch"):
        venv = gym.make_vec("SynthMatch-Easy-v0", num_envs=3, accept="improve",
                            array_type=array_type)
        obs, _ = venv.reset(seed=1)
        assert set(obs) == {"target_mel", "current_mel", "params", "last_step"}
        actions = np.full((3, 4), 0.5, dtype=np.float32)
        obs, reward, *_ = venv.step(actions if array_type == "numpy"
                                    else torch.from_numpy(actions))
        last = np.asarray(obs["last_step"])
        np.testing.assert_allclose(last[:, :4], 0.5)
        np.testing.assert_array_equal(last[:, 4], np.where(np.asarray(reward) > 0, 1.0, -1.0))


def test_rgb_array_render_shows_both_spectrograms():
    env = gym.make("SynthMatch-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    left, right = frame[:, : frame.shape[1] // 2 - 3], frame[:, frame.shape[1] // 2 + 3:]
    assert frame.shape[0] == 64 * 3 and left.std() > 0 and right.std() > 0


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="action_mode"):
        gym.make("SynthMatch-v0", action_mode="relative")
    with pytest.raises(ValueError, match="max_step"):
        gym.make("SynthMatch-v0", max_step=0.0)
    with pytest.raises(ValueError, match="accept"):
        gym.make("SynthMatch-v0", accept="greedy")
    with pytest.raises(ValueError, match="render_mode"):
        SynthMatchEnv(render_mode="human")
    with pytest.raises(KeyError, match="unknown parameter"):
        gym.make("SynthMatch-v0", free_params=["cutoff"])


@cuda
@pytest.mark.gpu
def test_vector_env_on_cuda_matches_cpu():
    cpu = gym.make_vec("SynthMatch-v0", num_envs=8)
    gpu = gym.make_vec("SynthMatch-v0", num_envs=8, device="cuda")
    a, _ = cpu.reset(seed=0)
    b, _ = gpu.reset(seed=0)
    np.testing.assert_allclose(a["target_mel"], b["target_mel"], atol=1e-3)
    actions = np.zeros(cpu.action_space.shape, dtype=np.float32)
    _, rc, *_ = cpu.step(actions)
    _, rg, *_ = gpu.step(actions)
    np.testing.assert_allclose(rc, rg, atol=1e-3)
