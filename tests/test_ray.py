"""The Ray paths (issue 14) on a local cluster started inside the tests: datasets equal to the
local path's, a killed worker, leaderboard cells equal to the local ones, a two-trial sweep;
and without --ray, no Ray at all."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace

import pytest

from synthmatch.data import DatasetConfig, shard_name, write_dataset
from synthmatch.distributed import RAY_EXTRA
from tests.data.helpers import ROOT, assert_same_shards, load_script, shard_arrays
from tests.inprocess import run_in_process

# Four shards of 128 presets, each rendered in four calls: long enough to be caught mid-write.
CONFIG = DatasetConfig(synth="subtractive", n=512, shard_size=128, render_batch=32,
                       store_audio=True)
TINY_PPO = ("total_timesteps=128", "n_steps=32", "batch_size=32", "n_epochs=1", "num_envs=2",
            "eval_targets=2", "checkpoint_every=128", "media_every=128")


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance with two CPUs for this module (CI installs the ray extra)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Ray is missing; CI installs it with the extra: {RAY_EXTRA}")
        pytest.skip(f"Ray is not installed ({RAY_EXTRA})")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("local") / "data"
    write_dataset(CONFIG, root, workers=2, progress=False)
    return root


def same_files(a, b, names=("dataset.json", "splits.json", "stats.json")) -> None:
    for name in names:
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name


@pytest.mark.slow
def test_a_dataset_made_on_ray_is_the_local_one_and_each_resumes_the_other(
        cluster, local_dataset, tmp_path):
    root = tmp_path / "ray"
    write_dataset(CONFIG, root, ray=True, progress=False)
    assert_same_shards(root, local_dataset)
    same_files(root, local_dataset)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        p.name for p in local_dataset.iterdir())
    # A local run finishes what a Ray run left, and the other way round.
    (root / shard_name(1)).unlink()
    write_dataset(CONFIG, root, workers=1, progress=False)
    (root / shard_name(2)).unlink()
    (root / shard_name(3)).unlink()
    make_dataset = load_script("make_dataset.py")
    args = make_dataset.Args(out=root, n=CONFIG.n, synth="subtractive", shard_size=128,
                             render_batch=32, store_audio=True, ray=True, progress=False)
    assert make_dataset.main(args) == 0
    assert_same_shards(root, local_dataset)


@pytest.mark.slow
def test_a_worker_killed_mid_shard_loses_nothing_and_duplicates_nothing(
        cluster, local_dataset, tmp_path):
    root = tmp_path / "ray"
    failures = []

    def write() -> None:
        try:
            write_dataset(CONFIG, root, ray=True, progress=False)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and writer.is_alive() and time.monotonic() < deadline:
        for tmp in root.glob(".shard-*.h5.tmp.*") if root.is_dir() else ():
            pid = int(re.search(r"-(\d+)$", tmp.name).group(1))  # tmp.<host>-<pid>
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # finished between the listing and the kill
            # The worker is dead: its temporary file can no longer become a shard.
            killed = (tmp, tmp.exists())
            break
        time.sleep(0.005)
    writer.join(timeout=300)
    assert not writer.is_alive() and not failures, failures
    assert killed is not None, "no shard was caught in the middle of its writing"
    tmp, existed_after_kill = killed
    assert existed_after_kill, "the killed worker had already renamed its shard"
    # Ray retried the shard: every shard once, whole, as the local path writes it; the
    # killed attempt's temporary file is gone.
    assert sorted(p.name for p in root.iterdir()) == sorted(
        p.name for p in local_dataset.iterdir())
    assert_same_shards(root, local_dataset)
    rows = {name: data["params"].shape[0] for name, data in shard_arrays(root).items()}
    assert rows == {shard_name(i): 128 for i in range(4)}


def quick_jobs(methods=("default", "random", "cmaes"), budgets=(1, 4), chunk_size=2):
    from synthmatch.envs.registration import env_synth
    from synthmatch.leaderboard.harness import Job, method_budgets
    from synthmatch.leaderboard.methods import METHODS
    from synthmatch.leaderboard.suites import load_suite

    suite = load_suite("bench-v1/quick")
    synth = env_synth(suite.env_id)
    return [Job(suite, m, synth, method_budgets(m, list(budgets)), 0, chunk_size, suite.env_id)
            for m in (METHODS[name]() for name in methods)]


def assert_same_results(a, b, where="") -> None:
    """Equal, floats within a relative 1e-6 and the rest exactly, wall times left out.

    Two processes may disagree in a float's last bits (FFT and matmul kernels take other paths
    with another memory layout: a local run after a torchsynth render shows it too); the
    presets, renders and successes are exact.
    """
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k not in ("wall_s", "wall_s_per_target"):
                assert_same_results(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_results(x, y, f"{where}/{i}")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_leaderboard_cells_on_ray_equal_local_ones_and_share_the_cache(cluster, tmp_path):
    from synthmatch.leaderboard import report
    from synthmatch.leaderboard.harness import run_job
    from synthmatch.leaderboard.ray_jobs import fill_cache_ray

    jobs = quick_jobs()
    local = [c for job in jobs for c in run_job(job, tmp_path / "local")]
    # The Ray run starts from a cache where a local run finished the first chunk of each job.
    cache = tmp_path / "ray"
    for job in jobs:
        first = job.cache_path(tmp_path / "local", 0)
        (cache / first.relative_to(tmp_path / "local")).parent.mkdir(parents=True)
        (cache / first.relative_to(tmp_path / "local")).write_text(first.read_text())
    assert fill_cache_ray(jobs, cache) == 2 * len(jobs)  # chunks 1 and 2 of each job
    assert fill_cache_ray(jobs, cache) == 0
    remote = [c for job in jobs for c in run_job(job, cache)]
    assert_same_results(remote, local)
    assert_same_results(report.summarize(remote), report.summarize(local))


@pytest.mark.slow
def test_leaderboard_script_with_ray_writes_the_local_table(cluster, tmp_path):
    leaderboard = load_script("leaderboard.py")
    base = leaderboard.Args(suites=("bench-v1/quick",), methods=("default", "random"),
                            budgets=(1, 4), chunk_size=3, progress=False, grid_targets=1)
    assert leaderboard.main(replace(base, out=tmp_path / "local")) == 0
    assert leaderboard.main(replace(base, out=tmp_path / "ray", ray=True)) == 0
    results = {run: json.loads((tmp_path / run / "bench-v1__quick.json").read_text())
               for run in ("local", "ray")}
    assert_same_results(results["ray"]["summaries"], results["local"]["summaries"])
    assert {s["method"] for s in results["ray"]["summaries"]} == {"default", "random"}


@pytest.mark.slow
def test_a_two_trial_sweep_makes_two_ordinary_runs_and_a_summary(cluster, tmp_path):
    from tests.agents.test_training import tags

    sweep = load_script("sweep.py")
    args = sweep.Args(algo="ppo", seeds=(0, 1), settings=TINY_PPO, out=tmp_path / "sweep",
                      verbose=0)
    assert sweep.main(args) == 0
    runs = {seed: tmp_path / "sweep" / "runs" / f"ppo__seed={seed}" for seed in (0, 1)}
    distances = {}
    for seed, run in runs.items():
        config = json.loads((run / "config.json").read_text())
        assert config["algo"] == "ppo" and config["seed"] == seed
        assert config["total_timesteps"] == 128 and config["num_envs"] == 2
        distances[seed] = json.loads((run / "eval.json").read_text())["median_final_distance"]
        assert "episode/final_distance" in tags(run)["scalars"]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert {t["seed"]: t["distance"] for t in summary["trials"]} == distances
    assert summary["settings"][0]["seeds"] == 2
    assert summary["settings"][0]["median"] == pytest.approx(sum(distances.values()) / 2)
    text = (tmp_path / "sweep" / "summary.md").read_text()
    assert "ppo__seed=0" in text and "ppo__seed=1" in text
    # The same sweep again reuses both finished runs.
    before = {seed: (run / "eval.json").stat().st_mtime_ns for seed, run in runs.items()}
    assert sweep.main(args) == 0
    assert {seed: (run / "eval.json").stat().st_mtime_ns for seed, run in runs.items()} \
        == before
    # A trial stopped before its evaluation continues from its checkpoint, in its directory.
    (runs[1] / "eval.json").unlink()
    assert sweep.main(args) == 0
    assert json.loads((runs[1] / "eval.json").read_text())["steps"] == 128
    log = (tmp_path / "sweep" / "logs" / "ppo__seed=1.log").read_text()
    assert f"--resume {runs[1] / 'checkpoints' / 'latest.zip'}" in log


def test_sweep_settings_are_checked_before_ray_starts(tmp_path):
    sweep = load_script("sweep.py")
    for args, message in [
        (dict(grid=("learning_rte=1e-3,1e-4",)), "train_ppo.py has no setting 'learning_rte'"),
        (dict(settings=("seed=3",)), "seed is set by the sweep"),
        (dict(sample=("gamma=normal:0:1",)), "the distribution must be one of"),
        (dict(sample=("learning_rate=loguniform:0:1",)), "LO > 0"),
        (dict(grid=("gamma=0.9",), sample=("gamma=uniform:0.9:0.99",)), "more than one"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            sweep.main(sweep.Args(out=tmp_path, **args))


@pytest.mark.slow
def test_without_ray_flag_nothing_imports_ray(tmp_path):
    code = textwrap.dedent(f"""
        import runpy, sys
        for argv in (["make_dataset.py", "--synth", "subtractive", "--n", "64",
                      "--shard-size", "32", "--workers", "1", "--no-progress",
                      "--out", {str(tmp_path / "data")!r}],
                     ["leaderboard.py", "--suites", "bench-v1/quick", "--methods",
                      "default", "--budgets", "1", "--max-targets", "2", "--no-progress",
                      "--grid-targets", "1", "--out", {str(tmp_path / "lb")!r}]):
            sys.argv = argv
            try:
                runpy.run_path("experiments/" + argv[0], run_name="__main__")
            except SystemExit as exc:
                assert not exc.code, (argv[0], exc.code)
        import synthmatch.distributed, synthmatch.data.shards, synthmatch.agents.sweep
        import synthmatch.leaderboard.harness
        loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
        assert not loaded, loaded
        print("no ray")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "no ray" in result.stdout, result.stderr[-2000:]


def test_ray_flag_without_ray_is_one_line_naming_the_extra(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    for script, args in [
        ("make_dataset.py", ["--synth", "subtractive", "--n", "64", "--ray",
                             "--out", str(tmp_path / "data")]),
        ("leaderboard.py", ["--suites", "bench-v1/quick", "--methods", "default", "--budgets",
                            "1", "--ray-address", "auto", "--out", str(tmp_path / "lb")]),
        ("sweep.py", ["--out", str(tmp_path / "sweep")]),
    ]:
        result = subprocess.run([sys.executable, str(ROOT / "experiments" / script), *args],
                                capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (script, result.stderr)
        assert lines[0].startswith(f"{script}: error: ") and RAY_EXTRA in lines[0], lines
    assert not (tmp_path / "data").exists() and not (tmp_path / "sweep").exists()


def test_help_names_the_ray_flags():
    for script in ("make_dataset.py", "leaderboard.py", "sweep.py"):
        result = run_in_process(script, "--help")
        assert result.returncode == 0 and "--ray-address" in result.stdout, script
