"""The gate between a prior and its fine-tuning by reward: it learns to tell its synth's
sounds from others, names both priors, and refuses pairs that do not belong together."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from synthmatch.agents.gate import load_gate
from synthmatch.leaderboard.suites import write_suite
from tests.agents.test_critic import subtractive_prior


def noise_pool(synth, root, name: str, count: int, seed: int):
    """A pool of band-limited noise bursts: sounds no subtractive preset plays, written as
    make_sound_pool.py writes pools."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, synth.num_samples, generator=gen)
    audio = (0.2 * noise * torch.linspace(1.0, 0.0, synth.num_samples) ** 4).clamp(-1, 1)
    write_suite(name, audio.numpy(), sample_rate=synth.sample_rate,
                probe=synth.probe.to_dict(), description="test pool", made_by="tests",
                env_id=None, params=None, param_names=None, root=root)
    return root / name


def test_train_gate_tells_the_synths_sounds_from_a_pools(tmp_path):
    from synthmatch.fileio import sha256_file
    from tests.agents.test_training import ROOT, run_script

    synth, prior, prior_path = subtractive_prior(tmp_path)
    tuned_path = tmp_path / "tuned.pt"
    torch.save(prior.checkpoint(finetuned={"from": str(prior_path), "rounds": 1}), tuned_path)
    pool = noise_pool(synth, tmp_path, "pool/train", 48, 0)
    val = noise_pool(synth, tmp_path, "pool/val", 16, 1)
    run_script("train_gate.py", "--prior", str(prior_path), "--finetuned", str(tuned_path),
               "--pool", str(pool), "--val-pool", str(val), "--synthetic", "48",
               "--in-domain-targets", "16", "--epochs", "6", "--batch-size", "16",
               "--log-dir", str(tmp_path / "runs"), "--run-name", "g")
    run = tmp_path / "runs" / "g"
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 7))
    assert history[-1]["in_domain_routed_right"] >= 0.9
    assert history[-1]["val_pool_routed_right"] >= 0.9
    gate, meta = load_gate(run / "gate.pt")
    assert meta["prior"] == str(prior_path) and meta["finetuned"] == str(tuned_path)
    assert meta["finetuned_sha256"] == sha256_file(tuned_path)
    assert gate(torch.zeros(2, *prior.config.mel_shape)).shape == (2,)

    # The same router, re-pointed at another fine-tuning of the same base prior: the new gate
    # routes exactly as the old, names the new prior and says where its router came from.
    other_path = tmp_path / "other.pt"
    torch.save(prior.checkpoint(finetuned={"from": str(prior_path), "rounds": 2}), other_path)
    out = run_script("train_gate.py", "--router-from", str(run / "gate.pt"), "--finetuned",
                     str(other_path), "--log-dir", str(tmp_path / "runs"), "--run-name", "r")
    assert "router of" in out.stdout
    moved, moved_meta = load_gate(tmp_path / "runs" / "r" / "gate.pt")
    mel = torch.randn(5, *prior.config.mel_shape)
    with torch.no_grad():
        torch.testing.assert_close(moved(mel), gate(mel))
    assert moved_meta["finetuned"] == str(other_path) and moved_meta["prior"] == str(prior_path)
    assert moved_meta["finetuned_sha256"] == sha256_file(other_path)
    assert moved_meta["router_from_sha256"] == sha256_file(run / "gate.pt")
    assert moved_meta["validation"] == meta["validation"]
    again = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_gate.py"), "--router-from",
         str(run / "gate.pt"), "--finetuned", str(prior_path), "--log-dir",
         str(tmp_path / "runs"), "--run-name", "s"], capture_output=True, text=True,
        timeout=120, cwd=ROOT)
    assert again.returncode == 2 and "was not made by finetune_prior.py" in again.stderr
    assert "Traceback" not in again.stderr and not (tmp_path / "runs" / "s").exists()

    # The two priors swapped: refused in one line, nothing written.
    swapped = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_gate.py"), "--prior",
         str(tuned_path), "--finetuned", str(prior_path), "--pool", str(pool),
         "--val-pool", str(val), "--log-dir", str(tmp_path / "runs"), "--run-name", "h"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert swapped.returncode == 2 and "give the prior trained on synthetic" in swapped.stderr
    assert "Traceback" not in swapped.stderr and not (tmp_path / "runs" / "h").exists()


def test_train_gate_refuses_a_missing_pool_in_one_line(tmp_path):
    from tests.agents.test_training import ROOT

    _, _, prior_path = subtractive_prior(tmp_path)
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "train_gate.py"), "--prior",
         str(prior_path), "--finetuned", str(prior_path), "--pool", str(tmp_path / "nope"),
         "--log-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "--pool: no pool at" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_load_gate_refuses_other_checkpoints(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"kind": "preset_critic"}, path)
    with pytest.raises(ValueError, match="not a gate checkpoint"):
        load_gate(path)
