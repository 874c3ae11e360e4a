"""Benchmark suites: published ones load, verify and reproduce; tampering is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from synthmatch.agents.evaluation import HELD_OUT_SEED
from synthmatch.envs.registration import env_synth
from synthmatch.leaderboard.suites import (
    PUBLISHED,
    SUITE_ROOT,
    SuiteError,
    available_suites,
    load_suite,
    write_suite,
)
from synthmatch.rewards import PerceptualDistance

pytest.importorskip("soundfile")


def test_every_published_suite_is_present_and_pinned():
    assert set(available_suites()) == set(PUBLISHED)
    sizes = {name: len(load_suite(name)) for name in PUBLISHED}
    assert sizes["bench-v1/subtractive-id"] == sizes["bench-v1/fm-id"] == \
        sizes["bench-v1/torchsynth-id"] == 128
    cross = [n for n in PUBLISHED if "cross" in n]
    assert sum(sizes[n] for n in cross) >= 48
    assert all(load_suite(n).params is None for n in cross)


@pytest.mark.parametrize("name", ["bench-v1/subtractive-id", "bench-v1/fm-id",
                                  "bench-v1/torchsynth-id"])
def test_true_parameters_reproduce_the_stored_audio(name):
    suite = load_suite(name)
    synth = env_synth(suite.env_id)
    assert list(synth.params.names) == suite.param_names
    with torch.no_grad():
        d = PerceptualDistance(synth.sample_rate)(synth.render(suite.params[:16]),
                                                  suite.audio[:16])
    # Not bit-exact (16-bit storage adds noise to quiet tails, parameters are kept to 7
    # decimals, torchsynth's noise differs per batch slot): a floor of 0.003-0.04, far inside
    # the success threshold of 0.2.
    assert d.max() < 0.05


def test_seed_ranges_are_disjoint_from_each_other_and_from_evaluation():
    ranges = [load_suite(n).manifest["seed_range"] for n in PUBLISHED if "cross" not in n]
    ranges.append([HELD_OUT_SEED, HELD_OUT_SEED + 100_000])
    ranges.sort()
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_a_changed_audio_file_is_refused(tmp_path):
    copy = tmp_path / "quick"
    shutil.copytree(SUITE_ROOT / "bench-v1/quick", copy)
    assert len(load_suite(str(copy))) == 6  # an unpublished copy loads by path
    path = copy / "audio" / "t002.flac"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SuiteError, match="t002.flac does not match its sha256"):
        load_suite(str(copy))


def test_a_changed_published_manifest_is_refused(tmp_path):
    root = tmp_path / "suites"
    shutil.copytree(SUITE_ROOT / "bench-v1/quick", root / "bench-v1/quick")
    manifest = root / "bench-v1/quick/manifest.json"
    data = json.loads(manifest.read_text())
    data["targets"][0]["params"][0] = 0.5
    manifest.write_text(json.dumps(data, indent=1) + "\n")
    with pytest.raises(SuiteError, match="differs from the published bench-v1/quick"):
        load_suite("bench-v1/quick", root)


def test_unknown_suites_name_the_available_ones():
    with pytest.raises(SuiteError, match="unknown suite 'bench-v9/x'; available: .*quick"):
        load_suite("bench-v9/x")


def test_write_suite_round_trips_and_never_overwrites(tmp_path):
    audio = np.sin(np.linspace(0, 2000, 1600, dtype=np.float32))[None].repeat(2, 0) * 0.5
    path = write_suite("t-v1/a", audio, sample_rate=1600, probe={}, description="d",
                       made_by="m", root=tmp_path)
    suite = load_suite("t-v1/a", tmp_path)
    assert suite.target_names == ["t000", "t001"] and suite.params is None
    assert np.abs(suite.audio.numpy() - audio).max() <= 2 ** -15
    with pytest.raises(SuiteError, match="exists"):
        write_suite("t-v1/a", audio, sample_rate=1600, probe={}, description="d",
                    made_by="m", root=tmp_path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a"]  # no temporary left


def test_make_suites_leaves_published_suites_alone_and_refuses_unknown_ones():
    from tests.data.helpers import run_script
    from tests.inprocess import run_in_process

    assert run_in_process("make_suites.py", "--help").returncode == 0
    kept = run_script("make_suites.py", "--suites", "quick")  # a fresh interpreter too
    assert kept.returncode == 0 and "bench-v1/quick exists: left as it is" in kept.stdout
    assert load_suite("bench-v1/quick").manifest["seed_range"] == [23_000_000, 23_000_005]
    bad = run_in_process("make_suites.py", "--suites", "nope")
    assert bad.returncode == 2 and "unknown suite(s) ['nope']" in bad.stderr


def test_draw_sounds_remakes_a_published_suite():
    from synthmatch.data.real_sounds import draw_sounds

    suite = load_suite("bench-v1/quick")
    audio, params, seeds = draw_sounds(env_synth("SynthMatch-v0"), 23_000_000, len(suite),
                                       -40.0, "quick", progress=False)
    assert seeds == [t["seed"] for t in suite.manifest["targets"]]
    torch.testing.assert_close(torch.from_numpy(params), suite.params)
    assert np.abs(audio - suite.audio.numpy()).max() < 2.0 / 32768  # 16-bit FLAC
    # as_stored reads the render back as its file does: the same samples, but for the few
    # where today's render lands on the other side of a rounding boundary (1 step).
    from synthmatch.data.real_sounds import as_stored

    stored = as_stored(torch.from_numpy(audio))
    assert (stored != suite.audio).float().mean() < 1e-2  # depends on the thread count
    torch.testing.assert_close(stored, suite.audio, rtol=0, atol=2.0 ** -15)


def test_as_stored_matches_libsndfile_on_halves_and_overloads():
    import io

    import soundfile

    from synthmatch.data.real_sounds import as_stored

    rng = np.random.default_rng(0)
    audio = (rng.uniform(-1.2, 1.2, 4000) * rng.uniform(0, 1, 4000)).astype(np.float32)
    audio[:6] = [1.0, -1.0, 1.5, -1.5, 0.5 / 32768, 2.5 / 32768]  # clipped, exact halves
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16000, subtype="PCM_16", format="FLAC")
    buffer.seek(0)
    stored, _ = soundfile.read(buffer, dtype="float32")
    torch.testing.assert_close(as_stored(torch.from_numpy(audio)), torch.from_numpy(stored),
                               rtol=0, atol=0)


def test_pool_seeds_are_disjoint_from_every_suite():
    from synthmatch.data.real_sounds import (
        INSTRUMENT_SEED_STRIDE,
        INSTRUMENTS,
        POOL_SEED_BASES,
        pool_seed,
    )

    suite_seeds = [t["seed"] for name in available_suites()
                   for t in load_suite(name).manifest["targets"] if "seed" in t]
    assert len(suite_seeds) > 400
    starts = sorted(POOL_SEED_BASES.values())
    assert max(suite_seeds) < starts[0] and starts[0] > HELD_OUT_SEED + 100_000
    # Instruments of one split cannot run into the next split's range.
    assert len(INSTRUMENTS) * INSTRUMENT_SEED_STRIDE <= starts[1] - starts[0]
    assert pool_seed("val", "vital") == POOL_SEED_BASES["val"] + 2 * INSTRUMENT_SEED_STRIDE
    with pytest.raises(ValueError, match="unknown pool split"):
        pool_seed("test", "Kars")
