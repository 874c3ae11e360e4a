"""Shipping checkpoints: a prior in float16, and a gate that names its two priors beside it."""

from __future__ import annotations

import shutil

import pytest
import torch

from synthmatch.envs.registration import env_synth

pytest.importorskip("flow_matching")


@pytest.fixture(scope="module")
def synth():
    return env_synth("SynthMatch-Easy-v0")


def test_a_packaged_gate_names_its_priors_beside_it(synth, tmp_path):
    from synthmatch.agents.gate import DomainGate, save_gate
    from synthmatch.agents.packaging import package_gate, package_prior
    from synthmatch.leaderboard.methods import METHODS
    from tests.agents.test_prior import tiny_prior

    base, tuned = tiny_prior(synth), tiny_prior(synth, seed=1)
    for p in (base, tuned):
        p.config.data = {"synth": synth.name}
    runs = tmp_path / "runs"
    runs.mkdir()
    torch.save(base.checkpoint(), runs / "prior.pt")
    torch.save(tuned.checkpoint(finetuned={"from": str(runs / "prior.pt"), "rounds": 1}),
               runs / "tuned.pt")
    save_gate(DomainGate(tuple(base.config.mel_shape), 8, (4, 4, 4)), runs / "gate.pt",
              str(runs / "prior.pt"), str(runs / "tuned.pt"))

    lines = package_gate(runs / "gate.pt", tmp_path / "data", "easy", check_items=4)
    assert len(lines) == 3 and "differ by at most" in lines[1]
    # Packaging again keeps the shipped prior; another prior of that name is refused.
    assert "already the float16 copy" in package_gate(runs / "gate.pt", tmp_path / "data",
                                                      "easy", check_items=4)[0]
    package_prior(runs / "tuned.pt", tmp_path / "clash" / "prior-easy.pt", check_items=4)
    with pytest.raises(ValueError, match="made from another prior"):
        package_gate(runs / "gate.pt", tmp_path / "clash", "easy", check_items=4)
    shutil.move(tmp_path / "data", tmp_path / "moved")  # names are relative to the gate
    shutil.rmtree(runs)  # and nothing of the originals is needed
    method = METHODS["prior-rlft+gate"](tmp_path / "moved" / "gate-easy.pt")
    assert method.base_path == tmp_path / "moved" / "prior-easy.pt"
    assert method.prior.finetuned == {"from": str(runs / "prior.pt"), "rounds": 1}
    with torch.no_grad():  # float16 weights, read back as float32, are close to the original
        for ours, shipped in ((base, method.base), (tuned, method.prior)):
            for name, w in ours.state_dict().items():
                got = shipped.state_dict()[name]
                assert got.dtype == w.dtype
                torch.testing.assert_close(got, w, atol=2e-3, rtol=2e-3)

    # A new fine-tuning behind the shipped router: repointed, it packages into the same place,
    # keeping the shipped base prior and replacing only the fine-tuned one.
    from synthmatch.agents.gate import repoint_gate

    newer = tiny_prior(synth, seed=2)
    newer.config.data = {"synth": synth.name}
    torch.save(newer.checkpoint(finetuned={"from": "moved", "rounds": 3}),
               tmp_path / "newer.pt")
    repoint_gate(tmp_path / "moved" / "gate-easy.pt", tmp_path / "newer.pt",
                 tmp_path / "repointed" / "gate.pt")
    base_bytes = (tmp_path / "moved" / "prior-easy.pt").read_bytes()
    lines = package_gate(tmp_path / "repointed" / "gate.pt", tmp_path / "moved", "easy",
                         check_items=4)
    assert "already the gate's prior" in lines[0]
    assert (tmp_path / "moved" / "prior-easy.pt").read_bytes() == base_bytes
    method = METHODS["prior-rlft+gate"](tmp_path / "moved" / "gate-easy.pt")
    assert method.prior.finetuned == {"from": "moved", "rounds": 3}

    other = tmp_path / "other"
    other.mkdir()
    torch.save(tuned.checkpoint(finetuned={"from": "x", "rounds": 2}), other / "prior-easy.pt")
    (tmp_path / "moved" / "prior-rlft-easy.pt").write_bytes(
        (other / "prior-easy.pt").read_bytes())
    with pytest.raises(ValueError, match="has changed since"):
        METHODS["prior-rlft+gate"](tmp_path / "moved" / "gate-easy.pt")


def test_a_packaged_restart_policy_names_its_prior_beside_it(synth, tmp_path):
    from synthmatch.agents.packaging import package_restart_policy
    from synthmatch.agents.restarts import RestartSettings, make_policy, save_policy
    from synthmatch.leaderboard.methods import METHODS
    from tests.agents.test_prior import tiny_prior

    prior = tiny_prior(synth)
    prior.config.data = {"synth": synth.name}
    runs = tmp_path / "runs"
    runs.mkdir()
    torch.save(prior.checkpoint(), runs / "prior.pt")
    policy = make_policy()
    save_policy(policy, runs / "policy.pt", RestartSettings(prior=str(runs / "prior.pt")), 8)

    lines = package_restart_policy(runs / "policy.pt", tmp_path / "data", "easy",
                                   check_items=4)
    assert "differ by at most" in lines[0] and "restarts-easy.pt" in lines[1]
    shutil.move(tmp_path / "data", tmp_path / "moved")
    shutil.rmtree(runs)
    method = METHODS["prior+gradient+rl"](tmp_path / "moved" / "restarts-easy.pt")
    assert method.prior_path == tmp_path / "moved" / "prior-easy.pt"
    for name, w in policy.state_dict().items():  # the policy itself is kept as trained
        assert torch.equal(method.policy.state_dict()[name], w)
    (tmp_path / "moved" / "prior-easy.pt").write_bytes(b"changed")
    with pytest.raises(ValueError, match="has changed since"):
        METHODS["prior+gradient+rl"](tmp_path / "moved" / "restarts-easy.pt")
