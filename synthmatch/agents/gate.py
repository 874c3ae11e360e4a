"""A gate between two priors of one synth: the prior trained on the synth's own renders for the
sounds the synth could have made, and the prior fine-tuned by reward on sounds without
parameters (``finetune_prior.py``) for the rest (``experiments/train_gate.py`` is the command
line over :func:`train_gate`).

Fine-tuning by reward moves a prior towards the real instruments and, a little, away from its
own synth's sounds (docs/results.md: a few percent worse in domain at one render, however the
synthetic data was rehearsed). A mixture of the two experts keeps both skills whole. Its router
is a classifier of the target's log-mel, trained on random presets of the synth (made as the
in-domain suites' targets are, from the pools' synthetic seed range) against a pool of sounds
without parameters. It needs no parameters either, and routing a target renders nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from synthmatch.agents.matching import prior_synth
from synthmatch.agents.prior import FlowPrior, MelEncoder
from synthmatch.agents.prior_finetune import check_pool_audio, validation_targets
from synthmatch.agents.prior_training import log_epoch, save_checkpoint
from synthmatch.cli import require_counts
from synthmatch.data.real_sounds import MIN_PEAK_DB, as_stored, draw_sounds, pool_seed
from synthmatch.devices import resolve_device
from synthmatch.fileio import load_weights, named_prior, sha256_file, write_json_atomic

# Sounds whose log-mel is computed together.
MEL_CHUNK = 256
# Below this probability of being the synth's own sound, a target goes to the fine-tuned prior.
THRESHOLD = 0.5


@dataclass
class GateSettings:
    """Settings of a gate training run (tyro turns the field docstrings into ``--help``)."""

    finetuned: str
    """the prior fine-tuned by reward (prior.pt of finetune_prior.py): it takes the sounds the
    gate finds unlike the synth's own"""
    prior: str = "runs/prior/subtractive/prior.pt"
    """the prior trained on the synth's renders (train_prior.py): it takes the synth-like
    sounds"""
    pool: str = "data/pool3/train"
    """sounds without parameters (make_sound_pool.py): the fine-tuned prior's side"""
    synthetic: int = 4096
    """random presets of the prior's synth, the other side (the pools' synthetic seeds;
    quiet and clipped draws skipped and stored as 16-bit, as the suites' targets are)"""
    val_pool: str | None = "data/pool/val"
    """sounds without parameters to validate on after each epoch (disjoint from --pool)"""
    in_domain_targets: int = 512
    """held-out synthetic targets (seeds 1,000,000...) to validate on after each epoch"""
    epochs: int = 8
    """passes over the training sounds"""
    batch_size: int = 128
    """sounds per gradient step (half of each side)"""
    learning_rate: float = 1e-3
    """AdamW learning rate (constant)"""
    seed: int = 0
    """seed of the weights and the batches"""
    device: str = "cpu"
    """cpu or cuda"""
    log_dir: str = "runs/gate"
    """parent directory of the runs"""
    run_name: str | None = None
    """run directory name (default: the fine-tuned prior's run name, seed and time)"""


def check_settings(s: GateSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written."""
    require_counts(s, "synthetic", "in_domain_targets", "epochs", "batch_size")
    if not s.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {s.learning_rate}")
    for flag in ("prior", "finetuned"):
        if not Path(getattr(s, flag)).is_file():
            raise FileNotFoundError(f"--{flag}: no prior checkpoint at {getattr(s, flag)}")
    for flag in ("pool", "val_pool"):
        path = getattr(s, flag)
        if path is not None and not (Path(path) / "manifest.json").is_file():
            raise FileNotFoundError(f"--{flag.replace('_', '-')}: no pool at {path} (make one "
                                    "with experiments/make_sound_pool.py)")
    resolve_device(s.device)


def check_pair(base: FlowPrior, tuned: FlowPrior) -> None:
    """Refuse two priors that are not a synthetic-data prior and a fine-tuning of one for the
    same synth."""
    if base.finetuned is not None:
        raise ValueError("--prior was made by finetune_prior.py: give the prior trained on "
                         "synthetic data")
    if tuned.finetuned is None:
        raise ValueError("--finetuned was not made by finetune_prior.py")
    if (base.param_names != tuned.param_names
            or base.config.data.get("synth") != tuned.config.data.get("synth")
            or base.config.mel_shape != tuned.config.mel_shape):
        raise ValueError("the two priors are not of the same synth and parameters")


class DomainGate(nn.Module):
    """The logit that a sound is its synth's own, from the base prior's normalised log-mel
    ``(B, n_mels, frames)`` (:meth:`FlowPrior.normalize_mel`): the prior's encoder shape with
    a linear read-out."""

    def __init__(self, mel_shape: tuple[int, int], embed_dim: int = 64,
                 channels: tuple[int, ...] = (64, 64, 64)):
        super().__init__()
        self.config = {"mel_shape": list(mel_shape), "embed_dim": embed_dim,
                       "channels": list(channels)}
        self.encoder = MelEncoder(mel_shape, embed_dim, list(channels))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 1))

    def forward(self, mel: Tensor) -> Tensor:
        return self.out(self.encoder(mel))[:, 0]


@torch.no_grad()
def gate_mel(prior: FlowPrior, audio: Tensor) -> Tensor:
    """The gate's input for sounds ``(N, T)``: the base prior's normalised log-mel."""
    return torch.cat([prior.normalize_mel(prior.mel(audio[i:i + MEL_CHUNK]))
                      for i in range(0, audio.shape[0], MEL_CHUNK)])


@torch.no_grad()
def synth_like(gate: DomainGate, mel: Tensor) -> Tensor:
    """``(N,)`` bool: the sounds the gate sends to the synthetic-data prior."""
    gate.eval()
    return torch.cat([torch.sigmoid(gate(mel[i:i + MEL_CHUNK])) >= THRESHOLD
                      for i in range(0, mel.shape[0], MEL_CHUNK)])


def save_gate(gate: DomainGate, path: Path, base_path: str, tuned_path: str,
              **extra: Any) -> None:
    """Save ``gate`` with the paths and sha256 of the two priors it routes between."""
    save_checkpoint({"kind": "prior_gate", "config": gate.config,
                     "state_dict": gate.state_dict(), "prior": str(base_path),
                     "prior_sha256": sha256_file(base_path), "finetuned": str(tuned_path),
                     "finetuned_sha256": sha256_file(tuned_path), **extra}, path)


def load_gate(path: str | Path, device: torch.device | str = "cpu"
              ) -> tuple[DomainGate, dict[str, Any]]:
    """A gate saved by :func:`train_gate` and its checkpoint's other entries (``prior`` and
    ``finetuned``, the priors it routes between, with their sha256; ``settings``;
    ``validation``)."""
    ckpt = load_weights(path, "gate checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "prior_gate":
        raise ValueError(f"{path} is not a gate checkpoint (gate.pt of train_gate.py)")
    config = ckpt["config"]
    gate = DomainGate(tuple(config["mel_shape"]), config["embed_dim"],
                      tuple(config["channels"]))
    gate.load_state_dict(ckpt["state_dict"])
    return gate.to(device).eval(), {k: v for k, v in ckpt.items()
                                    if k not in ("state_dict", "config", "kind")}


def repoint_gate(gate: str | Path, finetuned: str | Path, out: str | Path) -> None:
    """Save the router of ``gate`` as a gate to another fine-tuning of the same base prior.

    The router reads only the base prior's log-mel, so it sends the same sounds to the
    fine-tuned side whichever fine-tuned prior is there; a new fine-tuning needs no new
    router. The new checkpoint keeps the old one's settings and validation and records where
    its router came from (``router_from``, with its sha256).

    Raises:
        ValueError: ``finetuned`` is not a fine-tuning of the gate's base prior's synth.
    """
    model, meta = load_gate(gate)
    base = named_prior(meta, "prior", gate, "the gate")
    check_pair(FlowPrior.load(base), FlowPrior.load(finetuned))
    save_gate(model, Path(out), str(base.resolve()), str(Path(finetuned).resolve()),
              **{k: meta[k] for k in ("settings", "validation") if k in meta},
              router_from=str(gate), router_from_sha256=sha256_file(gate))


def train_gate(settings: GateSettings, pool_audio: Tensor, val_audio: Tensor | None = None,
               progress: bool = True) -> Path:
    """Fit the gate on ``pool_audio`` ``(N, T)`` (the sounds of ``settings.pool``) against
    random presets of the prior's synth, and save it; returns the run directory.

    The run directory holds ``config.json``, TensorBoard events, ``history.json`` (per epoch:
    the loss and the share of each validation set the gate routes right: held-out synthetic
    targets to the synthetic-data prior, validation-pool sounds to the fine-tuned one) and
    ``gate.pt``.
    """
    check_settings(settings)
    device = resolve_device(settings.device)
    base = FlowPrior.load(settings.prior, device)
    check_pair(base, FlowPrior.load(settings.finetuned, device))
    check_pool_audio(base, pool_audio, val_audio)
    name = settings.run_name or f"{Path(settings.finetuned).parent.name}_gate_s" \
                                f"{settings.seed}_{int(time.time())}"
    run_dir = Path(settings.log_dir) / name
    if (run_dir / "gate.pt").exists():
        raise ValueError(f"{run_dir} already holds a gate; pick another --run-name")

    synth = prior_synth(base, device)
    with torch.no_grad():
        own, _, _ = draw_sounds(synth, pool_seed("train", synth.name), settings.synthetic,
                                MIN_PEAK_DB, "rendering the synth's sounds", progress)
    sides = [gate_mel(base, pool_audio.to(device)),
             gate_mel(base, as_stored(torch.from_numpy(own)).to(device))]
    checks = {"in_domain": (gate_mel(base, validation_targets(
        synth, settings.in_domain_targets).to(device)), True)}
    if val_audio is not None:
        checks["val_pool"] = (gate_mel(base, val_audio.to(device)), False)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"settings": asdict(settings),
                                                "pool_sounds": int(pool_audio.shape[0])})
    writer = SummaryWriter(str(run_dir))
    torch.manual_seed(settings.seed)
    gate = DomainGate(tuple(base.config.mel_shape)).to(device)
    opt = torch.optim.AdamW(gate.parameters(), settings.learning_rate, weight_decay=1e-4)
    shuffle = torch.Generator().manual_seed(settings.seed)
    half = max(1, settings.batch_size // 2)
    # An epoch sees the larger side once; the smaller is resampled so both weigh the same.
    per_epoch = max(1, max(len(s) for s in sides) // half)
    history: list[dict[str, float]] = []
    for epoch in tqdm(range(settings.epochs), desc="training the gate", unit="epoch",
                      disable=None if progress else True):
        gate.train()
        losses = []
        for _ in range(per_epoch):
            mel = torch.cat([s[torch.randint(len(s), (half,), generator=shuffle).to(device)]
                             for s in sides])
            label = torch.cat([torch.zeros(half), torch.ones(half)]).to(device)
            loss = nn.functional.binary_cross_entropy_with_logits(gate(mel), label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        row = {"epoch": epoch + 1, "loss": sum(losses) / len(losses)}
        for key, (mel, own_side) in checks.items():
            routed = synth_like(gate, mel)
            row[f"{key}_routed_right"] = float((routed == own_side).float().mean())
        log_epoch(writer, history, row, "gate", run_dir / "history.json")
    writer.close()
    save_gate(gate.cpu(), run_dir / "gate.pt", settings.prior, settings.finetuned,
              settings=asdict(settings), validation=history[-1])
    return run_dir
