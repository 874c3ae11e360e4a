"""Training a :class:`~synthmatch.agents.prior.FlowPrior` from a sharded dataset
(``experiments/train_prior.py`` is the command line over :func:`train_prior`).

A run lives in ``<log_dir>/<run_name>/``: TensorBoard events (``loss/train``, ``loss/val``,
``val/spectral_distance`` and ``val/param_mae`` of re-rendered samples, ``time/``),
``config.json``, ``checkpoints/latest.pt`` (model, optimiser, schedule, step and random
state, written atomically every ``checkpoint_every`` steps, at the end and on Ctrl-C) and
``prior.pt`` (the final model alone). Both files load with ``torch.load(...,
weights_only=True)``: they hold tensors and plain Python values only.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from synthmatch.agents.matching import OneShotMatcher
from synthmatch.agents.prior import FlowPrior, PriorConfig
from synthmatch.devices import resolve_device
from synthmatch.fileio import load_weights, temporary_name, write_json_atomic

# Validation items whose loss is measured at each evaluation (with fixed noise).
VAL_LOSS_ITEMS = 2048


@dataclass
class PriorSettings:
    """Settings of a prior training run (tyro turns the field docstrings into ``--help``)."""

    data: str = "data/subtractive"
    """dataset directory written by experiments/make_dataset.py"""
    steps: int = 20_000
    """optimiser steps (a resumed run continues to this)"""
    batch_size: int = 256
    """training items per step"""
    learning_rate: float = 1e-3
    """peak AdamW learning rate (linear warm-up, then cosine decay to 5%)"""
    warmup_steps: int = 500
    """steps of linear learning-rate warm-up"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    embed_dim: int = 256
    """size of the audio embedding"""
    hidden: int = 256
    """width of the velocity network"""
    depth: int = 4
    """residual blocks of the velocity network"""
    sample_steps: int = 16
    """ODE steps when sampling (midpoint method: two network calls each)"""
    device: str = "cpu"
    """cpu or cuda"""
    seed: int = 0
    """seed of initialisation, batches and noise"""
    run_name: str | None = None
    """run directory name under log-dir (default: dataset name, seed and time)"""
    log_dir: str = "runs/prior"
    """parent directory of the runs"""
    eval_every: int = 1000
    """steps between validation (loss, and distance of re-rendered samples)"""
    eval_items: int = 128
    """validation targets re-rendered from prior samples at each evaluation"""
    checkpoint_every: int = 1000
    """steps between checkpoints (one is also written at the end and on Ctrl-C)"""
    resume: str | None = None
    """checkpoint to continue from (its run directory, settings and step are kept)"""


def log_epoch(writer: SummaryWriter, history: list[dict[str, float]], row: dict[str, float],
              prefix: str, path: Path) -> None:
    """Append an epoch's ``row`` (its ``epoch`` and figures) to ``history``, write each figure
    to TensorBoard as ``<prefix>/<key>`` and rewrite ``path`` (history.json) whole."""
    history.append(row)
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(f"{prefix}/{key}", value, row["epoch"])
    write_json_atomic(path, history)


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        ckpt = load_weights(path, "prior training checkpoint")
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: no checkpoint at {path}") from None
    if not isinstance(ckpt, dict) or "settings" not in ckpt or "step" not in ckpt:
        raise ValueError(f"--resume: {path} is not a train_prior.py checkpoint "
                         "(checkpoints/latest.pt)")
    return ckpt


def check_settings(settings: PriorSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written."""
    for flag in ("steps", "batch_size", "embed_dim", "hidden", "depth", "sample_steps",
                 "eval_every", "eval_items", "checkpoint_every"):
        value = getattr(settings, flag)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if settings.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be >= 0, got {settings.warmup_steps}")
    if not settings.learning_rate > 0:
        raise ValueError(f"--learning-rate must be > 0, got {settings.learning_rate}")
    resolve_device(settings.device)


def prior_config(ds, settings: PriorSettings) -> PriorConfig:
    """A prior's configuration from a dataset (parameters, mel front end, statistics)."""
    synth = ds.make_synth()
    mel_stats = ds.stats["mel"]
    return PriorConfig(
        param_names=list(ds.param_names),
        choice_steps=[len(s.choices) - 1 if s.choices else 0 for s in synth.params],
        mel_shape=list(ds.log_mel()(torch.zeros(1, synth.num_samples)).shape[1:]),
        sample_rate=synth.sample_rate,
        num_samples=synth.num_samples,
        mel_settings=dict(ds.config.mel),
        mel_mean=[float(x) for x in mel_stats["mean"]],
        mel_std=[float(x) for x in mel_stats["std"]],
        data=ds.config.to_dict(),
        embed_dim=settings.embed_dim,
        hidden=settings.hidden,
        depth=settings.depth,
    )


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.05 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Validator:
    """Validation loss with fixed noise, and the perceptual distance and parameter error of
    one prior sample per target, re-rendered, on the first ``items`` validation targets."""

    def __init__(self, val: dict[str, np.ndarray], synth, items: int, device: torch.device,
                 sample_steps: int):
        n = min(VAL_LOSS_ITEMS, val["params"].shape[0])
        self.params = torch.from_numpy(val["params"][:n]).to(device)
        self.mel = torch.from_numpy(val["mel"][:n]).to(device)
        self.synth = synth
        self.items = min(items, n)
        self.sample_steps = sample_steps
        with torch.no_grad():
            self.target_audio = synth.render(self.params[:self.items]) if self.items else None

    @torch.no_grad()
    def __call__(self, prior: FlowPrior) -> dict[str, float]:
        was_training = prior.training
        prior.eval()
        gen = torch.Generator(prior.device).manual_seed(1234)
        losses = [prior.loss(self.params[i:i + 512], self.mel[i:i + 512].float(), gen).item()
                  * min(512, self.params.shape[0] - i)
                  for i in range(0, self.params.shape[0], 512)]
        out = {"loss/val": sum(losses) / self.params.shape[0]}
        if self.items:
            matcher = OneShotMatcher(prior, self.synth, k=1, steps=self.sample_steps,
                                     device=prior.device, seed=0)
            result = matcher.match(self.target_audio)
            mae = (result.params - self.params[:self.items]).abs().mean(1)
            out["val/spectral_distance"] = float(result.distance.median())
            out["val/param_mae"] = float(mae.median())
        prior.train(was_training)
        return out


def train_prior(settings: PriorSettings) -> Path:
    """Train (or resume) a prior; returns the run directory."""
    from synthmatch.data import open_dataset

    check_settings(settings)
    device = resolve_device(settings.device)
    ckpt = load_checkpoint(settings.resume) if settings.resume else None
    if ckpt is not None:
        run_dir = Path(settings.resume).parent.parent
        saved = PriorSettings(**ckpt["settings"])
        # Keep what the run was made with; only the budget and device may change on resume.
        settings = PriorSettings(**{**asdict(saved), "steps": settings.steps,
                                    "device": settings.device, "resume": settings.resume})
    if not Path(settings.data).is_dir():
        raise FileNotFoundError(f"dataset directory {settings.data} does not exist (make a "
                                "dataset with experiments/make_dataset.py; see its --help)")
    ds = open_dataset(settings.data)
    if ds.num_items("val") == 0:
        raise ValueError(f"dataset {settings.data} has no validation items (its shards all went "
                         "to train); make it with more shards (a larger --n or smaller "
                         "--shard-size in make_dataset.py)")
    # Read every shard before the run directory exists: a damaged one leaves nothing behind.
    train = ds.load("train", ("params", "mel"))
    val = ds.load("val", ("params", "mel"))
    if ckpt is None:
        name = settings.run_name or f"{Path(settings.data).name}__{settings.seed}__" \
                                    f"{int(time.time())}"
        run_dir = Path(settings.log_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = run_dir / "checkpoints" / "latest.pt"

    torch.manual_seed(settings.seed)
    prior = (FlowPrior.from_checkpoint(ckpt) if ckpt is not None
             else FlowPrior(prior_config(ds, settings))).to(device)
    if ckpt is None:
        write_json_atomic(run_dir / "config.json", {"settings": asdict(settings),
                                                    "prior": asdict(prior.config)})
    optimizer = torch.optim.AdamW(prior.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, settings.warmup_steps, settings.steps))
    batch_gen = torch.Generator().manual_seed(settings.seed)
    noise_gen = torch.Generator(device).manual_seed(settings.seed + 1)
    step = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        batch_gen.set_state(ckpt["batch_rng"])
        noise_gen.set_state(ckpt["noise_rng"])
        step = int(ckpt["step"])

    params = torch.from_numpy(train["params"]).to(device)
    mels = torch.from_numpy(train["mel"]).to(device)  # float16: half the memory
    validate = Validator(val, ds.make_synth(device),
                         settings.eval_items, device, settings.sample_steps)
    writer = SummaryWriter(str(run_dir))
    if ckpt is None:
        table = "|setting|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|"
                                                      for k, v in asdict(settings).items())
        writer.add_text("hyperparameters", table, 0)

    def checkpoint() -> dict[str, Any]:
        return prior.checkpoint(optimizer=optimizer.state_dict(),
                                schedule=schedule.state_dict(), step=step,
                                batch_rng=batch_gen.get_state(), noise_rng=noise_gen.get_state(),
                                settings=asdict(settings))

    def log(values: dict[str, float]) -> None:
        for key, value in values.items():
            writer.add_scalar(key, value, step)

    prior.train()
    window: list[float] = []
    values: dict[str, float] = {}
    clock = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=step, desc="prior", unit="step",
               disable=None, dynamic_ncols=True)
    try:
        while step < settings.steps:
            idx = torch.randint(params.shape[0], (settings.batch_size,), generator=batch_gen)
            idx = idx.to(device)
            loss = prior.loss(params[idx], mels[idx].float(), noise_gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            window.append(loss.item())
            bar.update(1)
            if step % 50 == 0 or step == settings.steps:
                now = time.perf_counter()
                log({"loss/train": float(np.mean(window)),
                     "train/learning_rate": schedule.get_last_lr()[0],
                     "time/steps_per_second": len(window) / max(now - clock, 1e-9)})
                bar.set_postfix(loss=f"{np.mean(window):.4f}")
                window, clock = [], now
            if step % settings.eval_every == 0 or step == settings.steps:
                values = validate(prior)
                log(values)
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}"
                                                        for k, v in values.items()))
            if step % settings.checkpoint_every == 0:
                save_checkpoint(checkpoint(), latest)
    except KeyboardInterrupt:
        bar.close()
        save_checkpoint(checkpoint(), latest)
        writer.close()
        print(f"\nInterrupted at step {step}; checkpoint saved, resume with --resume {latest}",
              file=sys.stderr)
        raise SystemExit(130) from None
    bar.close()
    save_checkpoint(checkpoint(), latest)
    save_checkpoint(prior.checkpoint(step=step), run_dir / "prior.pt")
    final = values or validate(prior)  # the loop validated the last step, if it ran
    write_json_atomic(run_dir / "val.json", {"step": step, **final})
    writer.close()
    print(f"TensorBoard logs: {run_dir}   (tensorboard --logdir {settings.log_dir})")
    print(f"Prior: {run_dir / 'prior.pt'}   Checkpoint: {latest}")
    print("Validation: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()))
    return run_dir

