"""Env ids backed by real synthesizers: Vital (optional extra) and VST3 (a plugin file)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import synthmatch  # noqa: F401  (registers the ids)
from tests.conftest import plugin_path

VITAL_CONTROLS = ["osc_1_wave_frame", "filter_1_cutoff_hz", "env_1_decay_s"]


def check_both(env_id: str, **kwargs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped)
        sb3_check_env(gym.make(env_id, disable_env_checker=True, **kwargs), warn=False)


def test_vital_env_passes_both_checkers_and_steps_as_a_batch():
    pytest.importorskip("vita")
    kwargs = {"synth_kwargs": {"controls": VITAL_CONTROLS}}
    check_both("SynthMatch-Vital-v0", **kwargs)
    venv = gym.make_vec("SynthMatch-Vital-v0", num_envs=2, **kwargs)
    obs, info = venv.reset(seed=0)
    assert obs["params"].shape == (2, 3) and (info["distance"] > 0).all()
    _, reward, terminated, *_ = venv.step(np.zeros((2, 3), dtype=np.float32))
    # Standing still changes nothing: no reward but the success bonus where the target
    # happens to lie within the success threshold of the start.
    np.testing.assert_allclose(reward, terminated.astype(np.float32), atol=1e-6)


@pytest.mark.vst
def test_vst_env_passes_both_checkers_with_a_real_instrument():
    kwargs = {"synth_kwargs": {"plugin_path": str(plugin_path("Nekobi")),
                               "parameters": ["cutoff*", "decay*", "waveform"]}}
    check_both("SynthMatch-VST-v0", **kwargs)
    venv = gym.make_vec("SynthMatch-VST-v0", num_envs=2, **kwargs)
    obs, _ = venv.reset(seed=0)
    assert venv.unwrapped.param_names == ("waveform", "cutoff_pct", "decay_pct")
    _, reward, terminated, *_ = venv.step(np.zeros((2, 3), dtype=np.float32))
    # Standing still changes nothing: no reward but the success bonus where the target
    # happens to lie within the success threshold of the start.
    np.testing.assert_allclose(reward, terminated.astype(np.float32), atol=1e-6)


def test_vst_env_without_a_plugin_path_says_how_to_give_one():
    with pytest.raises(TypeError, match="plugin_path=.*synth_kwargs"):
        gym.make("SynthMatch-VST-v0")
