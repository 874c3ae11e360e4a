"""Bad inputs a new user tries, one row each: the input, and the clear error or the correct
result it must give (issue 11). Script rows run the scripts as a user would and check for a
one-line message, exit code 2 and nothing left behind."""

from __future__ import annotations

import contextlib
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
    ("step-before-reset-sb3", lambda: __import__("synthmatch.envs.sb3", fromlist=["x"])
     .make_sb3_vec_env("SynthMatch-Easy-v0", num_envs=2),
     lambda e: e.step(np.zeros((2, 4), np.float32)), RuntimeError, "reset"),
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


# ---------------------------------------------------------------------------------- scripts
import base64  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zipfile  # noqa: E402

from tests.inprocess import run_in_process  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_PPO = ["--n-steps", "16", "--batch-size", "32", "--n-epochs", "1", "--num-envs", "4",
            "--eval-targets", "2", "--checkpoint-every", "64", "--media-every", "64"]


def script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "experiments" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd or ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess, match: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert match in lines[0], lines[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    logs = tmp_path_factory.mktemp("runs")
    result = script("train_ppo.py", "--total-timesteps", "64", "--log-dir", logs,
                    "--run-name", "tiny", *TINY_PPO)
    assert result.returncode == 0, result.stderr
    return logs / "tiny"


class Payload:
    """Unpickling this creates the file ``marker``: proof that code from the file ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def crafted(source: pathlib.Path, dest: pathlib.Path, key: str, marker: pathlib.Path) -> None:
    """A copy of a real checkpoint whose ``data`` entry ``key`` is a pickled payload."""
    import cloudpickle

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for item in src.namelist():
            content = src.read(item)
            if item == "data":
                data = json.loads(content)
                blob = base64.b64encode(cloudpickle.dumps(Payload(marker))).decode()
                data[key] = {":type:": "<class 'object'>", ":serialized:": blob}
                content = json.dumps(data).encode()
            out.writestr(item, content)


@pytest.mark.parametrize("key", ["lr_schedule", "policy_kwargs", "something_new"])
def test_a_crafted_checkpoint_runs_no_code(tiny_run, tmp_path, key):
    from stable_baselines3 import PPO

    from synthmatch.agents.training import UnsafeCheckpointError, load_model

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text((tiny_run / "config.json").read_text())
    marker = tmp_path / "payload-ran"
    crafted(tiny_run / "model.zip", run_dir / "model.zip", key, marker)
    if key == "something_new":
        with pytest.raises(UnsafeCheckpointError, match="something_new"):
            load_model(run_dir / "model.zip")
    else:
        load_model(run_dir / "model.zip")
    assert not marker.exists()
    result = script("evaluate.py", run_dir / "model.zip", "--num-targets", "2")
    assert not marker.exists(), result.stderr
    # The control: SB3's own loader runs the payload, so the test above can fail.
    if key != "policy_kwargs":
        with contextlib.suppress(Exception):  # the payload is not a valid entry
            PPO.load(run_dir / "model.zip")
        assert marker.exists()


def test_resume_takes_the_runs_settings_and_refuses_conflicts(tiny_run, tmp_path):
    run_dir = tmp_path / "tiny"
    import shutil

    shutil.copytree(tiny_run, run_dir)
    result = script("train_ppo.py", "--resume", run_dir / "model.zip",
                    "--env-id", "SynthMatch-FM-v0")
    assert_one_line_error(result, "conflicts with the resumed run's SynthMatch-Easy-v0")
    result = script("train_ppo.py", "--resume", run_dir / "model.zip", "--total-timesteps", "128",
                    "--eval-targets", "2")
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "eval.json").read_text())
    assert summary["env_id"] == "SynthMatch-Easy-v0" and summary["steps"] >= 128
    # Resuming from model.zip writes into the run directory, not a "runs" folder beside it.
    assert not (run_dir.parent / "checkpoints").exists()
    assert sorted(p.name for p in run_dir.glob("*.json")) == ["config.json", "eval.json"]


# (id, script, arguments, message); each must exit 2 with one line and write nothing.
SCRIPT_ERRORS = [
    ("ppo-negative-budget", "train_ppo.py", ["--total-timesteps", "-5"],
     "--total-timesteps must be >= 1"),
    ("sac-negative-budget", "train_sac.py", ["--total-timesteps", "-1"],
     "--total-timesteps must be >= 1"),
    ("ppo-zero-envs", "train_ppo.py", ["--num-envs", "0"], "--num-envs must be >= 1"),
    ("ppo-checkpoint-every-0", "train_ppo.py", ["--checkpoint-every", "0"],
     "--checkpoint-every must be >= 1"),
    ("ppo-warm-start-k-0", "train_ppo.py", ["--warm-start-k", "0"], "--warm-start-k must be"),
    ("ppo-unknown-accept", "train_ppo.py", ["--accept", "greedy"],
     "--accept must be one of always, improve"),
    ("ppo-unknown-env", "train_ppo.py", ["--env-id", "Nope-v0"], "unknown env id 'Nope-v0'"),
    ("ppo-foreign-env", "train_ppo.py", ["--env-id", "CartPole-v1"],
     "'CartPole-v1' is not a synthmatch env"),
    ("ppo-device-gpu", "train_ppo.py", ["--device", "gpu"], "unknown device 'gpu'"),
    ("ppo-resume-missing", "train_ppo.py", ["--resume", "nowhere/latest.zip"],
     "no checkpoint at nowhere/latest.zip"),
    ("evaluate-no-args", "evaluate.py", [], "give a checkpoint or --random-policy"),
    ("evaluate-missing", "evaluate.py", ["nowhere/model.zip"], "no checkpoint at"),
    ("pool-count-of-garbled", "make_sound_pool.py", ["--count-of", "vital=x"],
     "--count-of takes INSTRUMENT=N for one of Nekobi, Kars, vital, got 'vital=x'"),
    ("pool-count-of-not-played", "make_sound_pool.py",
     ["--instruments", "Nekobi", "--count-of", "vital=3"], "for one of Nekobi, got"),
    ("pool-count-of-zero", "make_sound_pool.py", ["--count-of", "vital=0"],
     "counts must be in 1..50,000, got {'vital': 0}"),
    ("pool-after-missing", "make_sound_pool.py", ["--after", "nowhere/train"],
     "--after: no pool at nowhere/train"),
]
if not __import__("torch").cuda.is_available():
    SCRIPT_ERRORS.append(("ppo-device-cuda", "train_ppo.py", ["--device", "cuda"],
                          "CUDA is not available"))


@pytest.mark.parametrize("name,args,match", [r[1:] for r in SCRIPT_ERRORS],
                         ids=[r[0] for r in SCRIPT_ERRORS])
def test_script_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, name, args, match):
    # In-process (each script run as __main__), to save the interpreter start-up per row;
    # the subprocess rows above and below cover the wiring.
    if name.startswith("train"):
        args = [*args, "--log-dir", str(tmp_path / "runs")]
    assert_one_line_error(run_in_process(name, *args, cwd=tmp_path), match)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_evaluate_refuses_another_envs_model_and_a_file_as_wav_dir(tiny_run, tmp_path):
    result = script("evaluate.py", tiny_run / "model.zip", "--env-id", "SynthMatch-FM-v0")
    assert_one_line_error(result, "differs from the model's env")
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    result = script("evaluate.py", tiny_run / "model.zip", "--wav-dir", afile)
    assert_one_line_error(result, "is not a directory")


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-zip"])
def test_a_damaged_checkpoint_is_a_clear_error(tiny_run, tmp_path, damage):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text((tiny_run / "config.json").read_text())
    content = (tiny_run / "model.zip").read_bytes()
    content = {"truncated": content[: len(content) // 2], "empty": b"",
               "not-a-zip": b"hello"}[damage]
    (run_dir / "model.zip").write_bytes(content)
    result = script("evaluate.py", run_dir / "model.zip", "--num-targets", "2")
    assert_one_line_error(result, "model.zip")


# ---------------------------------------------------------------------------------- presets
def test_a_preset_saved_from_an_env_loads_back_to_the_same_sound(tmp_path):
    import torch

    from synthmatch.synths.presets import load_preset, save_preset

    env = gym.make("SynthMatch-v0")
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    core = env.unwrapped.core
    loaded = load_preset(save_preset(tmp_path / "p.json", core.synth, core.params[0]),
                         core.synth)
    torch.testing.assert_close(core.synth.render(loaded[None]),
                               core.synth.render(core.params[:1]), rtol=0, atol=0)


def test_a_vst3_preset_with_a_discrete_parameter_round_trips(tmp_path):
    import torch

    from synthmatch.synths import make_synth
    from tests.conftest import plugin_path

    synth = make_synth("vst3", plugin_path=str(plugin_path("Nekobi")),
                       parameters=["waveform", "cutoff*"])
    try:
        u = torch.tensor([[0.37, 0.61]])
        synth.save_preset_with_state(tmp_path / "n.json", u[0])
        loaded = synth.load_preset_with_state(tmp_path / "n.json")
        torch.testing.assert_close(synth.params.quantize(loaded[None]),
                                   synth.params.quantize(u), atol=1e-6, rtol=0)
    finally:
        synth.close()


def preset_dict():
    from synthmatch.synths.presets import preset_to_dict
    from synthmatch.synths.subtractive import SubtractiveSynth

    synth = SubtractiveSynth()
    return synth, preset_to_dict(synth, synth.params.defaults(1)[0])


# (id, change to a valid preset file, message)
PRESET_ERRORS = [
    ("binary-bytes", lambda d: b"\x89PNG\r\n\x1a\n\x00\xff", "not a text file"),
    ("normalized-nan", lambda d: d["parameters"]["cutoff_hz"].update(normalized=math.nan),
     "normalized must be a finite number"),
    ("version-true", lambda d: d.update(version=True), "'version' must be 1"),
    ("other-probe-note", lambda d: d["probe"].update(midi_pitch=48),
     "'probe' differs from the synth's"),
]


@pytest.mark.parametrize("change,match", [r[1:] for r in PRESET_ERRORS],
                         ids=[r[0] for r in PRESET_ERRORS])
def test_a_bad_preset_file_is_a_clear_error(tmp_path, change, match):
    from synthmatch.synths.presets import PresetError, load_preset

    synth, data = preset_dict()
    result = change(data)
    path = tmp_path / "p.json"
    if isinstance(result, bytes):
        path.write_bytes(result)
    else:
        path.write_text(json.dumps(data))
    with pytest.raises(PresetError, match=match):
        load_preset(path, synth)


# ---------------------------------------------------------------------------- prior training
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Two shards of FM presets: both go to train (with a warning), val is empty."""
    from synthmatch.data import DatasetConfig, write_dataset

    root = tmp_path_factory.mktemp("data") / "fm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dataset(DatasetConfig(synth="fm", n=64, shard_size=32), root, workers=1,
                      progress=False)
    return root


def test_train_prior_refuses_a_negative_budget(tmp_path, small_dataset):
    result = run_in_process("train_prior.py", "--data", small_dataset, "--steps", "-5",
                            "--log-dir", tmp_path / "runs", cwd=tmp_path)
    assert_one_line_error(result, "--steps must be >= 1")
    assert not (tmp_path / "runs").exists()


def test_train_prior_refuses_a_dataset_without_validation_items(tmp_path, small_dataset):
    result = run_in_process("train_prior.py", "--data", small_dataset, "--steps", "2",
                            "--log-dir", tmp_path / "runs", cwd=tmp_path)
    assert_one_line_error(result, "has no validation items")
    assert not (tmp_path / "runs").exists()


def test_a_truncated_shard_is_named(tmp_path, small_dataset):
    import shutil

    from synthmatch.data import DatasetError, open_dataset

    root = shutil.copytree(small_dataset, tmp_path / "copy")
    shard = root / open_dataset(root).splits["train"][1]
    shard.write_bytes(shard.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=shard.name):
        open_dataset(root).load("train")


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_prior_file_is_a_clear_error_without_torch_advice(tmp_path, damage):
    import torch

    from synthmatch.agents.prior import FlowPrior

    path = tmp_path / "prior.pt"
    torch.save({"config": {"a": 1}, "model": {"w": torch.zeros(1000)}}, path)
    content = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else content[: len(content) // 2])
    with pytest.raises(ValueError, match="prior.pt is not a readable prior checkpoint") as err:
        FlowPrior.load(path)
    assert "weights_only" not in str(err.value)


# ----------------------------------------------------------------------------------- datasets
def test_make_dataset_does_not_overwrite_a_users_splits_json(tmp_path):
    from synthmatch.data import DatasetConfig, DatasetError, write_dataset

    out = tmp_path / "mine"
    out.mkdir()
    (out / "splits.json").write_text('{"mine": true}')
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        write_dataset(DatasetConfig(synth="fm", n=32, shard_size=32), out, progress=False)
    assert (out / "splits.json").read_text() == '{"mine": true}'


def children(pid: int) -> set[int]:
    found = set()
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        path = task / "children"
        if path.exists():
            found |= {int(x) for x in path.read_text().split()}
    return found


@pytest.mark.skipif(not pathlib.Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_make_dataset_workers_exit_when_their_parent_is_killed(tmp_path):
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "make_dataset.py"),
                             "--synth", "subtractive", "--n", "40000", "--shard-size", "2000",
                             "--out", str(tmp_path / "d"), "--workers", "2", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        workers: set[int] = set()
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = {c for c in children(proc.pid)
                       if b"multiprocessing" in pathlib.Path(f"/proc/{c}/cmdline").read_bytes()}
        assert len(workers) >= 2, "the workers did not start"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(pathlib.Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.25)
    alive = [w for w in workers if pathlib.Path(f"/proc/{w}").exists()
             and "Z" not in pathlib.Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert not alive, f"workers {alive} outlived their parent"


def test_vst3_workers_in_a_script_without_a_main_guard_say_what_is_missing(tmp_path):
    from tests.conftest import plugin_path

    script_path = tmp_path / "noguard.py"
    script_path.write_text(
        "from synthmatch.synths import make_synth\n"
        f"synth = make_synth('vst3', plugin_path={str(plugin_path('Nekobi'))!r}, workers=2)\n"
        "synth.render(synth.params.sample(4))\n")
    result = subprocess.run([sys.executable, str(script_path)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode != 0
    assert 'has no `if __name__ == "__main__":` guard' in result.stderr


def test_a_warm_start_prior_of_another_synth_is_refused_before_training(tmp_path):
    pytest.importorskip("flow_matching")
    import torch

    from synthmatch.synths import make_synth
    from tests.agents.test_prior import tiny_prior

    prior_path = tmp_path / "fm_prior.pt"
    torch.save(tiny_prior(make_synth("fm")).checkpoint(), prior_path)
    result = run_in_process("train_ppo.py", "--env-id", "SynthMatch-v0", "--warm-start",
                            prior_path, "--total-timesteps", "32", "--log-dir",
                            tmp_path / "runs", cwd=tmp_path)
    assert_one_line_error(result, "the prior does not know parameter(s)")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ synths
@pytest.mark.parametrize("name", ["subtractive", "fm", "torchsynth"])
@pytest.mark.parametrize("device,match", [("gpu", "unknown device 'gpu'"),
                                          ("cuda:7", "cuda:7")])
def test_a_synth_on_a_device_this_machine_lacks_is_refused_at_construction(name, device, match):
    from synthmatch.synths import make_synth

    with pytest.raises(ValueError, match=match):
        make_synth(name, device=device)


@pytest.mark.parametrize("kind", ["numpy", "list"])
def test_render_takes_numpy_arrays_and_lists(kind):
    import torch

    from synthmatch.synths import make_synth

    synth = make_synth("fm")
    u = synth.params.sample(2, torch.Generator().manual_seed(0))
    given = u.numpy() if kind == "numpy" else u.tolist()
    torch.testing.assert_close(synth.render(given), synth.render(u))


def test_a_batch_too_large_for_memory_fails_at_once():
    import time

    import torch

    from synthmatch.devices import free_memory
    from synthmatch.synths import make_synth

    synth = make_synth("fm")
    free = free_memory("cpu")
    if free is None:
        pytest.skip("this system does not report its free memory")
    batch = int(2 * free / (synth.num_samples * 4)) + 1  # the output alone: twice what is free
    start = time.perf_counter()
    with pytest.raises(MemoryError, match="render in smaller batches"):
        synth.render(torch.full((batch, synth.num_params), 0.5).expand(batch, -1))
    assert time.perf_counter() - start < 30
