"""Bad inputs a new user tries, one row each: the input, and the clear error or the correct
result it must give (issue 11). Script rows run the scripts as a user would and check for a
one-line message, exit code 2 and nothing left behind."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest

import synthmatch  # noqa: F401

SR = 16000
T = np.arange(SR) / SR
TONE = (0.5 * np.sin(2 * np.pi * 440 * T)).astype(np.float32)


def single():
    return gym.make("SynthMatch-Easy-v0")


def vector(n=4):
    return gym.make_vec("SynthMatch-Easy-v0", num_envs=n)


def audio_options(audio, rate=SR):
    return {"target_audio": audio, "target_sample_rate": rate}


# (id, make env, call on the env, error type, message pattern)
ENV_ERRORS = [
    ("seed-string", single, lambda e: e.reset(seed="abc"), ValueError, "seed must be an integer"),
    ("seed-2**70", single, lambda e: e.reset(seed=2**70), ValueError, r"seed must be in \[0"),
    ("vector-seed-float", vector, lambda e: e.reset(seed=1.5), ValueError, "seed must be an"),
    ("vector-seed-count", vector, lambda e: e.reset(seed=[1, 2]), ValueError, "2 seeds for 4"),
    ("options-not-dict", single, lambda e: e.reset(options=[1]), ValueError,
     "options must be a dict"),
    ("vector-options-not-dict", vector, lambda e: e.reset(options="x"), ValueError,
     "options must be a dict"),
    ("sample-rate-bool", single, lambda e: e.reset(options=audio_options(TONE, True)),
     ValueError, "integer number of Hz"),
    ("sample-rate-huge", single, lambda e: e.reset(options=audio_options(TONE, 10**9)),
     ValueError, "integer number of Hz in 1..768000"),
    ("int64-pcm", single,
     lambda e: e.reset(options=audio_options(np.arange(SR, dtype=np.int64) % 100)),
     ValueError, "int64 is not a PCM format"),
    ("per-env-audio-wrong-count", vector,
     lambda e: e.reset(options=audio_options(np.stack([TONE] * 3))), ValueError,
     "leading axis of an array is the env axis and must be 4"),
    ("per-env-audio-nine-envs", lambda: vector(9),
     lambda e: e.reset(options=audio_options(np.stack([TONE] * 3))), ValueError,
     "must be 9"),
    ("target-params-dict-missing", single,
     lambda e: e.reset(options={"target_params": {"cutoff_hz": 0.5}}), ValueError,
     "missing"),
    ("step-before-reset-single", lambda: single().unwrapped,
     lambda e: e.step(np.zeros(4, np.float32)), RuntimeError, "reset"),
    ("step-before-reset-vector", vector,
     lambda e: e.step(np.zeros((4, 4), np.float32)), RuntimeError, "reset"),
    ("complex-actions", single,
     lambda e: (e.reset(seed=0), e.step(np.zeros(4, np.complex64))), ValueError,
     "real numbers"),
]


@pytest.mark.parametrize("make,call,error,match", [r[1:] for r in ENV_ERRORS],
                         ids=[r[0] for r in ENV_ERRORS])
def test_env_bad_input_gives_a_clear_error(make, call, error, match):
    env = make()
    with pytest.raises(error, match=match):
        call(env)


# (id, env kwargs, message pattern)
CONSTRUCTOR_ERRORS = [
    ("threshold-nan", {"success_threshold": math.nan}, "success_threshold must be a positive"),
    ("threshold-negative", {"success_threshold": -0.1}, "success_threshold must be a positive"),
    ("bonus-inf", {"success_bonus": math.inf}, "success_bonus must be finite"),
    ("device-gpu", {"device": "gpu"}, "unknown device 'gpu'"),
    ("device-cuda-7", {"device": "cuda:7"}, "cuda:7"),
]


@pytest.mark.parametrize("kwargs,match", [r[1:] for r in CONSTRUCTOR_ERRORS],
                         ids=[r[0] for r in CONSTRUCTOR_ERRORS])
def test_env_bad_constructor_argument_gives_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make("SynthMatch-Easy-v0", **kwargs)


def test_per_env_target_audio_gives_each_env_its_clip():
    clips = np.stack([0.5 * np.sin(2 * np.pi * f * T) for f in (220, 330, 440, 880)])
    env = vector(4)
    env.reset(options=audio_options(clips.astype(np.float32)))
    got = env.unwrapped.core.target_audio.numpy()
    np.testing.assert_allclose(got, clips, atol=1e-6)


def test_per_env_stereo_is_a_leading_env_axis_or_a_list():
    stereo = np.stack([TONE, 0.5 * TONE])  # (2, T): averaged to 0.75 * TONE / ... per env
    env = vector(2)
    env.reset(options=audio_options(np.stack([stereo, stereo])))  # (2 envs, 2 channels, T)
    a = env.unwrapped.core.target_audio.numpy()
    env.reset(options=audio_options([stereo, stereo.T]))  # a list: (C, T) or (T, C) each
    b = env.unwrapped.core.target_audio.numpy()
    np.testing.assert_allclose(a, np.stack([stereo.mean(0)] * 2), atol=1e-6)
    np.testing.assert_allclose(b, a, atol=1e-6)


def test_single_env_reads_a_2d_array_as_channels():
    env = single()
    env.reset(options=audio_options(np.stack([TONE, 0.5 * TONE])))
    np.testing.assert_allclose(env.unwrapped.core.target_audio[0].numpy(), 0.75 * TONE,
                               atol=1e-6)


@pytest.mark.parametrize("dtype,offset,scale", [(np.uint8, 128, 127), (np.uint16, 32768, 32767),
                                                (np.int8, 0, 127), (np.int16, 0, 32767)])
def test_integer_pcm_is_centred_and_scaled(dtype, offset, scale):
    pcm = (offset + np.round(scale * 0.5 * np.sin(2 * np.pi * 440 * T))).astype(dtype)
    env = single()
    env.reset(options=audio_options(pcm))
    got = env.unwrapped.core.target_audio[0].numpy()
    assert abs(float(got.mean())) < 1e-3
    np.testing.assert_allclose(got, TONE, atol=2.0 / scale)


def test_a_clean_full_scale_sine_is_not_reported_as_clipped_but_a_clipped_one_is():
    t = np.arange(48000) / 48000
    env = single()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(options=audio_options(np.sin(2 * np.pi * 50 * t), 48000))
    with pytest.warns(UserWarning, match="clipped"):
        env.reset(options=audio_options(np.clip(1.5 * np.sin(2 * np.pi * 50 * t), -1, 1),
                                        48000))


def test_a_long_recording_is_resampled_only_as_far_as_the_probe():
    t = np.arange(44100 * 60) / 44100  # a minute at 44.1 kHz
    long = 0.5 * np.sin(2 * np.pi * 440 * t)
    env = single()
    env.reset(options=audio_options(long, 44100))
    from scipy.signal import resample_poly

    full = resample_poly(long, 160, 441)[:SR]  # the whole minute, as before the change
    np.testing.assert_allclose(env.unwrapped.core.target_audio[0].numpy(), full, atol=1e-5)


def test_target_params_by_name_equal_the_array():
    env = single()
    names = env.unwrapped.param_names
    values = np.linspace(0.1, 0.9, len(names)).astype(np.float32)
    env.reset(options={"target_params": dict(zip(names, values, strict=True))})
    np.testing.assert_allclose(env.unwrapped.core.target_params[0].numpy(), values, atol=1e-6)
