"""experiments/ppo_gpu.py: a tiny run end to end on CPU (files, TensorBoard tags, checkpoint,
resume), user mistakes refused in one line, GAE with truncation against a plain reference, and
the same run on CUDA where there is one."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthmatch.agents.torch_ppo import Agent, gae
from tests.agents.test_training import ROOT, tags
from tests.conftest import cuda
from tests.inprocess import run_in_process

SCRIPT = ROOT / "experiments" / "ppo_gpu.py"
# 4 envs for 64 steps each: every episode is truncated at the registry's 50 steps once.
TINY = ["--env-id", "SynthMatch-Easy-v0", "--num-envs", "4", "--n-steps", "32",
        "--batch-size", "64", "--n-epochs", "1", "--checkpoint-every", "128",
        "--media-every", "128", "--eval-targets", "2"]


def ppo_gpu(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def curve(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for events in sorted(run.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        points += [(e.step, e.value) for e in acc.Scalars(tag)]
    return points


def load_script():
    spec = importlib.util.spec_from_file_location("ppo_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run of 256 steps on CPU."""
    logs = tmp_path_factory.mktemp("runs")
    out = ppo_gpu("--device", "cpu", "--total-timesteps", "256", "--log-dir", str(logs),
                  "--run-name", "tiny", *TINY).stdout
    assert f"TensorBoard logs: {logs / 'tiny'}" in out
    return logs / "tiny"


def test_a_tiny_cpu_run_writes_config_events_checkpoint_and_evaluation(run):
    for name in ("config.json", "eval.json", "model.pt", "checkpoints/latest.pt"):
        assert (run / name).is_file(), name
    assert not list(run.glob("**/.*tmp*"))  # atomic writes leave no temporaries
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "ppo_gpu" and config["num_envs"] == 4
    assert config["run_name"] == "tiny" and config["device"] == "cpu"
    # eval.json has train_ppo.py's keys, so learning_results.py reads both kinds of run.
    summary = json.loads((run / "eval.json").read_text())
    assert summary["env_id"] == "SynthMatch-Easy-v0" and summary["steps"] == 256
    assert summary["num_targets"] == 2 and summary["seed"] == 1_000_000
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert summary["median_best_distance"] <= summary["median_initial_distance"] + 1e-6

    state = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    assert state["global_step"] == 256 and state["args"]["n_steps"] == 32
    assert set(state) == {"model", "optimizer", "global_step", "args"}
    assert state["optimizer"]["state"]  # Adam has taken steps

    found = tags(run)
    for tag in ("episode/return", "episode/length", "episode/final_distance",
                "episode/best_distance", "episode/success_rate", "episode/param_mae",
                "time/env_steps_per_second", "train/policy_gradient_loss", "train/value_loss",
                "train/entropy_loss", "train/approx_kl", "train/explained_variance"):
        assert tag in found["scalars"], tag
    assert {"media/env0_target", "media/env0_current"} <= found["audio"]
    assert "media/env0_target_vs_current" in found["images"]
    assert any("hyperparameters" in t for t in found["tensors"])


def test_a_seed_gives_the_same_run(run, tmp_path):
    ppo_gpu("--device", "cpu", "--total-timesteps", "256", "--log-dir", str(tmp_path),
            "--run-name", "again", *TINY)
    first, again = (torch.load(r / "checkpoints/latest.pt", weights_only=True)["model"]
                    for r in (run, tmp_path / "again"))
    for name, weights in first.items():
        torch.testing.assert_close(again[name], weights, rtol=0, atol=0, msg=name)


def test_episode_scalars_come_from_ended_episodes(run):
    # Logged once per update (steps 128 and 256), from the episodes that ended in its rollout:
    # by step 50 of each env (step 200 overall) every env has ended one, truncated if not
    # successful before.
    lengths = curve(run, "episode/length")
    assert [step for step, _ in lengths][-1] == 256
    assert all(1.0 <= length <= 50.0 for _, length in lengths)
    assert all(0.0 <= rate <= 1.0 for _, rate in curve(run, "episode/success_rate"))
    assert all(d >= 0.0 for _, d in curve(run, "episode/final_distance"))


def test_resume_continues_the_step_counter_in_the_same_run(run, tmp_path):
    run = Path(shutil.copytree(run, tmp_path / "tiny"))  # the fixture's run stays as it was
    out = ppo_gpu("--resume", str(run / "checkpoints/latest.pt"), "--total-timesteps", "384",
                  "--device", "cpu").stdout
    assert "at step 256" in out and f"TensorBoard logs: {run}" in out
    summary = json.loads((run / "eval.json").read_text())
    assert summary["steps"] == 384 and summary["num_targets"] == 2  # the run's --eval-targets
    state = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    assert state["global_step"] == 384 and state["args"]["num_envs"] == 4


def test_resume_refuses_a_flag_that_contradicts_the_run(run):
    result = ppo_gpu("--resume", str(run / "checkpoints/latest.pt"), "--num-envs", "8",
                     "--device", "cpu", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--num-envs 8 conflicts with the resumed run's 4" in lines[0]
    # Restating the run's own setting is no conflict; that run is not started here.
    module = load_script()
    args = module.Args(resume=str(run / "checkpoints/latest.pt"), num_envs=4)
    assert module.resumed(args, ["--resume", args.resume, "--num-envs", "4"]).num_envs == 4


@pytest.mark.parametrize(("flags", "message"), [
    (["--num-envs", "0"], "--num-envs must be >= 1, got 0"),
    (["--batch-size", "-1"], "--batch-size must be >= 1"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--env-id", "Nope-v0"], "unknown env id 'Nope-v0'"),
    (["--env-id", "CartPole-v1"], "'CartPole-v1' is not a synthmatch env"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--device", "mps"], "device 'mps' is not supported"),
    (["--resume", "missing.pt"], "no checkpoint at missing.pt"),
])
def test_user_mistakes_are_one_line_errors(flags, message):
    # In-process, to save the interpreter start-up per row; test_cuda_without_cuda_says_so
    # and the runs above go through a fresh interpreter.
    result = run_in_process(SCRIPT, *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_says_so():
    result = ppo_gpu("--device", "cuda", check=False)
    assert result.returncode == 2 and "CUDA is not available" in result.stderr


def test_help():
    assert "--num-envs" in run_in_process(SCRIPT, "--help").stdout


def test_agent_starts_with_near_zero_actions_and_the_given_std():
    from synthmatch.envs import SynthMatchCore
    from synthmatch.envs.single import make_spaces

    torch.manual_seed(0)
    core = SynthMatchCore(8, "subtractive", free_params=["cutoff_hz", "osc1_shape"])
    core.reset_envs(torch.arange(8))
    agent = Agent(make_spaces(core)[0], core.num_params, features_dim=32, log_std_init=-1.0)
    obs = core.observation()
    mean = agent.actor_mean(agent.features(obs))
    # The action head's orthogonal init with gain 0.01: the policy starts centred on "no change".
    assert mean.shape == (8, 2) and mean.abs().max() < 0.05
    action, logprob, entropy, value = agent.get_action_and_value(obs)
    normal = torch.distributions.Normal(mean, torch.full_like(mean, torch.e ** -1.0))
    torch.testing.assert_close(logprob, normal.log_prob(action).sum(1))
    torch.testing.assert_close(entropy, normal.entropy().sum(1))
    torch.testing.assert_close(value, agent.get_value(obs))


def reference_advantages(rewards, values, terminated, truncated, final_values, next_value,
                         gamma, lam):
    """The definition, one env and one step at a time: A_t = sum_l (gamma lam)^l delta_{t+l}
    up to the end of the episode, where the TD target after a terminated step is 0, after a
    truncated step the value of its final observation, else the next stored value."""
    T, N = len(rewards), len(rewards[0])
    advantages = [[0.0] * N for _ in range(T)]
    for i in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                if terminated[k][i]:
                    following = 0.0
                elif truncated[k][i]:
                    following = final_values[k][i]
                else:
                    following = values[k + 1][i] if k + 1 < T else next_value[i]
                total += weight * (rewards[k][i] + gamma * following - values[k][i])
                if terminated[k][i] or truncated[k][i]:
                    break
                weight *= gamma * lam
            advantages[t][i] = total
    return advantages


def test_gae_bootstraps_truncated_episodes_and_not_terminated_ones():
    # Env 0 is truncated at step 1 and terminated at step 3; env 1 runs through; env 2 is
    # truncated at the last step, where its final observation's value differs from next_value.
    rewards = [[1.0, 0.5, -0.2], [0.3, 0.1, 0.4], [0.0, -0.3, 0.2], [2.0, 0.7, 1.0]]
    values = [[0.5, 0.2, 0.1], [0.4, 0.3, -0.1], [0.6, 0.1, 0.3], [0.9, 0.0, 0.2]]
    final_values = [[9.0, 9.0, 9.0], [0.8, 9.0, 9.0], [9.0, 9.0, 9.0], [9.0, 9.0, -0.7]]
    terminated = [[False] * 3, [False] * 3, [False] * 3, [True, False, False]]
    truncated = [[False] * 3, [True, False, False], [False] * 3, [False, False, True]]
    next_value = [0.25, -0.4, 0.6]
    gamma, lam = 0.9, 0.8
    expected = reference_advantages(rewards, values, terminated, truncated, final_values,
                                     next_value, gamma, lam)
    t = torch.tensor
    advantages, returns = gae(t(rewards), t(values), t(terminated), t(truncated),
                              t(final_values), t(next_value), gamma, lam)
    torch.testing.assert_close(advantages, t(expected))
    torch.testing.assert_close(returns, t(expected) + t(values))
    # The truncated step's target uses its final observation's value (0.8), not the next
    # episode's first value (0.6) and not 0.
    assert advantages[1, 0].item() == pytest.approx(0.3 + gamma * 0.8 - 0.4)


@pytest.mark.gpu
@cuda
def test_a_tiny_cuda_run(tmp_path):
    ppo_gpu("--device", "cuda", "--total-timesteps", "256", "--log-dir", str(tmp_path),
            "--run-name", "gpu", *TINY)
    state = torch.load(tmp_path / "gpu/checkpoints/latest.pt", weights_only=True)
    assert state["global_step"] == 256
    assert json.loads((tmp_path / "gpu/eval.json").read_text())["steps"] == 256
