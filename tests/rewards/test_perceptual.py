"""The combined reward distance, its cached features and device handling."""

from __future__ import annotations

import pytest
import torch

from synthmatch.devices import count_syncs
from synthmatch.rewards import (
    AudioFeatures,
    LogMelSpectrogram,
    MultiResolutionSTFTDistance,
    PerceptualDistance,
)
from tests.rewards.signals import SR, feature_tensors, synth_like, tone

TERMS = ("stft", "mfcc", "centroid", "loudness", "dc", "clipping", "silence")






@pytest.fixture(scope="module")
def dist() -> PerceptualDistance:
    return PerceptualDistance(SR)


@pytest.mark.parametrize("kind", ["noise", "tones", "synth", "silence"])
def test_identical_audio_scores_zero_on_every_term(dist, kind):
    audio = {
        "noise": torch.randn(3, SR, generator=torch.Generator().manual_seed(0)) * 0.3,
        "tones": torch.cat([tone(110.0), tone(440.0, 1.0), tone(5000.0, 0.01)]),
        "synth": synth_like(3, 1),
        "silence": torch.zeros(3, SR),
    }[kind]
    components = dist.components(audio, audio.clone())
    assert set(components) == set(TERMS)
    for name, value in components.items():
        assert value.shape == (3,), name
        assert torch.all(value.abs() < 1e-6), name
    assert torch.all(dist(audio, audio.clone()).abs() < 1e-6)


def test_forward_is_the_weighted_sum_of_components():
    dist = PerceptualDistance(SR, w_stft=0.3, w_mfcc=2.0, w_centroid=0.7, w_loudness=1.5,
                              w_penalty=4.0)
    pred = torch.cat([synth_like(2, 2), torch.zeros(1, SR)])
    target = synth_like(3, 3)
    c = dist.components(pred, target)
    expected = (0.3 * c["stft"] + 2.0 * c["mfcc"] + 0.7 * c["centroid"] + 1.5 * c["loudness"]
                + 4.0 * (c["dc"] + c["clipping"] + c["silence"]))
    torch.testing.assert_close(dist(pred, target), expected)
    assert c["silence"][2] == 1.0


def test_stft_component_equals_the_standalone_distance_with_its_cap(dist):
    pred, target = synth_like(4, 4), synth_like(4, 5)
    standalone = MultiResolutionSTFTDistance(sc_max=10.0)(pred, target)
    torch.testing.assert_close(dist.components(pred, target)["stft"], standalone)


def test_default_scale_is_order_one_for_unrelated_sounds(dist):
    value = dist(synth_like(32, 6), synth_like(32, 7))
    assert 0.3 < value.mean().item() < 5.0
    assert torch.isfinite(value).all() and value.max() < 20.0


def test_batch_values_equal_single_item_calls(dist):
    pred, target = synth_like(5, 8), synth_like(5, 9)
    batched = dist(pred, target)
    singles = torch.cat([dist(pred[i : i + 1], target[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-5)


def test_cached_target_features_give_the_same_value(dist):
    pred, target = synth_like(4, 10), synth_like(4, 11)
    torch.testing.assert_close(dist(pred, target), dist(pred, dist.features(target)),
                               rtol=0, atol=0)
    torch.testing.assert_close(dist(pred, target),
                               dist.distance(dist.features(pred), dist.features(target)),
                               rtol=0, atol=0)


def test_a_single_target_broadcasts_over_predictions(dist):
    pred, target = synth_like(4, 12), synth_like(1, 13)
    torch.testing.assert_close(dist(pred, target), dist(pred, target.expand(4, -1)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batch size"):
        dist(pred, synth_like(3, 13))


def test_tones_further_apart_are_further_apart(dist):
    target = tone(440.0)
    values = [dist(tone(f), target).item() for f in (440.0, 466.16, 523.25, 880.0)]
    assert values[0] < 1e-6 and values[0] < values[1] < values[2] < values[3]


def test_no_nan_for_silent_pred_or_target(dist):
    silent, loud = torch.zeros(2, SR), synth_like(2, 14)
    for pred, target in [(silent, loud), (loud, silent), (silent, silent)]:
        for name, value in dist.components(pred, target).items():
            assert torch.isfinite(value).all(), name
    assert dist.components(silent, loud)["silence"].eq(1.0).all()


def test_features_log_mel_is_the_log_mel_spectrogram(dist):
    audio = synth_like(3, 15)
    features = dist.features(audio)
    assert isinstance(features, AudioFeatures)
    expected = LogMelSpectrogram(SR)(audio)
    assert features.log_mel.shape == (3, 64, 63)
    torch.testing.assert_close(features.log_mel, expected, rtol=1e-5, atol=1e-3)
    assert features.mfcc.shape == (3, 20, 63)
    assert features.centroid_hz.shape == features.loudness_db.shape == (3, 63)
    assert [m.shape[1] for m in features.mag] == [1025, 513, 129]


def test_features_without_a_shared_resolution_match_the_shared_ones():
    shared = PerceptualDistance(SR)
    separate = PerceptualDistance(SR, fft_sizes=(2048, 512), hop_sizes=(512, 128))
    audio = synth_like(2, 16)
    a, b = shared.features(audio), separate.features(audio)
    torch.testing.assert_close(a.log_mel, b.log_mel)
    torch.testing.assert_close(a.loudness_db, b.loudness_db)


def test_index_and_assign_round_trip(dist):
    features = dist.features(synth_like(6, 17))
    replacement = dist.features(synth_like(2, 18))
    idx = torch.tensor([4, 1])

    updated = features.clone().assign_(idx, replacement)
    back = updated.index(idx)
    for got, want in zip(feature_tensors(back), feature_tensors(replacement), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    keep = torch.tensor([0, 2, 3, 5])
    kept, original = updated.index(keep), features.index(keep)
    for got, want in zip(feature_tensors(kept), feature_tensors(original), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    mask = torch.tensor([False, True, False, False, True, False])
    by_mask = features.clone().assign_(mask, replacement.index(torch.tensor([1, 0])))
    torch.testing.assert_close(by_mask.log_mel, updated.log_mel, rtol=0, atol=0)
    assert features.index(mask).batch_size == 2

    # The updated rows score as the replacement audio does.
    pred = synth_like(6, 19)
    torch.testing.assert_close(dist(pred, updated)[idx], dist(pred[idx], replacement))


def test_assign_into_features_computed_under_inference_mode(dist):
    with torch.inference_mode():
        features = dist.features(synth_like(3, 20))
    replacement = dist.features(synth_like(1, 21))
    features.assign_(torch.tensor([1]), replacement)
    torch.testing.assert_close(features.index(torch.tensor([1])).log_mel, replacement.log_mel)


def test_index_and_assign_reject_bad_arguments(dist):
    features = dist.features(synth_like(3, 22))
    with pytest.raises(ValueError, match="selects 2 rows"):
        features.assign_(torch.tensor([0, 1]), features.index(torch.tensor([0])))
    with pytest.raises(ValueError, match="boolean mask"):
        features.index(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="1-D"):
        features.index(torch.tensor(0))
    short = dist.features(synth_like(1, 23)[:, : SR // 2])
    with pytest.raises(ValueError, match="feature shapes differ"):
        features.assign_(torch.tensor([0]), short)


def test_gradients_are_finite(dist):
    target = synth_like(2, 24)
    pred = synth_like(2, 25).requires_grad_(True)
    dist(pred, target).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    same = target.clone().requires_grad_(True)
    dist(same, target).sum().backward()
    assert torch.isfinite(same.grad).all()


def test_float64_audio_works(dist):
    pred, target = synth_like(2, 26), synth_like(2, 27)
    value64 = dist(pred.double(), target.double())
    assert value64.dtype == torch.float64
    torch.testing.assert_close(value64.float(), dist(pred, target), rtol=1e-4, atol=1e-4)


def test_invalid_weights_raise():
    with pytest.raises(ValueError, match="w_mfcc"):
        PerceptualDistance(SR, w_mfcc=-1.0)
    with pytest.raises(ValueError, match="w_loudness"):
        PerceptualDistance(SR, w_loudness=float("nan"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    pred, target = synth_like(4, 28), synth_like(4, 29)
    cpu = PerceptualDistance(SR)
    expected = cpu.components(pred, target)
    gpu = PerceptualDistance(SR).to("cuda")
    got = gpu.components(pred.cuda(), target.cuda())
    for name in TERMS:
        assert got[name].device.type == "cuda"
        torch.testing.assert_close(got[name].cpu(), expected[name], rtol=1e-3, atol=1e-4)
    # A module left on the CPU follows its input to the GPU.
    lazy = cpu(pred.cuda(), cpu.features(target).to("cuda"))
    assert lazy.device.type == "cuda"
    torch.testing.assert_close(lazy.cpu(), cpu(pred, target), rtol=1e-3, atol=1e-4)
    features = gpu.features(target.cuda())
    features.assign_(torch.tensor([0, 2]), gpu.features(pred[:2].cuda()))
    torch.testing.assert_close(features.log_mel[2], gpu.features(pred[1:2].cuda()).log_mel[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_and_distance_never_wait_for_the_host():
    dist = PerceptualDistance(SR).to("cuda")
    pred, target = synth_like(64, 30).cuda(), synth_like(64, 31).cuda()
    cached = dist.features(target)

    def env_step():  # features of a chunk, compared with rows of the cached target features
        return dist.distance(dist.features(pred[:32]), cached.rows(0, 32))

    env_step()  # warm-up: cuFFT plans, kernels
    assert count_syncs(env_step) == 0
