"""A critic of the prior's proposals: the value function of the one-step bandit view, learned
from rewards alone (``experiments/train_critic.py`` is the command line over
:func:`train_critic`).

In the bandit view a target sound is the state, a preset is the action and the reward is how
close the preset's render sounds (the env's perceptual distance). The prior is a policy for it
that already knows roughly where to look; what it cannot do is tell its own samples apart
without rendering them, so the best of ``K`` costs ``K`` renders. The critic
``Q(target, preset)`` predicts the log distance of a preset to a target from the target's
log-mel and the preset's parameters, without a render. At match time the prior proposes many
presets (sampling renders nothing), the critic ranks them, and the renders go to the best
ranked first: a generative actor whose proposals a learned value selects, as in batch-
constrained Q-learning (BCQ, Fujimoto et al., 2019).

The critic is fitted by regression on rendered rewards of the prior's own proposals (the
distribution it will rank at match time). Only relative values matter for a ranking, so the
loss weighs each target's centred log distances (which of its proposals is closer) over the
absolute level. No true parameters are used: a target can be any sound.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from synthmatch.agents.matching import check_compatible, prior_synth
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.prior_training import log_epoch, save_checkpoint
from synthmatch.agents.search import score_candidates
from synthmatch.cli import require_counts
from synthmatch.devices import resolve_device
from synthmatch.envs.core import SynthMatchCore
from synthmatch.fileio import load_weights, sha256_file, write_json_atomic
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import ParamTable

# Targets whose proposals are sampled, rendered and scored together.
COLLECT_CHUNK = 64
# Weight of the absolute log distance beside the per-target centred one in the loss: enough
# to keep the outputs on the distance's scale, small enough that ranking dominates.
LEVEL_WEIGHT = 0.1
# Distances are floored here before the log (a perfect match would be -inf).
MIN_DISTANCE = 1e-3


@dataclass
class CriticSettings:
    """Settings of a critic training run (tyro turns the field docstrings into ``--help``)."""

    prior: str = "runs/prior/subtractive/prior.pt"
    """the prior whose proposals the critic learns to rank (prior.pt of train_prior.py)"""
    targets: int = 8192
    """training targets: random presets of the prior's synth (a generator seeded by --seed,
    no suite's or held-out seed); with --pool, at most this many of the pool's sounds"""
    pool: str | None = None
    """learn from these sounds instead (a pool of experiments/make_sound_pool.py: sounds
    without parameters, any instrument); --val-targets of them, drawn by --seed, are held
    out"""
    proposals: int = 32
    """prior samples rendered and scored per training target"""
    val_targets: int = 256
    """held-out targets of the same draw, for the per-epoch figures"""
    epochs: int = 30
    """passes over the training targets"""
    batch_size: int = 64
    """targets per gradient step (each with all its proposals)"""
    learning_rate: float = 1e-3
    """peak AdamW learning rate (one-cycle schedule)"""
    hidden: int = 512
    """width of the critic's layers"""
    seed: int = 0
    """seed of the targets, the proposals, the weights and the batches"""
    device: str = "cpu"
    """cpu or cuda"""
    log_dir: str = "runs/critic"
    """parent directory of the runs"""
    run_name: str | None = None
    """run directory name (default: the prior's run name, seed and time)"""


def check_settings(s: CriticSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written."""
    require_counts(s, "targets", "proposals", "val_targets", "epochs", "batch_size", "hidden")
    if s.proposals < 2:
        raise ValueError(f"--proposals must be >= 2 (a ranking needs two), got {s.proposals}")
    if not s.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {s.learning_rate}")
    if not Path(s.prior).is_file():
        raise FileNotFoundError(f"--prior: no prior checkpoint at {s.prior}")
    if s.pool is not None and not (Path(s.pool) / "manifest.json").is_file():
        raise FileNotFoundError(f"--pool: no pool at {s.pool} (make one with "
                                "experiments/make_sound_pool.py)")
    resolve_device(s.device)


class PresetCritic(nn.Module):
    """``Q(target, preset)``: the predicted log perceptual distance of presets to a target.

    A CNN embeds the target's scaled log-mel (the env's ``target_mel`` observation) once; an
    MLP joins that embedding with each preset's normalised parameters.

    Args:
        num_params: Parameters per preset.
        hidden: Width of the embedding and of the joint MLP.
        channels: Output channels of the three convolutions.
    """

    def __init__(self, num_params: int, hidden: int = 512,
                 channels: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = channels
        self.config = {"num_params": num_params, "hidden": hidden, "channels": list(channels)}
        self.cnn = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(),
            nn.Linear(c3 * 16, hidden), nn.ReLU())
        self.params_mlp = nn.Sequential(nn.Linear(num_params, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def embed(self, target_mel: Tensor) -> Tensor:
        """``(B, n_mels, frames)`` scaled log-mels -> ``(B, hidden)``."""
        return self.cnn(target_mel[:, None])

    def forward(self, embedding: Tensor, presets: Tensor) -> Tensor:
        """``(B, hidden)`` embeddings and ``(B, K, P)`` presets -> ``(B, K)`` predicted log
        distances (lower is closer)."""
        b, k, _ = presets.shape
        e = embedding[:, None].expand(b, k, embedding.shape[1])
        return self.head(torch.cat([e, self.params_mlp(presets)], dim=-1)).squeeze(-1)


def critic_loss(predicted: Tensor, log_distance: Tensor) -> Tensor:
    """Mean squared error of each target's centred log distances, plus :data:`LEVEL_WEIGHT`
    times that of the raw ones. ``(B, K)`` both."""
    centred = predicted - predicted.mean(1, keepdim=True)
    wanted = log_distance - log_distance.mean(1, keepdim=True)
    return (nn.functional.mse_loss(centred, wanted)
            + LEVEL_WEIGHT * nn.functional.mse_loss(predicted, log_distance))


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` ``(B, K)``
    (no ties expected: continuous values) -> ``(B,)``."""
    ra = a.argsort(1).argsort(1).float()
    rb = b.argsort(1).argsort(1).float()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))


def target_mel(distance: PerceptualDistance, audio: Tensor) -> Tensor:
    """The critic's view of target sounds ``(B, T)``: the env's scaled ``target_mel``."""
    return SynthMatchCore.scale_mel(distance.features(audio).log_mel)


def save_critic(critic: PresetCritic, path: Path, prior_path: str, **extra: Any) -> None:
    """Save ``critic`` with the path and sha256 of the prior whose proposals it ranks."""
    save_checkpoint({"kind": "preset_critic", "config": critic.config,
                     "state_dict": critic.state_dict(), "prior": str(prior_path),
                     "prior_sha256": sha256_file(prior_path), **extra}, path)


def load_critic(path: str | Path, device: torch.device | str = "cpu"
                ) -> tuple[PresetCritic, dict[str, Any]]:
    """A critic saved by :func:`train_critic` and its checkpoint's other entries (``prior``
    and ``prior_sha256``: the prior it ranks; ``settings``; ``validation``)."""
    ckpt = load_weights(path, "critic checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "preset_critic":
        raise ValueError(f"{path} is not a critic checkpoint (critic.pt of train_critic.py)")
    config = ckpt["config"]
    critic = PresetCritic(config["num_params"], config["hidden"], tuple(config["channels"]))
    critic.load_state_dict(ckpt["state_dict"])
    return critic.to(device).eval(), {k: v for k, v in ckpt.items()
                                      if k not in ("state_dict", "config", "kind")}


@torch.no_grad()
def rank_proposals(critic: PresetCritic, mel: Tensor, proposals: Tensor,
                   table: ParamTable) -> Tensor:
    """``proposals`` ``(B, K, P)``, each target's reordered from the closest predicted to the
    farthest; ``mel`` ``(B, n_mels, frames)`` is the targets' scaled log-mel (:func:`target_mel`,
    or the env's ``target_mel``). The critic reads the proposals with their discrete columns
    snapped (``table.quantize``), as it was trained and as the synth plays them. The prior's
    samples are already snapped (:meth:`FlowPrior.to_unit`); this guards proposals from
    anywhere else."""
    q = critic(critic.embed(mel), table.quantize(proposals))
    order = q.argsort(1)
    return proposals.gather(1, order[..., None].expand_as(proposals))


@torch.no_grad()
def collect(prior: FlowPrior, synth, distance: PerceptualDistance, count: int, k: int,
            generator: torch.Generator, desc: str,
            sounds: Tensor | None = None) -> dict[str, Tensor]:
    """Rewards of the prior's proposals: ``count`` targets, ``k`` prior samples each,
    rendered and scored. The targets are random presets of ``synth``, or the first ``count``
    of ``sounds`` ``(N, T)`` if given. Returns ``target_mel`` ``(N, n_mels, frames)``
    (float16), ``proposals`` ``(N, k, P)`` and ``distance`` ``(N, k)``."""
    columns = check_compatible(prior, synth)
    mels, proposals, distances = [], [], []
    with tqdm(total=count, desc=desc, unit="target") as bar:
        for start in range(0, count, COLLECT_CHUNK):
            n = min(COLLECT_CHUNK, count - start)
            if sounds is None:
                audio = synth.render(synth.params.sample(n, generator, device=synth.device))
            else:
                audio = sounds[start:start + n].to(synth.device)
            samples = prior.sample_audio(audio.to(prior.device), k,
                                         generator=generator)[..., columns].to(synth.device)
            samples = synth.params.quantize(samples.reshape(n * k, -1)).reshape(n, k, -1)
            distances.append(score_candidates(synth, distance, audio, samples).cpu())
            proposals.append(samples.cpu())
            mels.append(target_mel(distance, audio).half().cpu())
            bar.update(n)
    return {"target_mel": torch.cat(mels), "proposals": torch.cat(proposals),
            "distance": torch.cat(distances)}


def train_critic(settings: CriticSettings, pool_audio: Tensor | None = None) -> Path:
    """Collect the prior's rewards, fit the critic, and save it; returns the run directory.

    ``pool_audio`` ``(N, T)``: the sounds of ``settings.pool`` (loaded by the caller), the
    targets instead of random presets.

    The run directory holds ``config.json``, TensorBoard events, ``history.json`` (per epoch:
    the loss, and on the held-out targets the mean within-target rank correlation and the
    median distance of the critic's first choice of the ``proposals`` against a random one and
    the best) and ``critic.pt``.
    """
    check_settings(settings)
    if (pool_audio is None) != (settings.pool is None):
        raise ValueError("give pool_audio exactly when settings.pool is set")
    device = resolve_device(settings.device)
    name = settings.run_name or f"{Path(settings.prior).parent.name}_s{settings.seed}_" \
                                f"{int(time.time())}"
    run_dir = Path(settings.log_dir) / name
    if (run_dir / "critic.pt").exists():
        raise ValueError(f"{run_dir} already holds a critic; pick another --run-name")
    torch.manual_seed(settings.seed)
    prior = FlowPrior.load(settings.prior, device)
    synth = prior_synth(prior, device)
    distance = PerceptualDistance(synth.sample_rate).to(device)
    generator = torch.Generator(device).manual_seed(settings.seed)
    total, sounds = settings.targets + settings.val_targets, pool_audio
    if sounds is not None:
        if sounds.shape[0] <= settings.val_targets:
            raise ValueError(f"--pool holds {sounds.shape[0]} sounds: more than --val-targets "
                             f"({settings.val_targets}) are needed")
        total = min(total, sounds.shape[0])
        # A pool is stored instrument by instrument: shuffle, so that both splits mix them.
        order = torch.randperm(sounds.shape[0], generator=torch.Generator().manual_seed(
            settings.seed))
        sounds = sounds[order[:total]]
    data = collect(prior, synth, distance, total, settings.proposals, generator,
                   "rendering the prior's proposals", sounds)
    log_d = data["distance"].clamp_min(MIN_DISTANCE).log()
    train_idx = torch.arange(settings.val_targets, total)
    val_idx = torch.arange(settings.val_targets)

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", asdict(settings))
    writer = SummaryWriter(str(run_dir))
    critic = PresetCritic(synth.num_params, settings.hidden).to(device)
    opt = torch.optim.AdamW(critic.parameters(), settings.learning_rate, weight_decay=1e-4)
    per_epoch = max(1, len(train_idx) // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.learning_rate,
                                                total_steps=settings.epochs * per_epoch)
    shuffle = torch.Generator().manual_seed(settings.seed + 1)

    def batch(idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (data["target_mel"][idx].float().to(device), data["proposals"][idx].to(device),
                log_d[idx].to(device))

    history: list[dict[str, float]] = []
    for epoch in tqdm(range(settings.epochs), desc="training the critic", unit="epoch"):
        critic.train()
        losses = []
        order = train_idx[torch.randperm(len(train_idx), generator=shuffle)]
        for i in range(per_epoch):
            mel, props, y = batch(order[i * settings.batch_size:(i + 1) * settings.batch_size])
            loss = critic_loss(critic(critic.embed(mel), props), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               **validate(critic, *batch(val_idx), data["distance"][val_idx])}
        log_epoch(writer, history, row, "critic", run_dir / "history.json")
    writer.close()
    save_critic(critic.cpu(), run_dir / "critic.pt", settings.prior,
                settings=asdict(settings), validation=history[-1])
    return run_dir


@torch.no_grad()
def validate(critic: PresetCritic, mel: Tensor, proposals: Tensor, log_d: Tensor,
             distance: Tensor) -> dict[str, float]:
    """Held-out figures: mean within-target rank correlation of predicted and true log
    distances, and the median true distance of the critic's first choice, of the first
    (random) proposal, of the best, and of the proposal an untrained rule picks (the one
    nearest the proposals' coordinate-wise median, :func:`central_order`: what the critic must
    beat to have learned more than "the prior's mode sounds closest")."""
    critic.eval()
    q = critic(critic.embed(mel), proposals).cpu()

    def median_of(column: Tensor) -> float:
        return float(distance.gather(1, column[:, None])[:, 0].median())

    return {"rank_correlation": float(rank_correlation(q, log_d.cpu()).mean()),
            "first_choice": median_of(q.argmin(1)),
            "random_choice": float(distance[:, 0].median()),
            "central_choice": median_of(central_order(proposals.cpu())[:, 0]),
            "best": float(distance.min(1).values.median())}


def central_order(proposals: Tensor) -> Tensor:
    """``(B, K)`` indices of each target's proposals ``(B, K, P)`` from the nearest to their
    coordinate-wise median (L1) to the farthest: an untrained ranking, the critic's control."""
    centre = proposals.median(1, keepdim=True).values
    return (proposals - centre).abs().sum(-1).argsort(1)
