"""Training scripts end to end (tiny budgets): files written, TensorBoard tags, resume, evaluate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from synthmatch.agents.evaluation import evaluate, random_policy
from synthmatch.envs import SynthMatchCore
from tests.conftest import INTERRUPTIBLE

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--num-envs", "4", "--checkpoint-every", "128", "--media-every", "128",
        "--eval-targets", "4"]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def tags(run_dir: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"scalars": set(), "audio": set(), "images": set(),
                                  "tensors": set()}
    for events in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"audio": 0, "images": 0})
        acc.Reload()
        for kind in found:
            found[kind] |= set(acc.Tags().get(kind, []))
    return found


@pytest.mark.slow
def test_ppo_trains_logs_checkpoints_resumes_and_evaluates(tmp_path):
    logs = tmp_path / "runs"
    out = run_script("train_ppo.py", "--total-timesteps", "256", "--n-steps", "32",
                     "--batch-size", "64", "--n-epochs", "1", "--log-dir", str(logs),
                     "--run-name", "ppo", *TINY).stdout
    run = logs / "ppo"
    assert f"TensorBoard logs: {run}" in out
    for name in ("config.json", "model.zip", "eval.json", "checkpoints/latest.zip"):
        assert (run / name).is_file(), name
    assert not list(run.glob("checkpoints/.*tmp*"))  # atomic writes leave no temporaries
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "ppo" and config["env_id"] == "SynthMatch-Easy-v0"
    summary = json.loads((run / "eval.json").read_text())
    assert summary["num_targets"] == 4 and summary["steps"] == 256
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["median_final_distance"] >= 0

    found = tags(run)
    for tag in ("episode/return", "episode/final_distance", "episode/best_distance",
                "episode/success_rate", "episode/param_mae", "time/env_steps_per_second"):
        assert tag in found["scalars"], tag
    assert {"media/env0_target", "media/env0_current"} <= found["audio"]
    assert "media/env0_target_vs_current" in found["images"]
    assert any("hyperparameters" in t for t in found["tensors"])

    # Resume continues the step counter in the same run directory.
    resumed = run_script("train_ppo.py", "--resume", str(run / "checkpoints/latest.zip"),
                         "--total-timesteps", "384", "--n-steps", "32", "--batch-size", "64",
                         "--n-epochs", "1", *TINY).stdout
    assert f"TensorBoard logs: {run}" in resumed
    assert json.loads((run / "eval.json").read_text())["steps"] == 384

    wavs = tmp_path / "wavs"
    run_script("evaluate.py", str(run / "model.zip"), "--num-targets", "3", "--wav-dir",
               str(wavs), "--out", str(tmp_path / "eval.json"))
    assert len(list(wavs.glob("target_*.wav"))) == 3 == len(list(wavs.glob("match_*.wav")))
    assert json.loads((tmp_path / "eval.json").read_text())["num_targets"] == 3


@pytest.mark.slow
def test_sac_trains_and_evaluates(tmp_path):
    logs = tmp_path / "runs"
    run_script("train_sac.py", "--total-timesteps", "160", "--learning-starts", "64",
               "--batch-size", "32", "--buffer-size", "500", "--log-dir", str(logs),
               "--run-name", "sac", *TINY)
    summary = json.loads((logs / "sac" / "eval.json").read_text())
    assert summary["steps"] == 160
    assert json.loads((logs / "sac" / "config.json").read_text())["algo"] == "sac"


@pytest.mark.slow
def test_ctrl_c_leaves_a_readable_checkpoint(tmp_path):
    from stable_baselines3 import PPO

    run = tmp_path / "runs" / "interrupted"
    latest = run / "checkpoints" / "latest.zip"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments/train_ppo.py"), "--total-timesteps", "100000",
         "--n-steps", "16", "--batch-size", "64", "--n-epochs", "1", "--log-dir",
         str(tmp_path / "runs"), "--run-name", "interrupted", *TINY],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **INTERRUPTIBLE)
    try:
        deadline = time.monotonic() + 300
        while not latest.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert latest.exists(), "no checkpoint was written"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "resume with --resume" in err
    model = PPO.load(latest, device="cpu")
    assert model.num_timesteps >= 128
    assert not list(latest.parent.glob(".*tmp*"))


def test_scripts_have_help():
    from tests.inprocess import run_in_process

    for name in ("train_ppo.py", "train_sac.py", "evaluate.py"):
        assert "usage" in run_in_process(name, "--help").stdout


def test_resume_from_a_missing_checkpoint_fails_clearly(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "experiments/train_ppo.py"),
                             "--resume", str(tmp_path / "nope.zip")],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0 and "no checkpoint" in result.stderr


def test_evaluation_is_seeded_and_counts_renders():
    core = SynthMatchCore(6, "subtractive", free_params=["cutoff_hz", "osc1_shape"])
    a = evaluate(core, random_policy(2, seed=1), max_steps=5, seed=123)
    b = evaluate(core, random_policy(2, seed=1), max_steps=5, seed=123)
    assert (a.final_distance == b.final_distance).all()
    assert ((a.renders >= 1) & (a.renders <= 6)).all()
    assert (a.renders[~a.success] == 6).all()
    assert (a.best_distance <= a.initial_distance + 1e-6).all()


def test_evaluation_stops_an_env_at_success():
    core = SynthMatchCore(2, "subtractive", free_params=["cutoff_hz"], success_threshold=1e9)
    results = evaluate(core, random_policy(1), max_steps=5)
    assert results.success.all() and (results.renders == 1).all()


@pytest.mark.parametrize("extractor", ["cnn", "mlp"])
@pytest.mark.parametrize("accept", ["always", "improve"])
def test_extractor_output_and_gradients(extractor, accept):
    from synthmatch.agents.extractor import EXTRACTORS, ProfileExtractor
    from synthmatch.envs.single import make_spaces

    core = SynthMatchCore(3, "subtractive", free_params=["cutoff_hz", "osc1_shape"],
                          accept=accept)
    core.reset_envs(torch.arange(3))
    obs_space, _ = make_spaces(core)
    net = EXTRACTORS[extractor](obs_space, features_dim=32)
    features = net(core.observation())
    assert features.shape == (3, 32)
    features.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    if isinstance(net, ProfileExtractor):  # the search memory reaches the features
        assert net.memory == (accept == "improve")


def test_resumed_settings_is_one_rule_for_every_script(tmp_path):
    """Not given: the recorded value. Given: kept if resumable, refused if it contradicts the
    record (restating it is fine). Without the given set, what differs from the defaults
    counts as given. A run of another algorithm is refused."""
    from dataclasses import asdict, replace

    from synthmatch.agents.training import RunSettings, resumed_settings
    from synthmatch.cli import given_flags

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = run_dir / "checkpoints" / "latest.zip"
    checkpoint.write_bytes(b"")
    recorded = {**asdict(RunSettings()), "algo": "ppo", "num_envs": 4, "total_timesteps": 999,
                "eval_targets": 7}
    (run_dir / "config.json").write_text(json.dumps(recorded))
    base = RunSettings(resume=str(checkpoint))

    got, where = resumed_settings(base, given=set(), algo="ppo")
    assert where == run_dir and (got.num_envs, got.total_timesteps, got.eval_targets) == (4, 999, 7)
    argv = ["--resume", str(checkpoint), "--total-timesteps", "2000", "--num-envs=4"]
    assert given_flags(argv) == {"resume", "total_timesteps", "num_envs"}
    assert "progress" in given_flags(["--no-progress"])
    got, _ = resumed_settings(replace(base, total_timesteps=2000, num_envs=4), given_flags(argv))
    assert (got.total_timesteps, got.num_envs, got.eval_targets) == (2000, 4, 7)
    with pytest.raises(ValueError, match="--num-envs 8 conflicts with the resumed run's 4"):
        resumed_settings(replace(base, num_envs=8), {"num_envs"})
    with pytest.raises(ValueError, match="--num-envs 8 conflicts"):
        resumed_settings(replace(base, num_envs=8))  # differs from the default: given
    with pytest.raises(ValueError, match="is from ppo, not ppo_gpu"):
        resumed_settings(base, set(), algo="ppo_gpu")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resumed_settings(RunSettings(resume=str(tmp_path / "nope.zip")))


def test_ctrl_c_sets_a_flag_the_next_step_reads_and_a_second_one_raises():
    """The first Ctrl-C cannot be lost to a finalizer that swallows KeyboardInterrupt: it only
    sets a flag; the handler it replaced is back for the second."""
    import os

    from synthmatch.agents.training import StopOnInterrupt

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        stop = StopOnInterrupt()
        stop._on_training_start()
        try:
            assert stop._on_step()
            os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here
            time.sleep(0.1)
            assert stop.interrupted and not stop._on_step()
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1.0)
        finally:
            stop.restore()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # A process that was started with Ctrl-C ignored keeps ignoring it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ignoring = StopOnInterrupt()
        ignoring._on_training_start()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert not ignoring.interrupted and ignoring._on_step()
    finally:
        signal.signal(signal.SIGINT, outer)
