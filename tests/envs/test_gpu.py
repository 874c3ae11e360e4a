"""The envs on a CUDA device: batched resets, autoreset, the SB3 adapter, the torch-native path
and the number of GPU-to-CPU synchronisations per step. Skipped without CUDA."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import synthmatch  # noqa: F401
from synthmatch.devices import count_syncs
from synthmatch.envs.sb3 import make_sb3_vec_env

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# Host waits allowed per step of the torch-native path on SynthMatch-v0: the action check, the
# synth's parameter check and unison grouping, which envs ended, and the reward's audio check;
# resets render and score new targets and starts, which adds a few more.
SYNC_BUDGET_STEP = 6
SYNC_BUDGET_STEP_WITH_RESETS = 12


@pytest.mark.parametrize("num_envs", [64, 1024])
@pytest.mark.parametrize("env_id", ["SynthMatch-v0", "SynthMatch-FM-v0",
                                    "SynthMatch-TorchSynth-v0"])
def test_cuda_vector_env_matches_cpu_with_autoresets(env_id, num_envs):
    kwargs = {"num_envs": num_envs, "max_episode_steps": 2}
    cpu = gym.make_vec(env_id, **kwargs)
    gpu = gym.make_vec(env_id, device="cuda", **kwargs)
    a, _ = cpu.reset(seed=0)
    b, _ = gpu.reset(seed=0)
    np.testing.assert_allclose(a["target_mel"], b["target_mel"], atol=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(3):  # the second step resets every env
        actions = rng.uniform(-1, 1, cpu.action_space.shape).astype(np.float32)
        oa, ra, ta, tra, ia = cpu.step(actions)
        ob, rb, tb, trb, ib = gpu.step(actions)
        np.testing.assert_array_equal(tra, trb)
        np.testing.assert_allclose(ra, rb, atol=2e-3)
        np.testing.assert_allclose(oa["params"], ob["params"], atol=1e-5)


def test_torch_native_path_stays_on_the_device():
    venv = gym.make_vec("SynthMatch-v0", num_envs=64, device="cuda", array_type="torch",
                        max_episode_steps=2)
    obs, info = venv.reset(seed=0)
    actions = torch.zeros(64, venv.single_action_space.shape[0], device="cuda")
    for _ in range(2):
        obs, reward, terminated, truncated, info = venv.step(actions)
    for value in [*obs.values(), reward, terminated, truncated, *info["final_obs"].values()]:
        assert value.device.type == "cuda"
    assert bool(truncated.all())


def test_sb3_adapter_on_cuda():
    from stable_baselines3 import PPO

    vec_env = make_sb3_vec_env("SynthMatch-Easy-v0", num_envs=64, seed=0, device="cuda",
                               max_episode_steps=4)
    model = PPO("MultiInputPolicy", vec_env, n_steps=8, batch_size=128, n_epochs=1,
                device="cuda", seed=0)
    model.learn(64 * 16)
    assert model.num_timesteps >= 64 * 16


@pytest.mark.parametrize("array_type", ["torch", "numpy"])
def test_host_syncs_per_step_stay_within_budget(array_type):
    n = 256
    venv = gym.make_vec("SynthMatch-v0", num_envs=n, device="cuda", array_type=array_type,
                        max_episode_steps=3)
    venv.reset(seed=0)
    actions = (torch.zeros(n, venv.single_action_space.shape[0], device="cuda")
               if array_type == "torch" else np.zeros(venv.action_space.shape, np.float32))
    extra = 0 if array_type == "torch" else 1  # the numpy path's one copy to the host
    venv.step(actions)  # warm-up
    assert count_syncs(lambda: venv.step(actions)) <= SYNC_BUDGET_STEP + extra
    # The third step truncates every episode: all envs reset.
    assert count_syncs(lambda: venv.step(actions)) <= SYNC_BUDGET_STEP_WITH_RESETS + extra
