"""The flow-matching prior: learning, sampling, checkpoints, matching, warm starts, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthmatch.agents.matching import OneShotMatcher, PriorInitializer, check_compatible
from synthmatch.agents.prior import FlowPrior, PriorConfig
from synthmatch.agents.search import best_of, random_search, score_candidates
from synthmatch.envs import SynthMatchCore
from synthmatch.rewards import PerceptualDistance
from synthmatch.rewards.features import LogMelSpectrogram
from synthmatch.synths import FrozenSynth, ProbeNote, make_synth

pytest.importorskip("flow_matching")

TINY = dict(embed_dim=32, hidden=48, depth=2, time_dim=16, channels=[32, 32])


def tiny_prior(synth, seed: int = 0, **sizes) -> FlowPrior:
    """An untrained prior over ``synth``'s parameters (normalisation from a few renders)."""
    torch.manual_seed(seed)
    mel = LogMelSpectrogram(synth.sample_rate)(synth.render(synth.params.sample(
        32, torch.Generator().manual_seed(seed)))).clamp_min(-100.0)
    config = PriorConfig(
        param_names=list(synth.params.names),
        choice_steps=[len(s.choices) - 1 if s.choices else 0 for s in synth.params],
        mel_shape=list(mel.shape[1:]), sample_rate=synth.sample_rate,
        num_samples=synth.num_samples, mel_settings={},
        mel_mean=mel.mean((0, 2)).tolist(), mel_std=mel.std((0, 2)).tolist(),
        **{**TINY, **sizes})
    return FlowPrior(config)


@pytest.fixture(scope="module")
def subtractive():
    return make_synth("subtractive")


@pytest.fixture(scope="module")
def fm_data():
    """1024 FM presets with their log-mels: enough for a tiny prior to learn something."""
    synth = make_synth("fm", probe=ProbeNote(render_duration_s=0.5, note_duration_s=0.4))
    params = synth.params.sample(1024, torch.Generator().manual_seed(0))
    with torch.no_grad():
        mel = LogMelSpectrogram(synth.sample_rate)(synth.render(params))
    return synth, params, mel


def test_tiny_prior_loss_falls_well_below_its_start(fm_data):
    synth, params, mel = fm_data
    prior = tiny_prior(synth)
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(300):
        idx = torch.randint(params.shape[0], (64,), generator=gen)
        loss = prior.loss(params[idx], mel[idx], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = np.mean(losses[:10]), np.mean(losses[-30:])
    # An untrained velocity net scores about 1.7 (noise plus data variance); the conditional
    # mean of a learned flow roughly halves it.
    assert end < 0.7 * start, (start, end)


def test_samples_have_the_right_shape_range_and_discrete_steps(subtractive):
    prior = tiny_prior(subtractive)
    table = subtractive.params
    audio = subtractive.render(table.sample(3, torch.Generator().manual_seed(1)))
    u = prior.sample_audio(audio, k=5, steps=4, generator=torch.Generator().manual_seed(0))
    assert u.shape == (3, 5, len(table)) and u.dtype == torch.float32
    assert u.min() >= 0.0 and u.max() <= 1.0
    torch.testing.assert_close(table.quantize(u.reshape(-1, len(table))), u.reshape(-1, len(table)))
    again = prior.sample_audio(audio, k=5, steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(u, again)  # a seed fixes the samples
    other = prior.sample_audio(audio, k=5, steps=4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(u, other)
    with pytest.raises(ValueError, match="k >= 1"):
        prior.sample_audio(audio, k=0)
    # The temperature scales the starting noise of the same draw; 0 leaves one sample.
    hot = prior.sample_audio(audio, k=5, steps=4, generator=torch.Generator().manual_seed(0),
                             temperature=1.5)
    noise = torch.randn(15, len(table), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        flow = prior.sample_flow(prior.embed(prior.mel(audio)).repeat_interleave(5, 0),
                                 1.5 * noise, 4)
    torch.testing.assert_close(hot, prior.to_unit(flow).reshape(3, 5, -1))
    cold = prior.sample_audio(audio, k=5, steps=4, temperature=0.0)
    assert torch.equal(cold, cold[:, :1].expand_as(cold))
    with pytest.raises(ValueError, match="temperature"):
        prior.sample_audio(audio, temperature=-1.0)
    with pytest.raises(ValueError, match="audio must have shape"):
        prior.sample_audio(audio[:, :100])


def test_sde_sampler_ends_its_trajectories_and_differs_from_the_ode(subtractive):
    """``method="sde"`` draws the starting noise as the ODE does, then steps the SDE with the
    same generator: its samples are :func:`sde_rollout`'s end points, made valid presets."""
    from synthmatch.agents.prior import sde_rollout

    prior = tiny_prior(subtractive)
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.05)
    audio = subtractive.render(subtractive.params.sample(2, torch.Generator().manual_seed(1)))
    u = prior.sample_audio(audio, k=3, steps=4, method="sde", sde_noise=0.5,
                           generator=torch.Generator().manual_seed(0))
    assert u.shape == (2, 3, prior.config.num_params) and u.min() >= 0 and u.max() <= 1
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embedding = prior.embed(prior.mel(audio)).repeat_interleave(3, 0)
        end = sde_rollout(prior, embedding, 4, 0.5, gen,
                          start=prior.draw_noise(6, gen))[:, -1]
    torch.testing.assert_close(u, prior.to_unit(end).reshape(2, 3, -1))
    ode = prior.sample_audio(audio, k=3, steps=4, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(u, ode)
    matcher = OneShotMatcher(prior, subtractive, k=3, steps=4, method="sde")
    assert matcher.propose(audio).shape == (2, 3, len(subtractive.params))


def test_checkpoint_round_trip_loads_with_weights_only(subtractive, tmp_path):
    prior = tiny_prior(subtractive, seed=3)
    for p in prior.parameters():  # make every weight matter, zero-initialised ones too
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "prior.pt"
    torch.save(prior.checkpoint(step=7), path)
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 7 and raw["config"]["param_names"] == list(subtractive.params.names)
    loaded = FlowPrior.load(path)
    mel = torch.randn(4, *prior.config.mel_shape) * 20 - 50
    noise = torch.randn(4, prior.config.num_params)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(mel), prior.embed(mel))
        torch.testing.assert_close(loaded.sample_flow(loaded.embed(mel), noise, 4),
                                   prior.sample_flow(prior.embed(mel), noise, 4))
    torch.save({"not": "a prior"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a synthmatch prior"):
        FlowPrior.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        FlowPrior.load(tmp_path / "missing.pt")


def test_scoring_and_best_of_agree_with_direct_distances(subtractive):
    table, gen = subtractive.params, torch.Generator().manual_seed(2)
    targets = table.sample(3, gen)
    target_audio = subtractive.render(targets)
    candidates = table.sample(3 * 4, gen).reshape(3, 4, -1)
    candidates[1, 2] = targets[1]  # the exact target is among target 1's candidates
    distance = PerceptualDistance(subtractive.sample_rate)
    d = score_candidates(subtractive, distance, target_audio, candidates, chunk=5)
    direct = distance(subtractive.render(candidates.reshape(12, -1)),
                      target_audio.repeat_interleave(4, 0)).reshape(3, 4)
    torch.testing.assert_close(d, direct, rtol=1e-4, atol=1e-5)
    # Features the caller holds already are used instead of the audio's, chunk by chunk.
    other = subtractive.render(table.sample(3, gen))
    held = score_candidates(subtractive, distance, target_audio, candidates, chunk=5,
                            target_features=distance.features(other))
    torch.testing.assert_close(held, distance(subtractive.render(candidates.reshape(12, -1)),
                                              other.repeat_interleave(4, 0)).reshape(3, 4),
                               rtol=1e-4, atol=1e-5)
    result = best_of(subtractive, distance, target_audio, candidates)
    torch.testing.assert_close(result.distance, direct.min(1).values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.params[1], targets[1])
    assert float(result.distance[1]) < 1e-3 and result.renders == 4

    searched = random_search(subtractive, distance, target_audio, 6,
                             torch.Generator().manual_seed(0))
    assert searched.candidates.shape == (3, 6, len(table))
    assert torch.all(searched.distance <= searched.candidate_distances.mean(1))


def test_one_shot_matcher_returns_the_best_of_its_candidates(subtractive):
    prior = tiny_prior(subtractive)
    audio = subtractive.render(subtractive.params.sample(2, torch.Generator().manual_seed(4)))
    result = OneShotMatcher(prior, subtractive, k=3, steps=2).match(audio)
    assert result.candidates.shape == (2, 3, len(subtractive.params))
    torch.testing.assert_close(result.distance, result.candidate_distances.min(1).values)
    with pytest.raises(ValueError, match="k must be"):
        OneShotMatcher(prior, subtractive, k=0)


def test_warm_start_reset_starts_from_prior_samples(subtractive):
    prior = tiny_prior(subtractive)
    core = SynthMatchCore(3, "subtractive")
    core.initializer = PriorInitializer(prior, core.synth, steps=2, seed=5)
    core.seed([0, 1, 2])
    core.reset_envs(torch.arange(3))
    # The starting parameters are the prior's samples for these targets (same noise seed).
    expected = PriorInitializer(prior, core.synth, steps=2, seed=5)(core.target_audio)
    torch.testing.assert_close(core.params, expected)
    assert not torch.allclose(core.params, core.synth.params.defaults(3))
    # Distances are those of the prior's presets.
    d = core.distance(core.synth.render(core.params), core.target_audio)
    torch.testing.assert_close(core.initial_dist, d, rtol=1e-4, atol=1e-5)

    best = PriorInitializer(prior, core.synth, k=4, steps=2, seed=5)
    core.reset_envs(torch.arange(3), {"initializer": best})
    assert core.params.shape == (3, len(subtractive.params))


def test_initializer_maps_a_subset_and_rejects_mismatches(subtractive):
    prior = tiny_prior(subtractive)
    easy = FrozenSynth(make_synth("subtractive"), ["cutoff_hz", "osc1_shape"])
    columns = check_compatible(prior, easy)
    assert columns == [prior.param_names.index(n) for n in easy.params.names]
    assert sorted(easy.params.names) == ["cutoff_hz", "osc1_shape"]
    with pytest.warns(UserWarning, match="controls 2 of the prior's 24"):
        init = PriorInitializer(prior, easy, steps=2)
    assert init(easy.render(easy.params.defaults(2))).shape == (2, 2)
    with pytest.raises(ValueError, match="Hz"):
        check_compatible(prior, make_synth("subtractive", probe=ProbeNote(sample_rate=22050)))
    with pytest.raises(ValueError, match="does not know"):
        check_compatible(prior, make_synth("fm"))


@pytest.mark.slow
def test_onnx_export_matches_torch(subtractive, tmp_path):
    pytest.importorskip("onnxruntime")
    from synthmatch.agents.prior_export import OnnxPrior, export_onnx

    prior = tiny_prior(subtractive, seed=1)
    for block in prior.velocity.blocks:  # non-zero residual branches
        torch.nn.init.normal_(block.mlp[-1].weight, std=0.05)
    onnx_prior = OnnxPrior(export_onnx(prior, tmp_path / "onnx"))
    mel = torch.randn(5, *prior.config.mel_shape) * 20 - 50
    noise = torch.randn(5, prior.config.num_params)
    with torch.no_grad():
        emb = prior.embed(mel)
        flow = prior.sample_flow(emb, noise, steps=6)
    emb_onnx = onnx_prior.embed(mel.numpy())
    np.testing.assert_allclose(emb_onnx, emb.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(onnx_prior.integrate(emb_onnx, noise.numpy(), 6), flow.numpy(),
                               atol=1e-4, rtol=1e-4)
    u = onnx_prior.sample(mel.numpy(), k=3, steps=2, rng=np.random.default_rng(0))
    assert u.shape == (5, 3, prior.config.num_params) and u.min() >= 0 and u.max() <= 1
    with pytest.raises(FileNotFoundError, match="export"):
        OnnxPrior(tmp_path / "nothing")


def test_teacher_rows_regress_on_the_teachers_velocity(subtractive):
    """Rows taught by a teacher take its velocity as the target: a prior taught by its own
    copy has zero loss on those rows, and the other rows keep the data's loss."""
    import copy

    prior = tiny_prior(subtractive)
    teacher = copy.deepcopy(prior).requires_grad_(False)
    params = subtractive.params.sample(6, torch.Generator().manual_seed(5))
    mel = LogMelSpectrogram(subtractive.sample_rate)(subtractive.render(params))

    def loss(**kwargs):
        return prior.loss(params, mel, torch.Generator().manual_seed(1), **kwargs)

    plain = loss()
    assert float(loss(teacher=teacher).detach()) < 1e-12 < float(plain.detach())
    torch.testing.assert_close(loss(teacher=teacher, taught=torch.zeros(6, dtype=torch.bool)),
                               plain)
    taught = torch.tensor([True, True, True, False, False, False])
    # Half the rows are exact, so the loss is the other half's per-row mean, halved.
    x1 = params * 2.0 - 1.0
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(x1.shape, generator=gen)
    t = torch.rand(6, generator=gen)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    with torch.no_grad():
        v = prior.velocity(x_t, t, prior.embed(mel))
    rest = ((v - (x1 - x0))[3:] ** 2).mean()
    torch.testing.assert_close(loss(teacher=teacher, taught=taught), rest / 2)
    loss(teacher=teacher, taught=taught).backward()
    assert all(p.grad is None for p in teacher.parameters())
