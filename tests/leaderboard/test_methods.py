"""Every leaderboard method on a tiny suite: renders counted exactly, budgets never exceeded,
results reproducible, and one run giving every smaller budget."""

from __future__ import annotations

import pytest
import torch

from synthmatch.envs.registration import env_synth
from synthmatch.leaderboard.harness import Job, method_budgets, run_chunk
from synthmatch.leaderboard.meter import BudgetExceeded, RenderMeter
from synthmatch.leaderboard.methods import METHODS, MatchTask
from synthmatch.leaderboard.suites import load_suite, write_suite
from synthmatch.rewards import PerceptualDistance

pytest.importorskip("cma")
pytest.importorskip("librosa")

ENV = "SynthMatch-Easy-v0"


@pytest.fixture(scope="module")
def synth():
    return env_synth(ENV)


@pytest.fixture(scope="module")
def suite(synth, tmp_path_factory):
    """Three targets of the Easy env's synth, written and loaded like a published suite."""
    u = synth.params.sample(3, torch.Generator().manual_seed(5))
    with torch.no_grad():
        audio = synth.render(u).numpy()
    root = tmp_path_factory.mktemp("suites")
    write_suite("test-v1/tiny", audio, sample_rate=synth.sample_rate,
                probe=synth.probe.to_dict(), description="test", made_by="tests", env_id=ENV,
                params=u.numpy(), param_names=list(synth.params.names), root=root)
    return load_suite("test-v1/tiny", root)


def run(method, synth, suite, budget: int, seed: int = 0) -> RenderMeter:
    meter = RenderMeter(synth, PerceptualDistance(synth.sample_rate), suite.audio, budget,
                        stops=(1, 4, budget))
    presets = method.run(MatchTask(synth, meter, seed))
    meter.check_rendered(presets)
    return meter


@pytest.fixture(scope="module")
def prior_path(synth, tmp_path_factory):
    pytest.importorskip("flow_matching")
    from tests.agents.test_prior import tiny_prior

    path = tmp_path_factory.mktemp("prior") / "prior.pt"
    prior = tiny_prior(synth)
    prior.config.data = {"synth": synth.name}
    torch.save(prior.checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    pytest.importorskip("h5py")
    from synthmatch.data import DatasetConfig, write_dataset
    from synthmatch.envs.registration import env_settings

    name, free, _ = env_settings(ENV)
    root = tmp_path_factory.mktemp("data") / "easy"
    write_dataset(DatasetConfig(name, n=96, free_params=free, shard_size=32), root,
                  workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def critic_path(synth, prior_path, tmp_path_factory):
    """An untrained critic of the tiny prior's samples (its ranking is arbitrary but fixed)."""
    from synthmatch.agents.critic import PresetCritic, save_critic

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("critic") / "critic.pt"
    save_critic(PresetCritic(synth.num_params, hidden=16, channels=(4, 4, 4)), path,
                str(prior_path))
    return path


def make(name: str, prior_path=None, dataset_path=None, critic_path=None):
    if name == "nearest":
        return METHODS[name](dataset_path)
    if name in ("prior+central", "prior+critic"):  # past 8 renders: a fresh draw
        return METHODS[name](critic_path if name == "prior+critic" else prior_path,
                             proposals=8)
    if name.startswith("prior"):
        return METHODS[name](prior_path)
    return METHODS[name]()


SEARCH = ["default", "random", "cmaes", "gradient", "nearest", "prior", "prior+cmaes",
          "prior+gradient", "prior+es", "prior+central", "prior+critic",
          "prior+gradient-patience", "prior+latent-es", "prior+latent-cmaes"]


@pytest.mark.parametrize("name", SEARCH)
def test_renders_are_counted_exactly_and_results_repeat(name, synth, suite, request):
    needs = {"nearest": "dataset_path", "prior+critic": "critic_path"}.get(
        name, "prior_path" if "prior" in name else None)
    kwargs = {needs: request.getfixturevalue(needs)} if needs else {}
    method = make(name, **kwargs)
    budget = 20 if name.startswith("prior+") else 10
    meter = run(method, synth, suite, budget)
    expected = 1 if name == "default" else budget
    assert meter.used.tolist() == [expected] * len(suite)
    assert torch.isfinite(meter.history_distance[:, :expected]).all()
    assert torch.isinf(meter.history_distance[:, expected:]).all()
    again = run(make(name, **kwargs), synth, suite, budget)
    assert torch.equal(meter.best(budget)[0], again.best(budget)[0])
    assert torch.equal(meter.best(budget)[1], again.best(budget)[1])
    # Best-so-far never gets worse with more renders.
    assert (meter.best(budget)[1] <= meter.best(max(1, budget // 2))[1]).all()


def test_restarting_adam_on_a_run_length_rule_is_prior_gradient(synth, suite, prior_path):
    """The restart mechanism of prior+gradient-patience and prior+gradient+rl, told to restart
    every 3 renders as prior+gradient does every 100, renders what prior+gradient renders,
    past its 16th restart too, where both go on from fresh samples."""
    from synthmatch.leaderboard.methods.prior import PriorGradient, PriorRestarts

    class EveryThree(PriorRestarts):
        def rule(self):
            return lambda search: search.run_steps >= 3

    ours = run(EveryThree(prior_path), synth, suite, 16 + 3 * 20)
    theirs = run(PriorGradient(prior_path, steps_per_start=3), synth, suite, 16 + 3 * 20)
    # Not bit-exact: where a gradient is about Adam's eps (1e-8), float noise of the two
    # graphs moves a step by up to a few thousandths. A wrong start or restart moves whole
    # presets by tenths.
    torch.testing.assert_close(ours.history_params, theirs.history_params, atol=5e-3, rtol=0)
    torch.testing.assert_close(ours.history_distance, theirs.history_distance, atol=2e-3,
                               rtol=0)


@pytest.mark.parametrize("name", ["random", "cmaes", "gradient"])
def test_a_smaller_budget_is_a_prefix_of_a_larger_run(name, synth, suite):
    big = run(METHODS[name](), synth, suite, 12)
    small = run(METHODS[name](), synth, suite, 5)
    for got, want in zip(small.best(5)[:3], big.best(5)[:3], strict=True):
        assert torch.equal(got, want)


def test_the_meter_refuses_renders_past_the_budget(synth, suite):
    meter = RenderMeter(synth, PerceptualDistance(synth.sample_rate), suite.audio, 3)
    meter.score(synth.params.sample(3 * 2).reshape(3, 2, -1))
    with pytest.raises(BudgetExceeded, match="target 0 would use 4 renders of its budget of 3"):
        meter.score(synth.params.sample(3 * 2).reshape(3, 2, -1))
    assert meter.used.tolist() == [2, 2, 2]  # the refused call rendered nothing
    owners = torch.tensor([1])
    meter.score(synth.params.sample(1), owners)
    assert meter.used.tolist() == [2, 3, 2]
    with pytest.raises(BudgetExceeded):
        meter.score(synth.params.sample(1), owners)


def test_the_meter_scores_like_the_env_distance(synth, suite):
    distance = PerceptualDistance(synth.sample_rate)
    meter = RenderMeter(synth, distance, suite.audio, 2)
    u = synth.params.sample(3)
    d = meter.score(u[:, None])[:, 0]
    with torch.no_grad():
        assert torch.allclose(d, distance(synth.render(u), suite.audio), atol=1e-5)
    # The true parameters reproduce the target up to its 16-bit storage.
    assert (meter.score(suite.params[:, None])[:, 0] < 0.05).all()


def test_a_preset_that_was_never_rendered_is_refused(synth, suite):
    meter = run(METHODS["random"](), synth, suite, 4)
    with pytest.raises(RuntimeError, match="never rendered"):
        meter.check_rendered(torch.full((3, synth.num_params), 0.123))


def test_method_budgets_stop_where_a_method_has_nothing_more_to_do():
    assert method_budgets(METHODS["default"](), [1, 16, 100]) == [1]
    assert method_budgets(METHODS["cmaes"](), [1, 16, 100]) == [16, 100]
    assert method_budgets(METHODS["random"](), [100, 1, 16, 16]) == [1, 16, 100]


def test_run_chunk_reports_every_metric_per_budget(synth, suite):
    job = Job(suite, METHODS["random"](), synth, [1, 4], seed=3)
    result = run_chunk(job, 0, suite)["budgets"]
    assert set(result) == {"1", "4"}
    for b in ("1", "4"):
        rows = result[b]["targets"]
        assert [r["target"] for r in rows] == suite.target_names
        assert all(r["renders"] == int(b) and r["param_mae"] is not None and r["mss"] >= 0
                   and -1 <= r["envelope_cosine"] <= 1 for r in rows)
    assert all(r4["distance"] <= r1["distance"] for r1, r4 in
               zip(result["1"]["targets"], result["4"]["targets"], strict=True))


@pytest.mark.slow
def test_rl_counts_its_episode_and_stops_at_the_budget(synth, suite, prior_path, tmp_path):
    import json

    from tests.agents.test_training import run_script

    logs = tmp_path / "runs"
    run_script("train_ppo.py", "--env-id", ENV, "--total-timesteps", "64", "--n-steps", "16",
               "--batch-size", "32", "--n-epochs", "1", "--num-envs", "4",
               "--eval-targets", "2", "--log-dir", str(logs), "--run-name", "tiny")
    method = METHODS["rl"](logs / "tiny" / "model.zip")
    assert method.env_id == ENV and method.max_budget == 51
    meter = run(method, synth, suite, 6)
    assert meter.used.tolist() == [6, 6, 6]  # the start render and 5 steps
    whole = run(METHODS["rl"](logs / "tiny" / "model.zip"), synth, suite, 60)
    assert (whole.used <= 51).all() and (whole.used >= 2).all()
    assert torch.equal(whole.best(6)[0], meter.best(6)[0])
    # Warm-started (as the run's config says): the prior's samples count too.
    config_path = logs / "tiny" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "warm_start": str(prior_path),
                                       "warm_start_k": 3}))
    warm = METHODS["rl"](logs / "tiny" / "model.zip")
    assert (warm.min_budget, warm.max_budget) == (5, 54)
    meter = run(warm, synth, suite, 7)
    assert meter.used.tolist() == [7, 7, 7]  # 3 samples, the start render and 3 steps
    # The episode starts from the best of the 3 samples: its start render repeats it.
    first = meter.history_params[:, :3]
    best = first[torch.arange(3), meter.history_distance[:, :3].argmin(1)]
    assert torch.equal(meter.history_params[:, 3], best)


@pytest.mark.slow
def test_prior_rl_refines_the_best_of_k_until_the_budget(synth, suite, prior_path, tmp_path):
    from synthmatch.leaderboard.methods.rl import PriorRL, RLPolicy, load_rl
    from tests.agents.test_training import run_script, tags

    logs = tmp_path / "runs"
    run_script("train_ppo.py", "--env-id", ENV, "--total-timesteps", "64", "--n-steps", "16",
               "--batch-size", "32", "--n-epochs", "1", "--num-envs", "4",
               "--eval-targets", "2", "--log-dir", str(logs), "--run-name", "refine",
               "--warm-start", str(prior_path), "--warm-start-k", "3", "--accept", "improve")
    checkpoint = logs / "refine" / "model.zip"
    assert "search/accept_rate" in tags(logs / "refine")["scalars"]
    method = load_rl(checkpoint)
    assert isinstance(method, PriorRL) and method.name == "prior+rl"
    assert (method.min_budget, method.max_budget) == (5, None)
    with pytest.raises(ValueError, match="prior\\+rl"):
        RLPolicy(checkpoint)
    meter = run(method, synth, suite, 30)
    assert meter.used.tolist() == [30, 30, 30]  # anytime: it spends the whole budget
    again = run(load_rl(checkpoint), synth, suite, 30)
    assert torch.equal(meter.history_params, again.history_params)  # seeded proposals
    small = run(load_rl(checkpoint), synth, suite, 12)
    assert torch.equal(small.history_params[:, :12], meter.history_params[:, :12])
    # After the 3 samples and the start render, each proposal moves from the best so far:
    # the preset the env holds is always the best one rendered.
    d = meter.history_distance
    best = torch.cummin(d, 1).values
    assert (best[:, -1] <= d[:, 3]).all() and (best[:, -1] < d[:, 3]).any()


def test_prior_critic_renders_each_draw_in_the_critics_order(synth, suite, critic_path,
                                                              prior_path, tmp_path):
    import shutil

    from synthmatch.agents.critic import target_mel

    method = make("prior+critic", critic_path=critic_path)
    assert method.files() == [critic_path, prior_path]
    meter = run(method, synth, suite, 20)
    critic = method.critic
    with torch.no_grad():
        emb = critic.embed(target_mel(meter.distance, meter.target_audio))
        for first, last in ((0, 8), (8, 16), (16, 20)):  # two full draws and a third's start
            # The critic reads the samples with discrete columns snapped, as it trained.
            q = critic(emb, synth.params.quantize(meter.history_params[:, first:last]))
            assert (q.diff(dim=1) >= -1e-6).all()
    # Every rendered preset is one of the prior's samples, in the order drawn and ranked.
    task = MatchTask(synth, meter, 0)
    first_draw = method.sample(task, 8, 0)
    for i in range(len(suite)):
        rendered = meter.history_params[i, :8]
        assert all(any(torch.equal(r, s) for s in first_draw[i]) for r in rendered)
    small = run(make("prior+critic", critic_path=critic_path), synth, suite, 5)
    assert torch.equal(small.history_params[:, :5], meter.history_params[:, :5])
    # The critic is tied to its prior's samples: a changed prior file is refused.
    moved = tmp_path / "critic.pt"
    shutil.copy(critic_path, moved)
    from synthmatch.agents.critic import load_critic, save_critic

    other = tmp_path / "prior.pt"
    shutil.copy(prior_path, other)
    save_critic(load_critic(moved)[0], moved, str(other))
    other.write_bytes(other.read_bytes() + b"changed")
    with pytest.raises(ValueError, match="has changed since"):
        METHODS["prior+critic"](moved)
    other.unlink()
    with pytest.raises(FileNotFoundError, match="which is not there"):
        METHODS["prior+critic"](moved)


def test_a_critic_of_a_finetuned_prior_is_prior_rlft_critic(synth, suite, prior_path,
                                                             critic_path, tmp_path):
    from synthmatch.agents.critic import load_critic, save_critic
    from synthmatch.leaderboard.methods.prior import critic_method

    ckpt = torch.load(prior_path, weights_only=True)
    tuned_path = tmp_path / "tuned.pt"
    torch.save({**ckpt, "finetuned": {"from": str(prior_path), "rounds": 1, "k": 4,
                                      "seed": 0}}, tuned_path)
    tuned_critic = tmp_path / "critic.pt"
    save_critic(load_critic(critic_path)[0], tuned_critic, str(tuned_path))
    method = critic_method(tuned_critic)
    assert method.name == "prior-rlft+critic" and method.prior_path == tuned_path
    assert critic_method(critic_path).name == "prior+critic"
    with pytest.raises(ValueError, match="--finetuned-prior"):
        METHODS["prior+critic"](tuned_critic)
    with pytest.raises(ValueError, match="was not made by finetune_prior.py"):
        METHODS["prior-rlft+critic"](critic_path)
    # Same weights, same draws, same critic: the same renders as prior+critic.
    a = run(method, synth, suite, 9)
    b = run(critic_method(critic_path), synth, suite, 9)
    assert torch.equal(a.history_params, b.history_params)


def test_prior_central_renders_each_draw_nearest_its_median_first(synth, suite, prior_path):
    meter = run(make("prior+central", prior_path=prior_path), synth, suite, 12)
    first = meter.history_params[:, :8]  # the first draw, all of it
    spread = (first - first.median(1, keepdim=True).values).abs().sum(-1)
    assert (spread.diff(dim=1) >= 0).all()
    assert meter.used.tolist() == [12] * len(suite)


def test_prior_es_proposes_around_the_best_so_far(synth, suite, prior_path):
    """Replays the (1+1)-ES from the meter's history: each proposal is the best preset so far
    plus the seeded Gaussian step, so a rejected proposal is never built on."""
    sigma = 0.05
    meter = run(METHODS["prior+es"](prior_path, sigma=sigma), synth, suite, 40)
    d, params = meter.history_distance, meter.history_params
    best = d[:, :16].min(1).values
    x = params[torch.arange(3), d[:, :16].argmin(1)]
    gen = MatchTask(synth, meter, 0).generator(1)
    kept = 0
    for t in range(16, 40):
        proposal = (x + sigma * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)
        torch.testing.assert_close(params[:, t], proposal)
        keep = d[:, t] < best
        kept += int(keep.sum())
        x = torch.where(keep[:, None], proposal, x)
        best = torch.minimum(best, d[:, t])
    assert 0 < kept < 3 * 24  # both branches ran


def test_files_are_matched_to_the_synth_they_were_made_for(synth, prior_path, dataset_path):
    from synthmatch.synths import make_synth

    for method in (METHODS["nearest"](dataset_path), METHODS["prior"](prior_path)):
        assert method.matches_synth(synth)
        assert not method.matches_synth(make_synth("fm"))


def test_a_finetuned_prior_is_only_taken_by_prior_rlft(synth, suite, prior_path, tmp_path):
    ckpt = torch.load(prior_path, weights_only=True)
    tuned_path = tmp_path / "tuned.pt"
    torch.save({**ckpt, "finetuned": {"from": str(prior_path), "rounds": 2, "k": 4,
                                      "seed": 0}}, tuned_path)
    for name in ("prior", "prior+cmaes", "prior+gradient", "prior+es"):
        with pytest.raises(ValueError, match="--finetuned-prior"):
            METHODS[name](tuned_path)
    with pytest.raises(ValueError, match="was not made by finetune_prior.py"):
        METHODS["prior-rlft"](prior_path)
    tuned = METHODS["prior-rlft"](tuned_path)
    assert tuned.settings()["rounds"] == 2 and tuned.matches_synth(synth)
    # Same weights, same draws: the fine-tuned method is the prior method on another file.
    a, b = run(tuned, synth, suite, 5), run(METHODS["prior"](prior_path), synth, suite, 5)
    assert torch.equal(a.history_params, b.history_params)


@pytest.mark.parametrize("kind", ["prior", "critic"])
def test_a_checkpoint_is_read_once_while_it_is_unchanged(kind, prior_path, critic_path,
                                                         tmp_path):
    import os
    import shutil

    from synthmatch.leaderboard.methods import prior as prior_methods

    load = {"prior": prior_methods.load_prior, "critic": prior_methods.load_critic}[kind]
    copy = tmp_path / f"{kind}.pt"
    shutil.copyfile({"prior": prior_path, "critic": critic_path}[kind], copy)
    first = load(copy)
    assert load(copy) is first  # the match command's check, then its method
    assert load(str(copy), "cpu") is first
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load(copy) is not first  # a rewritten file is read again
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.pt")


def test_a_file_is_hashed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    import os

    from synthmatch import fileio

    path = tmp_path / "weights.pt"
    path.write_bytes(b"first")
    calls = []
    real = fileio.sha256_file
    monkeypatch.setattr(fileio, "sha256_file", lambda p: calls.append(p) or real(p))
    first = fileio.cached_sha256(path)
    assert fileio.cached_sha256(str(path)) == first and len(calls) == 1
    path.write_bytes(b"other")  # same size: the modification time tells them apart
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fileio.cached_sha256(path) == real(path) != first and len(calls) == 2


def test_the_cache_recomputes_a_result_whose_checkpoint_changed(synth, suite, tmp_path,
                                                                capsys):
    """A checkpoint retrained at the same path must not be scored from the old one's cache;
    results cached before files were recorded are still read."""
    import hashlib
    import json

    from synthmatch.leaderboard.harness import run_job
    from synthmatch.leaderboard.methods.search import RandomSearch

    weights = tmp_path / "model.pt"
    weights.write_bytes(b"first")
    runs = []

    class FromFile(RandomSearch):
        def files(self):
            return [weights]

        def run(self, task):
            runs.append(weights.read_bytes())
            return super().run(task)

    job = Job(suite, FromFile(), synth, [2], seed=1)
    cache = tmp_path / "cache"
    first = run_job(job, cache)
    stored = json.loads(job.cache_path(cache, 0).read_text())
    assert stored["files"] == {str(weights): hashlib.sha256(b"first").hexdigest()}
    assert run_job(job, cache) == first and runs == [b"first"]  # from the cache
    weights.write_bytes(b"second")
    run_job(job, cache)
    assert runs == [b"first", b"second"] and "changed since chunk 0" in capsys.readouterr().err
    run_job(job, cache)
    assert len(runs) == 2  # cached again, with the new file's hash
    del stored["files"]  # a chunk cached before files were recorded
    job.cache_path(cache, 0).write_text(json.dumps(stored))
    assert run_job(job, cache)[0]["targets"] == first[0]["targets"] and len(runs) == 2


def test_each_cached_chunk_says_which_code_computed_it(synth, suite, tmp_path):
    """The cache is keyed on settings, files and draws, not on code: a cell read from it
    names the commit that computed it, and the page says so next to the command."""
    import json

    from synthmatch.leaderboard.document import _ran_on
    from synthmatch.leaderboard.harness import run_job
    from synthmatch.leaderboard.methods.search import RandomSearch

    cache = tmp_path / "cache"
    old = Job(suite, RandomSearch(), synth, [2], seed=1, code="a" * 40)
    assert run_job(old, cache)[0]["computed_at"] == ["a" * 40]
    new = Job(suite, RandomSearch(), synth, [2], seed=1, code="b" * 40)
    assert new.key == old.key and run_job(new, cache)[0]["computed_at"] == ["a" * 40]
    stored = json.loads(old.cache_path(cache, 0).read_text())
    del stored["code"]  # a chunk cached before commits were recorded
    old.cache_path(cache, 0).write_text(json.dumps(stored))
    assert run_job(new, cache)[0]["computed_at"] == ["unknown"]
    run = {"machine": "m", "device": "cpu", "git_commit": "b" * 40,
           "methods": ["random", "cmaes"],
           "computed_at": {"random": ["a" * 40, "b" * 40], "cmaes": ["b" * 40],
                           "gradient": ["unknown"]}}  # gradient: a row a later run replaced
    assert _ran_on(run) == ("on m, device cpu, commit `bbbbbbbbbb`; from the cache, "
                            "`random` computed at `aaaaaaaaaa`")
    run["computed_at"]["cmaes"] = ["unknown"]
    assert _ran_on(run).endswith("`cmaes` computed at an unrecorded commit")
    del run["computed_at"]
    assert _ran_on(run) == "on m, device cpu, commit `bbbbbbbbbb`"
    run["git_commit"] = "b" * 40 + "+dirty"  # code that differed from the commit
    assert _ran_on(run) == "on m, device cpu, commit `bbbbbbbbbb` with uncommitted changes"


def test_a_run_with_uncommitted_code_says_so(tmp_path, monkeypatch):
    """git_commit() marks HEAD dirty when code differs from it (an edit, or a new module git
    does not track yet), and only then."""
    import subprocess

    from tests.data.helpers import load_script

    script = load_script("leaderboard.py")
    repo = tmp_path / "repo"
    (repo / "experiments").mkdir(parents=True)
    (repo / "synthmatch").mkdir()
    (repo / "synthmatch" / "a.py").write_text("x = 1\n")
    (repo / "docs.md").write_text("notes\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.setattr(script, "__file__", str(repo / "experiments" / "leaderboard.py"))
    assert script.git_commit() == head
    (repo / "docs.md").write_text("more notes\n")  # not code
    assert script.git_commit() == head
    (repo / ".gitignore").write_text("cache/\n")
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-qm", "ignore"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (repo / "synthmatch" / "cache").mkdir()
    (repo / "synthmatch" / "cache" / "x.pyc").write_text("")  # ignored: not code
    assert script.git_commit() == head
    (repo / "synthmatch" / "b.py").write_text("y = 1\n")  # new, untracked
    assert script.git_commit() == head + "+dirty"
    (repo / "synthmatch" / "b.py").unlink()
    (repo / "synthmatch" / "a.py").write_text("x = 2\n")
    assert script.git_commit() == head + "+dirty"


def tuned_and_gate(synth, prior_path, tmp_path):
    """A 'fine-tuned' prior (other weights than prior_path's) and an untrained gate naming
    both: ``(tuned prior, its path, the gate's path)``."""
    from synthmatch.agents.gate import DomainGate, save_gate
    from tests.agents.test_prior import tiny_prior

    tuned = tiny_prior(synth, seed=1)
    tuned.config.data = {"synth": synth.name}
    tuned_path = tmp_path / "tuned.pt"
    torch.save(tuned.checkpoint(finetuned={"from": str(prior_path), "rounds": 1}), tuned_path)
    gate_path = tmp_path / "gate.pt"
    save_gate(DomainGate(tuple(tuned.config.mel_shape), 8, (4, 4, 4)), gate_path,
              str(prior_path), str(tuned_path))
    return tuned, tuned_path, gate_path


def test_the_gate_sends_each_target_to_one_prior(synth, suite, prior_path, tmp_path,
                                                 monkeypatch):
    """A target the gate finds synth-like gets exactly prior's renders, any other exactly
    prior-rlft's; the gate's checkpoint names both priors and refuses a changed one."""
    from synthmatch.agents.gate import DomainGate, save_gate
    from synthmatch.leaderboard.methods.prior import GatedPrior

    tuned, tuned_path, gate_path = tuned_and_gate(synth, prior_path, tmp_path)
    method = METHODS["prior-rlft+gate"](gate_path)
    assert method.matches_synth(synth) and gate_path in method.files()
    task = MatchTask(synth, RenderMeter(synth, PerceptualDistance(synth.sample_rate),
                                        suite.audio, 1), 0)
    assert method.synth_like(task).shape == (len(suite),)

    mask = torch.tensor([True, False, True])
    monkeypatch.setattr(GatedPrior, "synth_like", lambda self, task: mask)
    gated = run(method, synth, suite, 5).history_params
    base = run(METHODS["prior"](prior_path), synth, suite, 5).history_params
    other = run(METHODS["prior-rlft"](tuned_path), synth, suite, 5).history_params
    assert not torch.equal(base, other)
    assert torch.equal(gated[mask], base[mask]) and torch.equal(gated[~mask], other[~mask])

    with pytest.raises(ValueError, match="was not made by finetune_prior.py"):
        save_gate(DomainGate(tuple(tuned.config.mel_shape), 8, (4, 4, 4)), gate_path,
                  str(prior_path), str(prior_path))
        METHODS["prior-rlft+gate"](gate_path)
    torch.save(tuned.checkpoint(finetuned={"from": str(prior_path), "rounds": 2}), tuned_path)
    with pytest.raises(ValueError, match="has changed since"):
        save_gate(DomainGate(tuple(tuned.config.mel_shape), 8, (4, 4, 4)), tmp_path / "g2.pt",
                  str(prior_path), str(tuned_path))
        tuned_path.write_bytes(tuned_path.read_bytes() + b"\0")
        METHODS["prior-rlft+gate"](tmp_path / "g2.pt")


def test_gradient_from_the_gates_prior(synth, suite, prior_path, tmp_path, monkeypatch):
    """prior-rlft+gate+gradient-patience renders the gate's 16 samples, then searches from
    the best of them: on a synth-like target exactly what prior+gradient-patience renders."""
    from synthmatch.leaderboard.methods.prior import GatedPrior

    _, _, gate_path = tuned_and_gate(synth, prior_path, tmp_path)
    mask = torch.tensor([True, False, True])
    monkeypatch.setattr(GatedPrior, "synth_like", lambda self, task: mask)
    method = METHODS["prior-rlft+gate+gradient-patience"](gate_path)
    assert method.settings()["gate"] == str(gate_path) and "patience" in method.settings()
    meter = run(method, synth, suite, 24)
    assert meter.used.tolist() == [24] * len(suite)
    task = MatchTask(synth, RenderMeter(synth, PerceptualDistance(synth.sample_rate),
                                        suite.audio, 16), 0)
    torch.testing.assert_close(meter.history_params[:, :16], method.sample(task, 16, 0))
    best = meter.history_distance[:, :16].argmin(1)
    torch.testing.assert_close(meter.history_params[:, 16],
                               meter.history_params[torch.arange(3), best])
    control = run(METHODS["prior+gradient-patience"](prior_path), synth, suite, 24)
    torch.testing.assert_close(meter.history_params[mask], control.history_params[mask],
                               atol=5e-3, rtol=0)  # as in the run-length test above
    assert not torch.allclose(meter.history_params[~mask, :16],
                              control.history_params[~mask, :16])


def test_prior_latent_es_steps_in_the_priors_noise_from_its_best_sample(synth, suite,
                                                                        prior_path):
    """Replays the search from the meter's history: the first 16 renders are the draw the
    other prior+ methods start from, each later one is the kept noise plus the seeded step
    carried through the flow, and a smaller budget is a prefix of a larger run."""
    from synthmatch.leaderboard.methods.prior import draw_generator

    method = METHODS["prior+latent-es"](prior_path, sigma=0.5)
    meter = run(method, synth, suite, 30)
    task = MatchTask(synth, meter, 0)
    torch.testing.assert_close(meter.history_params[:, :16], method.sample(task, 16, 0))
    prior, d = method.prior, meter.history_distance
    embedding = prior.embed(prior.mel(suite.audio))
    z = prior.draw_noise(3 * 16, draw_generator(prior, task, 0)).reshape(3, 16, -1)
    z, best = z[torch.arange(3), d[:, :16].argmin(1)], d[:, :16].min(1).values
    gen, kept = task.generator(1), 0
    for t in range(16, 30):
        proposal = z + 0.5 * torch.randn(z.shape, generator=gen)
        torch.testing.assert_close(meter.history_params[:, t], prior.decode(embedding, proposal))
        keep = d[:, t] < best
        kept += int(keep.sum())
        z, best = torch.where(keep[:, None], proposal, z), torch.minimum(best, d[:, t])
    assert 0 < kept < 3 * 14  # both branches ran
    small = run(METHODS["prior+latent-es"](prior_path, sigma=0.5), synth, suite, 20)
    torch.testing.assert_close(small.history_params[:, :20], meter.history_params[:, :20])


@pytest.mark.parametrize("popsize", [None, 5])
def test_prior_latent_cmaes_runs_pycma_in_the_priors_noise_from_its_best_sample(synth, suite,
                                                                                prior_path,
                                                                                popsize):
    """Replays target 1's search with pycma itself as the oracle: its first 16 renders are the
    draw prior+latent-es starts from, and each later generation is pycma's population around
    the best sample's noise (the method's seeded normals) carried through the flow; the
    population is cut where the budget ends."""
    import cma
    import numpy as np

    from synthmatch.leaderboard.methods.prior import draw_generator

    method = METHODS["prior+latent-cmaes"](prior_path, sigma=0.4, popsize=popsize)
    budget = 40
    meter = run(method, synth, suite, budget)
    assert meter.used.tolist() == [budget] * 3
    task = MatchTask(synth, meter, 0)
    es_meter = run(METHODS["prior+latent-es"](prior_path), synth, suite, 17)
    torch.testing.assert_close(meter.history_params[:, :16], es_meter.history_params[:, :16])
    prior, d, i = method.prior, meter.history_distance, 1
    embedding = prior.embed(prior.mel(suite.audio[i:i + 1]))
    z = prior.draw_noise(3 * 16, draw_generator(prior, task, 0)).reshape(3, 16, -1)[i]
    rng = np.random.default_rng([task.seed, 1, i])
    opts = {"seed": np.nan, "verbose": -9,
            "randn": lambda lam, n: rng.standard_normal((lam, n))}
    if popsize is not None:
        opts["popsize"] = popsize
    es = cma.CMAEvolutionStrategy(z[int(d[i, :16].argmin())].double().numpy(), 0.4, opts)
    t = 16
    while t < budget:
        asked = es.ask()[: budget - t]
        presets = prior.decode(embedding.expand(len(asked), -1),
                               torch.tensor(np.stack(asked), dtype=torch.float32))
        torch.testing.assert_close(meter.history_params[i, t:t + len(asked)], presets)
        if len(asked) == es.popsize:
            es.tell(asked, d[i, t:t + len(asked)].double().tolist())
        t += len(asked)
    assert es.countiter >= 1  # at least one full generation was told
    assert es.popsize == (popsize or 4 + int(3 * np.log(prior.config.num_params)))
