"""The prior's scripts end to end on a tiny dataset: train, resume, Ctrl-C, compare, export,
and PPO warm-started from the result."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.agents.test_training import ROOT, run_script, tags
from tests.conftest import INTERRUPTIBLE
from tests.inprocess import run_in_process

pytest.importorskip("flow_matching")
pytest.importorskip("h5py")

TINY_PRIOR = ["--batch-size", "32", "--eval-items", "4", "--embed-dim", "32", "--hidden", "32",
              "--depth", "1", "--warmup-steps", "5"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from synthmatch.data import DatasetConfig, write_dataset

    root = tmp_path_factory.mktemp("data") / "subtractive"
    write_dataset(DatasetConfig("subtractive", n=192, shard_size=64), root, workers=1,
                  progress=False)
    return root


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A prior trained for 40 steps, then resumed to 60."""
    logs = tmp_path_factory.mktemp("runs")
    run_script("train_prior.py", "--data", str(dataset), "--steps", "40", "--eval-every", "20",
               "--checkpoint-every", "20", "--log-dir", str(logs), "--run-name", "tiny",
               *TINY_PRIOR)
    run = logs / "tiny"
    first = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    out = run_script("train_prior.py", "--resume", str(run / "checkpoints/latest.pt"),
                     "--steps", "60").stdout
    return run, first, out


@pytest.mark.slow
def test_train_prior_writes_logs_checkpoints_and_resumes(trained):
    run, first, resumed_out = trained
    assert first["step"] == 40
    assert f"TensorBoard logs: {run}" in resumed_out
    for name in ("config.json", "prior.pt", "val.json", "checkpoints/latest.pt"):
        assert (run / name).is_file(), name
    assert not list(run.glob("**/.*tmp*"))
    latest = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    assert latest["step"] == 60 and latest["settings"]["hidden"] == 32
    assert {"optimizer", "schedule", "batch_rng", "noise_rng"} <= set(latest)
    assert torch.load(run / "prior.pt", weights_only=True)["step"] == 60
    found = tags(run)["scalars"]
    for tag in ("loss/train", "loss/val", "val/spectral_distance", "val/param_mae",
                "time/steps_per_second"):
        assert tag in found, tag
    assert json.loads((run / "val.json").read_text())["step"] == 60


@pytest.mark.slow
def test_prior_results_and_onnx_export(trained, dataset, tmp_path):
    run, _, _ = trained
    out = tmp_path / "results.json"
    table = run_script("prior_results.py", str(run / "prior.pt"), "--data", str(dataset),
                       "--targets", "6", "--k", "1", "2", "--random", "1", "3", "--out",
                       str(out)).stdout
    assert "| prior, K=2 | 2 |" in table and "| random search, R=3 | 3 |" in table
    results = json.loads(out.read_text())
    assert results["targets"] == 6 and results["split"] == "test"
    assert [r["renders"] for r in results["results"]] == [1, 2, 1, 3]
    for row in results["results"]:
        assert row["median_distance"] >= 0 and 0 <= row["median_param_mae"] <= 1

    exported = run_script("export_prior.py", str(run / "prior.pt"), "--out",
                          str(tmp_path / "onnx")).stdout
    assert "Parity on 8 random log-mels" in exported
    assert {p.name for p in (tmp_path / "onnx").iterdir()} == {"encoder.onnx", "velocity.onnx",
                                                               "prior.json"}


@pytest.mark.slow
def test_ppo_warm_starts_from_the_prior(trained, tmp_path):
    run, _, _ = trained
    logs = tmp_path / "runs"
    run_script("train_ppo.py", "--env-id", "SynthMatch-v0", "--warm-start",
               str(run / "prior.pt"), "--max-step", "0.05", "--log-std-init", "-1",
               "--total-timesteps", "64", "--n-steps", "16",
               "--batch-size", "32", "--n-epochs", "1", "--num-envs", "4", "--eval-targets",
               "3", "--log-dir", str(logs), "--run-name", "warm")
    summary = json.loads((logs / "warm" / "eval.json").read_text())
    assert summary["warm_start"] == str(run / "prior.pt") and summary["num_targets"] == 3
    assert summary["max_step"] == 0.05
    assert json.loads((logs / "warm" / "config.json").read_text())["warm_start"] == \
        str(run / "prior.pt")


@pytest.mark.slow
def test_ctrl_c_saves_a_prior_checkpoint(dataset, tmp_path):
    run = tmp_path / "runs" / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments/train_prior.py"), "--data", str(dataset),
         "--steps", "1000000", "--eval-every", "1000000", "--log-dir", str(tmp_path / "runs"),
         "--run-name", "interrupted", *TINY_PRIOR],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **INTERRUPTIBLE)
    try:
        deadline = time.monotonic() + 120
        while (not list(run.glob("events.out.tfevents.*")) and time.monotonic() < deadline
               and proc.poll() is None):
            time.sleep(0.2)
        time.sleep(2.0)  # some training steps
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "resume with --resume" in err
    assert torch.load(run / "checkpoints/latest.pt", weights_only=True)["step"] > 0


def test_prior_scripts_have_help_and_fail_clearly(tmp_path):
    for name in ("train_prior.py", "prior_results.py", "export_prior.py", "finetune_prior.py",
                 "pick_round.py", "interpolate_prior.py", "make_sound_pool.py",
                 "train_critic.py", "train_restarts.py", "validate_priors.py",
                 "package_prior.py", "package_match.py"):
        assert "usage" in run_in_process(name, "--help").stdout
    # One real subprocess: the exit code and the one line from a fresh interpreter.
    no_gate = subprocess.run([sys.executable, str(ROOT / "experiments/package_match.py"),
                              "--gate", str(tmp_path / "nope.pt"), "--out-dir",
                              str(tmp_path / "out")],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert no_gate.returncode == 2 and "Traceback" not in no_gate.stderr, no_gate.stderr
    assert "no gate checkpoint at" in no_gate.stderr
    assert not (tmp_path / "out").exists()
    missing = run_in_process("train_prior.py", "--resume", tmp_path / "nope.pt")
    assert missing.returncode != 0 and "no checkpoint" in missing.stderr
    no_data = run_in_process("train_prior.py", "--data", tmp_path / "nowhere")
    assert no_data.returncode != 0 and "make a dataset" in no_data.stderr
    assert "Traceback" not in no_data.stderr


@pytest.mark.slow
def test_finetune_prior_learns_from_sounds_without_parameters(trained, dataset, tmp_path):
    """The prior is fine-tuned on a pool of another synth's sounds by reward alone (sampling,
    keeping two presets per sound, then a search from the archive, rehearsing the synthetic
    data on the starting prior): the run validates before and after every round, per source
    too, its archive of best presets only gets closer, and the result loads as a prior with
    weights that moved."""
    pytest.importorskip("soundfile")
    from synthmatch.agents.prior import FlowPrior
    from synthmatch.leaderboard.suites import write_suite
    from synthmatch.synths import make_synth

    fm = make_synth("fm")
    pools = {}
    for split, seed in (("train", 1), ("val", 2)):
        with torch.no_grad():
            audio = fm.render(fm.params.sample(6, torch.Generator().manual_seed(seed)))
        pools[split] = write_suite(split, (0.5 * audio).numpy(), sample_rate=fm.sample_rate,
                                   probe=fm.probe.to_dict(), description="test", made_by="tests",
                                   target_info=[{"source": "ab"[i % 2]} for i in range(6)],
                                   root=tmp_path / "pool")
    prior_path = trained[0] / "prior.pt"
    logs = tmp_path / "runs"
    run_script("finetune_prior.py", "--prior", str(prior_path), "--pool", str(pools["train"]),
               "--val-pool", str(pools["val"]), "--data", str(dataset), "--rounds", "2",
               "--k", "3", "--steps-per-round", "4", "--batch-size", "8", "--val-k", "2",
               "--in-domain-targets", "3", "--rehearsal", "teacher", "--refine-steps", "2",
               "--archive-size", "2", "--log-dir", str(logs), "--run-name", "ft")
    history = json.loads((logs / "ft" / "history.json").read_text())
    assert [h["round"] for h in history] == [0, 1, 2]
    assert all(h["val/val_pool_best_of_2"] > 0 and h["val/in_domain_best_of_2"] > 0
               for h in history)
    assert history[2]["pool/archive"] <= history[1]["pool/archive"]
    assert history[1]["pool/archive"] <= history[1]["pool/sampled_best_of_k"] + 1e-6
    assert all(f"val/val_pool_{source}_best_of_2" in h for h in history for source in "ab")
    assert all(h["val/in_domain_best_of_1"] > 0 for h in history)  # one render, always
    assert history[1]["pool/es_sigma"] > 0
    assert all(h["pool/sample_spread"] > 0 for h in history[1:])
    assert all(h["val/val_pool_a_spread_of_2"] > 0 and "val/in_domain_spread_of_1" not in h
               for h in history)
    tuned, start = FlowPrior.load(logs / "ft" / "prior.pt"), FlowPrior.load(prior_path)
    moved = [not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(),
                                                  start.state_dict().values(), strict=True)]
    assert any(moved)
    ckpt = torch.load(logs / "ft" / "prior.pt", weights_only=True)
    assert ckpt["finetuned"]["from"] == str(prior_path) and ckpt["finetuned"]["rounds"] == 2
    assert ckpt["finetuned"]["round"] == 2 and (logs / "ft" / "rounds" / "prior_1.pt").is_file()
    # WiSE-FT: weights on the line between the start and the fine-tuned prior, validated.
    out = run_script("interpolate_prior.py", str(logs / "ft" / "prior.pt"), "--base",
                     str(prior_path), "--alphas", "0", "0.5", "1", "--ks", "1", "2",
                     "--rank-k", "2", "--in-domain-targets", "3", "--val-pool",
                     str(pools["val"]), "--max-drift", "10", "--out", str(tmp_path / "wise"))
    wise = tmp_path / "wise" / "ft_prior"
    rows = json.loads((wise / "history.json").read_text())
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert all(f"val/{key}_best_of_{k}" in r for r in rows for k in (1, 2)
               for key in ("in_domain", "val_pool", "val_pool_a"))
    assert "Picked weight: " in out.stdout and "| 0.5 |" in out.stdout
    half = FlowPrior.load(wise / "prior_a0.5.pt")
    for name, w in half.state_dict().items():
        torch.testing.assert_close(w, 0.5 * (start.state_dict()[name] + tuned.state_dict()[name]))
    assert all(torch.equal(w, tuned.state_dict()[n])
               for n, w in FlowPrior.load(wise / "prior_a1.pt").state_dict().items())
    assert half.finetuned["interpolated"]["alpha"] == 0.5
    assert half.finetuned["interpolated"]["base"] == str(prior_path)
    assert not (wise / "prior_a0.pt").exists()  # weight 0 is the base itself
    # The same figures for any priors, one row each, filtered by name.
    table = run_script("validate_priors.py", str(prior_path), str(logs / "ft" / "prior.pt"),
                       "--val-pool", str(pools["val"]), "--in-domain-targets", "3", "--ks", "1",
                       "2", "--only", "spread", "--temperatures", "1", "0",
                       "--samplers", "midpoint", "sde").stdout
    assert ("| prior | in_domain_spread_of_2 | val_pool_spread_of_2 | val_pool_a_spread_of_2 |"
            in table)
    assert f"| {logs / 'ft' / 'prior.pt'} at 1 by sde | " in table and "best_of" not in table
    # Temperature 0 draws one deterministic sample per sound by the ODE: no spread at all;
    # the SDE still spreads them by its own noise along the way.
    cold = next(line for line in table.splitlines() if f"{prior_path} at 0 by midpoint |" in line)
    assert cold.count("| 0.000 (-100.0%)") == 4, cold
    cold_sde = next(line for line in table.splitlines() if f"{prior_path} at 0 by sde |" in line)
    assert "| 0.000 (" not in cold_sde, cold_sde
    # Another seed is another draw of the same priors' samples.
    draws = [run_script("validate_priors.py", str(prior_path), "--val-pool", str(pools["val"]),
                        "--in-domain-targets", "3", "--ks", "2", "--only", "val_pool_best",
                        "--seed", seed).stdout.splitlines()[-1] for seed in ("1", "1", "5")]
    assert draws[0] == draws[1] and draws[0] != draws[2]
    no_pool = subprocess.run([sys.executable, str(ROOT / "experiments/finetune_prior.py"),
                              "--prior", str(prior_path), "--pool", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert no_pool.returncode == 2 and "make_sound_pool.py" in no_pool.stderr
    assert "Traceback" not in no_pool.stderr


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["best-of-k", "policy-gradient"])
def test_finetune_prior_by_an_objective_on_the_pool_alone(trained, tmp_path, objective):
    """--objective best-of-k (through the synth and sampler) and policy-gradient (REINFORCE on
    the SDE) train on a pool alone: the run validates before and after its round, logs the
    batches' best-of-k distance and spread, and moves the prior's weights."""
    pytest.importorskip("soundfile")
    from synthmatch.agents.prior import FlowPrior
    from synthmatch.leaderboard.suites import write_suite
    from synthmatch.synths import make_synth

    fm = make_synth("fm")
    with torch.no_grad():
        audio = fm.render(fm.params.sample(4, torch.Generator().manual_seed(3)))
    pool = write_suite("train", (0.5 * audio).numpy(), sample_rate=fm.sample_rate,
                       probe=fm.probe.to_dict(), description="test", made_by="tests",
                       root=tmp_path / "pool")
    prior_path = trained[0] / "prior.pt"
    logs = tmp_path / "runs"
    run_script("finetune_prior.py", "--prior", str(prior_path), "--pool", str(pool),
               "--val-pool", "None", "--data", "None", "--synthetic-fraction", "0",
               "--objective", objective, "--rounds", "1", "--k", "3", "--steps-per-round",
               "2", "--sounds-per-step", "2", "--val-k", "2", "--in-domain-targets", "3",
               "--log-dir", str(logs), "--run-name", "bok")
    history = json.loads((logs / "bok" / "history.json").read_text())
    assert [h["round"] for h in history] == [0, 1]
    assert history[1]["pool/sampled_best_of_k"] > 0 and history[1]["pool/sample_spread"] > 0
    assert "pool/archive" not in history[1]
    tuned, start = FlowPrior.load(logs / "bok" / "prior.pt"), FlowPrior.load(prior_path)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(),
                                                    start.state_dict().values(), strict=True))
    assert tuned.finetuned["objective"] == objective and tuned.finetuned["round"] == 1
    assert ("pool/sampled_mean" in history[1]) == (objective == "policy-gradient")


@pytest.mark.slow
def test_a_pool_grows_without_redrawing_its_sounds(tmp_path):
    """make_sound_pool.py --after continues each instrument's seeds past the pool it names."""
    pytest.importorskip("vita")
    pytest.importorskip("soundfile")
    first = ["--instruments", "vital", "--count", "2", "--split", "val"]
    run_script("make_sound_pool.py", *first, "--out", str(tmp_path / "a"))
    run_script("make_sound_pool.py", *first, "--after", str(tmp_path / "a" / "val"), "--out",
               str(tmp_path / "b"))
    seeds = {name: [t["seed"] for t in json.loads(
        (tmp_path / name / "val" / "manifest.json").read_text())["targets"]] for name in "ab"}
    assert len(seeds["b"]) == 2 and min(seeds["b"]) > max(seeds["a"])
    wrong = subprocess.run([sys.executable, str(ROOT / "experiments/make_sound_pool.py"),
                            "--instruments", "vital", "--count", "2", "--split", "train",
                            "--after", str(tmp_path / "a" / "val"), "--out",
                            str(tmp_path / "c")], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    assert wrong.returncode == 2 and "is a 'val' pool, not 'train'" in wrong.stderr


def test_an_in_domain_pool_plays_an_envs_synth_from_its_own_seeds(tmp_path):
    """--instruments SynthMatch-v0 makes a pool of the env synth's sounds (for learning in
    domain from sounds alone), from seeds past every instrument's."""
    pytest.importorskip("soundfile")
    from synthmatch.data.real_sounds import POOL_SEED_BASES, SYNTHETIC_SEED_OFFSET
    from synthmatch.leaderboard.suites import load_suite

    run_script("make_sound_pool.py", "--instruments", "SynthMatch-v0", "--count", "3",
               "--split", "val", "--out", str(tmp_path))
    pool = load_suite(str(tmp_path / "val"))
    targets = pool.manifest["targets"]
    assert len(pool) == 3 and {t["source"] for t in targets} == {"SynthMatch-v0"}
    assert targets[0]["seed"] >= POOL_SEED_BASES["val"] + SYNTHETIC_SEED_OFFSET
    assert max(t["seed"] for t in targets) < POOL_SEED_BASES["val"] + 1_000_000
    two = subprocess.run([sys.executable, str(ROOT / "experiments/make_sound_pool.py"),
                          "--instruments", "SynthMatch-v0", "SynthMatch-FM-v0", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert two.returncode == 2 and "one env id per pool" in two.stderr
