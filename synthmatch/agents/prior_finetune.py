"""Fine-tuning a prior from a reward alone, on sounds that have no parameters
(``experiments/finetune_prior.py`` is the command line over :func:`finetune_prior`).

The prior is the policy of a one-step bandit: given a sound, its action is a preset, and the
reward is how close that preset's render sounds (the env's perceptual distance). No true
parameters are needed, so the sounds can come from any instrument. Each round:

1. samples ``k`` presets per pool sound from the current prior, renders and scores them;
2. keeps each sound's closest preset found in any round so far (an archive that can only get
   closer), or its ``archive_size`` closest. Training on one preset per sound draws the
   prior's samples together; four per sound kept them apart, but matched worse on validation
   (docs/results.md);
   Optionally (``refine_steps``) a search then improves each archived preset by reward alone:
   a (1+1) evolution strategy from it, whose step size follows the 1/5th success rule and
   carries over between rounds (``refine="es"``), or Adam on the preset through the
   differentiable synth and distance (``refine="gradient"``, the search of the leaderboard's
   ``prior+gradient``, which finds far closer presets than the prior's samples). Sampling
   alone stalls on sounds that are far from anything the prior proposes; the search is the
   policy-improvement operator of expert iteration;
3. trains the flow-matching loss on (sound, archived preset) pairs, mixed with the synthetic
   dataset's sounds so the in-domain skill is rehearsed: regressed on their true presets
   (``rehearsal="data"``) or on the starting prior's own velocity field at the same points
   (``rehearsal="teacher"``, a distillation that holds the whole in-domain flow in place).

This is reward-filtered policy improvement (expert iteration; reward-weighted regression in
its best-of-K limit): the policy is moved towards the actions its own reward ranked best, and
the next round samples from the improved policy.

``objective="best-of-k"`` trains the figure the leaderboard reads instead: each step draws
``k`` samples per pool sound through the sampler with gradients on, renders them with the
differentiable synth, and descends the distance of each sound's closest sample (a set
objective: winner-takes-all over the ``k`` samples, as in multiple-choice learning; the
reward's gradient reaches the flow through the synth and the ODE solver, as in direct reward
fine-tuning of diffusion models). Only the winning sample of each sound is moved, so the
others are free to stay apart, where the archive pulls every sample towards one preset.

``objective="policy-gradient"`` treats the sampler itself as a stochastic policy and needs
no gradient of the synth or the distance. The flow's ODE is replaced by the SDE with the same
marginals, ``dx = [v - (s^2 / 2) (x - t v)] dt + s sqrt(1 - t) dW`` (for the conditional
optimal-transport path the score is ``-(x - t v) / (1 - t)``; the noise scale ``s sqrt(1 - t)``
cancels its pole at ``t = 1``), stepped by Euler-Maruyama, so every step is a Gaussian whose
log-density is exact. Each step draws ``k`` trajectories per pool sound, scores their end
presets, and ascends advantage times log-density: REINFORCE, one update per batch, so it is
on-policy. The leaderboard still samples with the ODE. Two advantages:

- ``advantage="mean"``: each sound's rewards standardised over its own ``k`` samples (GRPO,
  Flow-GRPO): the gradient of the expected reward of one sample;
- ``advantage="best-of-k"``: each sample's leave-one-out share of its sound's best, the best
  sample's margin over the runner-up and 0 for the others (divided by the sound's spread of
  rewards). The best of the others does not depend on a sample, so it is a valid baseline,
  and this is an unbiased gradient of the expected best of ``k``, the figure the leaderboard
  reads at ``k`` renders, without the push away from the other samples that narrows the mean
  objective's draws.

With ``refine_top`` (and ``refine="gradient"``), each sound's ``refine_top`` closest samples
are first searched from by Adam for ``refine_steps`` renders, and each is scored by the
closest preset its run rendered (the rest keep their own distance). The advantage then
rewards a sample for where a gradient search from it ends, which is what the leaderboard's
``prior+gradient-patience`` reads, rather than for where it starts: a search from either
prior's samples ends near the same presets (docs/results.md, tenth session).

Before the first round and after every round the prior is measured as the leaderboard's
``prior`` method would be, the best of ``val_k`` samples, on a validation pool and on held-out
synthetic targets.

A run lives in ``<log_dir>/<run_name>/``: ``config.json``, TensorBoard events, ``history.json``
(the validation figures per round), ``rounds/prior_<r>.pt`` after each round and ``prior.pt``
(the last round's; each loads like any prior, and its ``finetuned`` entry records how it was
made and after which round).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from synthmatch.agents.evaluation import HELD_OUT_SEED
from synthmatch.agents.matching import OneShotMatcher, prior_synth
from synthmatch.agents.prior import SDE_NOISE, FlowPrior, sde_mean, sde_rollout, sde_std
from synthmatch.agents.prior_training import save_checkpoint
from synthmatch.cli import require_counts
from synthmatch.data.real_sounds import MIN_PEAK_DB, as_stored, draw_sounds
from synthmatch.devices import resolve_device
from synthmatch.fileio import write_json_atomic
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import Synth

# Sounds sampled and rendered together (k renders each).
SAMPLE_CHUNK = 32
# The (1+1)-ES step size: times SIGMA_GROWTH after a kept proposal, times SIGMA_SHRINK after a
# rejected one, so it holds still when a fifth are kept (0.2 * 0.2 = 0.8 * 0.05 in logs).
SIGMA_GROWTH, SIGMA_SHRINK = float(np.exp(0.2)), float(np.exp(-0.05))
SIGMA_RANGE = (0.002, 0.3)


@dataclass
class FinetuneSettings:
    """Settings of a fine-tuning run (tyro turns the field docstrings into ``--help``)."""

    prior: str = "runs/prior/subtractive/prior.pt"
    """the prior to start from (prior.pt of train_prior.py)"""
    pool: str = "data/pool/train"
    """sounds to learn from: a suite directory (experiments/make_sound_pool.py)"""
    val_pool: str | None = "data/pool/val"
    """sounds to validate on after each round: a suite directory disjoint from --pool"""
    data: str | None = "data/subtractive"
    """synthetic dataset of the prior's synth (make_dataset.py) rehearsed in every batch; none:
    the pool alone"""
    rounds: int = 6
    """sample-score-train rounds"""
    k: int = 32
    """presets sampled per pool sound per round (k renders each)"""
    steps_per_round: int = 250
    """gradient steps per round"""
    batch_size: int = 256
    """pairs per gradient step"""
    synthetic_fraction: float = 0.5
    """share of each batch drawn from --data"""
    rehearsal: Literal["data", "teacher"] = "data"
    """what the synthetic share is regressed on: data (its true presets) or teacher (the
    starting prior's velocity at the same points, a distillation towards it)"""
    refine_steps: int = 0
    """(1+1)-ES proposals per pool sound per round from its archived preset (renders each);
    0: the archive improves by sampling alone"""
    refine_sigma: float = 0.05
    """starting ES step in every normalised parameter (then adapted per sound)"""
    refine: Literal["es", "gradient"] = "es"
    """the search of --refine-steps: es (a (1+1) evolution strategy) or gradient (Adam on the
    preset through the synth and the distance; differentiable synths)"""
    refine_lr: float = 0.01
    """gradient refinement: Adam's step size (the leaderboard's prior+gradient uses 0.01)"""
    refine_top: int = 0
    """policy-gradient with --refine gradient: Adam for --refine-steps renders from each
    sound's --refine-top closest samples, each scored by the closest preset its run rendered
    before the advantage is taken (a search's view of its starts); 0: the samples as drawn"""
    objective: Literal["archive", "best-of-k", "policy-gradient"] = "archive"
    """archive: regress the flow on each pool sound's closest preset so far (expert
    iteration); best-of-k: descend the distance of the best of --k samples per sound,
    backpropagated through the synth and the sampler (differentiable synths; the pool alone);
    policy-gradient: REINFORCE on the sampler run as an SDE, --k trajectories per sound with
    a per-sound baseline (any synth; the pool alone)"""
    sounds_per_step: int = 8
    """best-of-k and policy-gradient: pool sounds per gradient step (--k samples each)"""
    sde_noise: float = SDE_NOISE
    """policy-gradient: the SDE's noise scale s (its diffusion is s * sqrt(1 - t))"""
    sde_steps: int = 16
    """policy-gradient: Euler-Maruyama steps of the SDE"""
    advantage: Literal["mean", "best-of-k"] = "mean"
    """policy-gradient: mean (rewards standardised per sound, the expected reward) or
    best-of-k (each sample's leave-one-out share of its sound's best, the expected best)"""
    archive_size: int = 1
    """closest presets kept per pool sound over all rounds, each trained on equally often
    (at most --k); 1: the best only"""
    learning_rate: float = 1e-4
    """AdamW learning rate (constant)"""
    val_k: int = 16
    """samples per sound at validation (the leaderboard's prior at that many renders); one
    sample is always measured too"""
    in_domain_targets: int = 64
    """held-out synthetic targets (seeds 1,000,000...) checked after each round"""
    seed: int = 0
    """seed of sampling, batches and noise"""
    device: str = "cpu"
    """cpu or cuda"""
    log_dir: str = "runs/finetune"
    """parent directory of the runs"""
    run_name: str | None = None
    """run directory name (default: pool name, seed and time)"""


def check_settings(s: FinetuneSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written.

    Raises:
        ValueError: a non-positive count or a fraction outside ``[0, 1)``.
        FileNotFoundError: a prior, pool or dataset that is not there.
    """
    if s.refine_top < 0:
        raise ValueError(f"--refine-top must be >= 0, got {s.refine_top}")
    require_counts(s, "rounds", "k", "steps_per_round", "batch_size", "val_k",
                   "in_domain_targets", "archive_size", "sounds_per_step", "sde_steps")
    if s.refine_top and not (s.objective == "policy-gradient" and s.refine == "gradient"
                             and s.refine_steps > 0 and s.refine_top <= s.k):
        raise ValueError("--refine-top searches from a policy gradient's samples: it needs "
                         "--objective policy-gradient --refine gradient, --refine-steps > 0 "
                         f"and at most --k ({s.k}) samples, got {s.refine_top}")
    if s.objective != "archive" and (s.synthetic_fraction > 0 or s.archive_size > 1
                                     or (s.refine_steps and not s.refine_top)):
        raise ValueError(f"--objective {s.objective} learns from the pool alone and keeps no "
                         "archive: pass --data None --synthetic-fraction 0, and no "
                         "--archive-size or --refine-steps (policy-gradient takes "
                         "--refine-steps with --refine-top)")
    if s.objective == "policy-gradient" and s.k < 2:
        raise ValueError("--objective policy-gradient compares each sound's samples with each "
                         f"other: --k must be >= 2, got {s.k}")
    if not s.sde_noise > 0:
        raise ValueError(f"--sde-noise must be positive, got {s.sde_noise}")
    if s.archive_size > s.k:
        raise ValueError(f"--archive-size ({s.archive_size}) cannot exceed --k ({s.k}): the "
                         "first round must fill the archive")
    if s.refine_steps < 0:
        raise ValueError(f"--refine-steps must be >= 0, got {s.refine_steps}")
    if not SIGMA_RANGE[0] <= s.refine_sigma <= SIGMA_RANGE[1]:
        raise ValueError(f"--refine-sigma must be in [{SIGMA_RANGE[0]}, {SIGMA_RANGE[1]}], "
                         f"got {s.refine_sigma}")
    if not s.refine_lr > 0:
        raise ValueError(f"--refine-lr must be positive, got {s.refine_lr}")
    if not 0.0 <= s.synthetic_fraction < 1.0:
        raise ValueError(f"--synthetic-fraction must be in [0, 1), got {s.synthetic_fraction}")
    if s.synthetic_fraction > 0 and s.data is None:
        raise ValueError("--synthetic-fraction above 0 needs --data")
    if not s.learning_rate > 0:
        raise ValueError(f"--learning-rate must be positive, got {s.learning_rate}")
    if not Path(s.prior).is_file():
        raise FileNotFoundError(f"--prior: no prior checkpoint at {s.prior}")
    if s.data is not None and not Path(s.data).is_dir():
        raise FileNotFoundError(f"--data: no dataset directory at {s.data}")
    resolve_device(s.device)


def sample_spread(candidates: Tensor) -> Tensor:
    """``(B,)`` how far apart each sound's ``(B, k, P)`` presets lie: the mean over parameters
    of their standard deviation over the ``k`` samples (normalised parameters); 0 for one
    sample."""
    if candidates.shape[1] == 1:
        return candidates.new_zeros(candidates.shape[0])
    return candidates.std(dim=1).mean(dim=1)


class BestOfK:
    """The distance of the best of ``k`` prior samples per sound (fixed noise, scaled by
    ``temperature``, drawn by ``method``), and the spread of those samples."""

    def __init__(self, synth, audio: Tensor, k: int, seed: int, temperature: float = 1.0,
                 method: str = "midpoint"):
        self.synth, self.audio, self.k, self.seed = synth, audio, k, seed
        self.temperature, self.method = temperature, method

    def __call__(self, prior: FlowPrior) -> tuple[Tensor, Tensor]:
        """``(N,)`` distances and ``(N,)`` :func:`sample_spread`, one each per sound."""
        matcher = OneShotMatcher(prior, self.synth, k=self.k, device=prior.device,
                                 seed=self.seed, temperature=self.temperature,
                                 method=self.method)
        results = [matcher.match(self.audio[i:i + SAMPLE_CHUNK])
                   for i in range(0, self.audio.shape[0], SAMPLE_CHUNK)]
        return (torch.cat([r.distance for r in results]),
                torch.cat([sample_spread(r.candidates) for r in results]))


def check_pool_audio(prior: FlowPrior, pool_audio: Tensor, val_audio: Tensor | None) -> None:
    """Refuse pool or validation sounds that are not ``(N, T)`` at the prior's rate and
    length."""
    length = prior.config.num_samples
    for name, audio in (("pool", pool_audio), ("validation pool", val_audio)):
        if audio is not None and (audio.ndim != 2 or audio.shape[1] != length):
            raise ValueError(f"{name} sounds must have shape (N, {length}) at the prior's "
                             f"{prior.config.sample_rate} Hz, got {tuple(audio.shape)}")


def validation_targets(synth: Synth, count: int) -> Tensor:
    """``(count, T)`` held-out synthetic targets made as the in-domain suites' are (random
    presets seed by seed from 1,000,000, never a suite's seeds; quiet and clipped draws
    skipped; read back as from their 16-bit files), so that a drift measured on them reads
    like one measured on a suite."""
    with torch.no_grad():
        audio, _, _ = draw_sounds(synth, HELD_OUT_SEED, count, MIN_PEAK_DB,
                                  "validation targets", progress=False)
    return as_stored(torch.from_numpy(audio))


class Validation:
    """The figures a fine-tuned prior is judged by before it meets a benchmark: the median
    best-of-``k`` distance, for each ``k`` in ``ks``, on held-out synthetic targets of the
    prior's synth (:func:`validation_targets`) and on a validation pool, with one median per
    instrument of the pool. Keys: ``val/<set>_best_of_<k>``, and for ``k > 1`` the mean
    :func:`sample_spread` of those samples, ``val/<set>_spread_of_<k>``.

    Args:
        synth: The prior's synth (renders the in-domain targets and the samples).
        in_domain_targets: How many held-out synthetic targets.
        val_audio: ``(N, T)`` validation sounds, or ``None``.
        val_sources: The instrument of each validation sound, or ``None``.
        ks: Samples per sound (each ``k`` is the leaderboard's ``prior`` at ``k`` renders).
        temperature: Scale of the sampling noise (1: the prior as trained, as the
            leaderboard samples it).
        seed: Seed of the sampling noise (the same draw for every prior measured; the
            fine-tuning logs use 1).
        method: The sampler (:meth:`FlowPrior.sample`; ``midpoint``, the ODE the leaderboard
            samples by, or ``sde``).
    """

    def __init__(self, synth: Synth, in_domain_targets: int, val_audio: Tensor | None,
                 val_sources: list[str] | None, ks: tuple[int, ...], temperature: float = 1.0,
                 seed: int = 1, method: str = "midpoint"):
        if val_sources is not None and (val_audio is None or len(val_sources) != len(val_audio)):
            raise ValueError("val_sources needs one source per validation sound")
        device = synth.device
        audio = {"in_domain": validation_targets(synth, in_domain_targets).to(device)}
        if val_audio is not None:
            audio["val_pool"] = val_audio.to(device)
        self.checks = {(key, k): BestOfK(synth, a, k, seed, temperature, method)
                       for key, a in audio.items() for k in ks}
        self.sources = val_sources

    def __call__(self, prior: FlowPrior) -> dict[str, float]:
        values = {}
        for (key, k), check in self.checks.items():
            d, spread = check(prior)
            values[f"val/{key}_best_of_{k}"] = float(d.median())
            if k > 1:
                values[f"val/{key}_spread_of_{k}"] = float(spread.mean())
            if key == "val_pool" and self.sources is not None:
                for source in sorted(set(self.sources)):
                    mine = [i for i, v in enumerate(self.sources) if v == source]
                    values[f"val/val_pool_{source}_best_of_{k}"] = float(d[mine].median())
                    if k > 1:
                        values[f"val/val_pool_{source}_spread_of_{k}"] = float(
                            spread[mine].mean())
        return values


def interpolate_priors(base: FlowPrior, tuned: FlowPrior, alpha: float) -> FlowPrior:
    """The prior whose weights are ``(1 - alpha) * base + alpha * tuned`` (WiSE-FT: Wortsman
    et al., "Robust fine-tuning of zero-shot models", 2022). Fine-tuning moves a model away
    from what it knew; on image classifiers, a point on the straight line between the two
    often kept most of the new gain and most of the old skill (docs/results.md measures it on
    this prior).

    Raises:
        ValueError: the priors differ in anything but their weights, or ``alpha`` is
            outside ``[0, 1]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if asdict(base.config) != asdict(tuned.config):
        raise ValueError("the priors were trained on different data or have different sizes; "
                         "only a prior and its own fine-tuning can be interpolated")
    mixed = FlowPrior(base.config).to(base.device)
    tuned_state = tuned.state_dict()
    mixed.load_state_dict({name: torch.lerp(w, tuned_state[name].to(w.device), alpha)
                           if w.is_floating_point() else w
                           for name, w in base.state_dict().items()})
    mixed.finetuned = {**(tuned.finetuned or {}), "interpolated": {
        "alpha": float(alpha), "base_finetuned": base.finetuned}}
    return mixed.eval()


def update_archive(archive: Tensor, archive_d: Tensor, candidates: Tensor,
                   candidate_d: Tensor) -> tuple[Tensor, Tensor]:
    """The ``m`` closest presets per sound among the archive and new candidates.

    Args:
        archive: ``(B, m, P)`` kept presets, closest first (unfilled slots have distance inf).
        archive_d: ``(B, m)`` their distances.
        candidates: ``(B, k, P)`` new presets.
        candidate_d: ``(B, k)`` their distances.

    Returns:
        The new ``(B, m, P)`` archive and ``(B, m)`` distances, closest first. On a tie the
        archived preset stays.
    """
    params = torch.cat([archive, candidates], dim=1)
    d = torch.cat([archive_d, candidate_d], dim=1)
    order = d.argsort(dim=1, stable=True)[:, :archive.shape[1]]
    return params.gather(1, order[..., None].expand(-1, -1, params.shape[2])), d.gather(1, order)


@torch.no_grad()
def refine_archive(synth: Synth, distance: PerceptualDistance, audio: Tensor,
                   archive: Tensor, archive_d: Tensor, sigma: Tensor, steps: int,
                   generator: torch.Generator) -> None:
    """A (1+1) evolution strategy from each sound's archived preset, in place.

    Each of ``steps`` iterations renders one Gaussian proposal per sound (step ``sigma`` per
    sound in every normalised parameter, clipped to ``[0, 1]``) and keeps it if it sounds
    closer. Each sound's ``sigma`` grows after a kept proposal and shrinks after a rejected
    one (the 1/5th success rule), within :data:`SIGMA_RANGE`.

    Args:
        synth: Renders ``(B, P)`` presets.
        distance: The perceptual distance that scored the archive.
        audio: ``(N, T)`` sounds.
        archive: ``(N, P)`` best preset per sound so far (updated).
        archive_d: ``(N,)`` its distance (updated; only ever lower).
        sigma: ``(N,)`` step size per sound (updated).
        steps: Proposals per sound.
        generator: Draws the proposals (on the archive's device).
    """
    for i in range(0, audio.shape[0], SAMPLE_CHUNK):
        rows = slice(i, i + SAMPLE_CHUNK)
        target = distance.features(audio[rows])
        x, d, s = archive[rows], archive_d[rows], sigma[rows]
        for _ in range(steps):
            noise = torch.randn(x.shape, generator=generator, device=x.device)
            proposal = (x + s[:, None] * noise).clamp(0.0, 1.0)
            dp = distance.distance(distance.features(synth.render(proposal)), target)
            keep = dp < d
            x = torch.where(keep[:, None], proposal, x)
            d = torch.where(keep, dp, d)
            s = (s * torch.where(keep, SIGMA_GROWTH, SIGMA_SHRINK)).clamp(*SIGMA_RANGE)
        archive[rows], archive_d[rows], sigma[rows] = x, d, s


def best_of_k_loss(prior: FlowPrior, synth: Synth, distance: PerceptualDistance,
                   audio: Tensor, mel: Tensor, k: int, generator: torch.Generator
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """The set objective of ``objective="best-of-k"``: the mean over sounds of the distance of
    each sound's closest of ``k`` prior samples, differentiable in the prior's weights.

    The samples are drawn as :meth:`FlowPrior.sample` draws them (same solver and steps,
    discrete columns snapped, which passes no gradient to them), with gradients kept through
    the solver, the synth's render and the distance.

    Args:
        prior: The prior being trained.
        synth: Its differentiable synth (takes all of the prior's parameters).
        distance: The reward's perceptual distance.
        audio: ``(B, T)`` pool sounds.
        mel: ``(B, n_mels, frames)`` their log-mel (:meth:`FlowPrior.mel`).
        k: Samples per sound.
        generator: Draws the starting noise (on the prior's device).

    Returns:
        The loss, and detached ``(B, k)`` distances and ``(B, k, P)`` samples.
    """
    b = audio.shape[0]
    embedding = prior.embed(mel).repeat_interleave(k, dim=0)
    noise = torch.randn(embedding.shape[0], prior.config.num_params, generator=generator,
                        device=prior.device)
    u = prior.to_unit(prior.sample_flow(embedding, noise, enable_grad=True))
    d = score_samples(synth, distance, audio, u, k)
    return d.min(dim=1).values.mean(), d.detach(), u.detach().view(b, k, -1)


def score_samples(synth: Synth, distance: PerceptualDistance, audio: Tensor, u: Tensor,
                  k: int) -> Tensor:
    """``(B, k)`` distances of presets ``u`` ``(B * k, P)``, ``k`` per sound in order, to their
    sounds ``audio`` ``(B, T)`` (differentiable where the synth is)."""
    owner = torch.arange(audio.shape[0], device=audio.device).repeat_interleave(k)
    return distance.distance(distance.features(synth.render(u)),
                             distance.features(audio).index(owner)).view(-1, k)


def refine_archive_gradient(synth: Synth, distance: PerceptualDistance, audio: Tensor,
                            archive: Tensor, archive_d: Tensor, steps: int,
                            lr: float, owner: Tensor | None = None) -> None:
    """Adam from each sound's archived preset through the differentiable synth and distance,
    projected onto ``[0, 1]``, in place: ``steps`` renders per sound, each sound keeping the
    closest preset it rendered (so the archive only gets closer). The search is
    :class:`~synthmatch.agents.restarts.RestartingAdam` without restarts, as the leaderboard's
    gradient methods run it.

    Args:
        synth: Renders ``(B, P)`` presets, with gradients.
        distance: The perceptual distance that scored the archive.
        audio: ``(N, T)`` sounds.
        archive: ``(N, P)`` best preset per sound so far (updated).
        archive_d: ``(N,)`` its distance (updated; only ever lower).
        steps: Renders per sound.
        lr: Adam's step size.
        owner: ``(M,)`` the sound of each of ``M`` archive rows, for several rows per sound
            (their features are computed once); default: row ``i`` is sound ``i``.
    """
    from synthmatch.agents.restarts import RestartingAdam, render_with_grad

    if not synth.differentiable:
        raise ValueError(f"gradient refinement needs a differentiable synth, not {synth.name}")
    for i in range(0, archive.shape[0], SAMPLE_CHUNK):
        rows = slice(i, i + SAMPLE_CHUNK)
        with torch.no_grad():
            if owner is None:
                target = distance.features(audio[rows])
            else:
                sounds, which = owner[rows].unique(return_inverse=True)
                target = distance.features(audio[sounds]).index(which)
        x, d = archive[rows].clone(), archive_d[rows].clone()
        search = RestartingAdam(x[:, None], d[:, None], lr)
        never = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

        def render(u: Tensor, target: Tensor = target) -> Tensor:
            return distance.distance(distance.features(synth.render(u)), target)

        for step in range(steps):
            if step:
                search.advance(never)
            u = search.u
            dp, grad = render_with_grad(render, u)
            search.record(dp, grad)
            keep = dp < d
            x = torch.where(keep[:, None], u, x)
            d = torch.where(keep, dp, d)
        archive[rows], archive_d[rows] = x, d


def finetune_prior(settings: FinetuneSettings, pool_audio: Tensor,
                   val_audio: Tensor | None = None, progress: bool = True,
                   val_sources: list[str] | None = None) -> Path:
    """Fine-tune ``settings.prior`` on ``pool_audio`` ``(N, T)`` (the prior's rate and length)
    by reward alone; returns the run directory.

    Args:
        settings: The run's settings.
        pool_audio: Sounds to learn from.
        val_audio: Sounds to validate on (disjoint from the pool), or ``None``.
        progress: Show a progress bar.
        val_sources: The instrument of each validation sound; each also gets its own median
            (``val/val_pool_<source>_best_of_<k>``).
    """
    from synthmatch.data import open_dataset

    check_settings(settings)
    device = resolve_device(settings.device)
    prior = FlowPrior.load(settings.prior, device)
    synth = prior_synth(prior, device)
    if tuple(synth.params.names) != prior.param_names:
        raise ValueError("the prior's synth does not take all of its parameters")
    if settings.refine == "gradient" and settings.refine_steps and not synth.differentiable:
        raise ValueError(f"--refine gradient backpropagates through the synth, and the "
                         f"{synth.name} synth is not differentiable")
    if settings.objective == "best-of-k" and not synth.differentiable:
        raise ValueError(f"--objective best-of-k backpropagates through the synth, and the "
                         f"{synth.name} synth is not differentiable")
    teacher = None
    if settings.rehearsal == "teacher":
        teacher = FlowPrior.load(settings.prior, device).eval().requires_grad_(False)
    check_pool_audio(prior, pool_audio, val_audio)
    synthetic = None
    if settings.data is not None and settings.synthetic_fraction > 0:
        ds = open_dataset(settings.data)
        if ds.config.synth != prior.config.data.get("synth"):
            raise ValueError(f"--data renders {ds.config.synth}, the prior "
                             f"{prior.config.data.get('synth')}")
        train = ds.load("train", ("params", "mel"))
        synthetic = (torch.from_numpy(train["params"]).to(device),
                     torch.from_numpy(train["mel"]).to(device))

    name = settings.run_name or f"finetune__{settings.seed}__{int(time.time())}"
    run_dir = Path(settings.log_dir) / name
    if (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} already holds a run; pick another --run-name")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", {"settings": asdict(settings),
                                                "pool_sounds": int(pool_audio.shape[0])})
    writer = SummaryWriter(str(run_dir))

    torch.manual_seed(settings.seed)
    pool_audio = pool_audio.to(device)
    with torch.no_grad():
        pool_mel = torch.cat([prior.mel(pool_audio[i:i + 256])
                              for i in range(0, pool_audio.shape[0], 256)])
    # One render as well: the leaderboard's first budget, where reward fine-tuning drifted most.
    validation = Validation(synth, settings.in_domain_targets, val_audio, val_sources,
                            tuple(sorted({1, settings.val_k})))

    m = settings.archive_size
    archive = torch.zeros(pool_audio.shape[0], m, prior.config.num_params, device=device)
    archive_d = torch.full((pool_audio.shape[0], m), float("inf"), device=device)
    sigma = torch.full((pool_audio.shape[0],), settings.refine_sigma, device=device)
    es_gen = torch.Generator(device).manual_seed(settings.seed + 2)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=settings.learning_rate)
    batch_gen = torch.Generator().manual_seed(settings.seed)
    noise_gen = torch.Generator(device).manual_seed(settings.seed + 1)
    history: list[dict[str, Any]] = []

    def validate(round_: int, extra: dict[str, float]) -> None:
        prior.eval()
        values = {**validation(prior), **extra}
        for key, value in values.items():
            writer.add_scalar(key, value, round_)
        history.append({"round": round_, **values})
        write_json_atomic(run_dir / "history.json", history)
        tqdm.write(f"round {round_}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))

    validate(0, {})
    n_syn = round(settings.batch_size * settings.synthetic_fraction) if synthetic else 0
    n_pool = settings.batch_size - n_syn

    def archive_round(round_: int) -> dict[str, float]:
        """One round of ``objective="archive"``; returns its training figures."""
        # 1-2. Sample, render, score; keep each sound's closest preset so far.
        prior.eval()
        matcher = OneShotMatcher(prior, synth, k=settings.k, device=device,
                                 seed=settings.seed * 1_000_003 + round_)
        sampled, spread = [], []
        for i in range(0, pool_audio.shape[0], SAMPLE_CHUNK):
            result = matcher.match(pool_audio[i:i + SAMPLE_CHUNK])
            rows = slice(i, i + result.params.shape[0])
            archive[rows], archive_d[rows] = update_archive(
                archive[rows], archive_d[rows], result.candidates, result.candidate_distances)
            sampled.append(result.distance)
            spread.append(sample_spread(result.candidates))
        if settings.refine_steps and settings.refine == "gradient":
            refine_archive_gradient(synth, matcher.distance, pool_audio, archive[:, 0],
                                    archive_d[:, 0], settings.refine_steps, settings.refine_lr)
        elif settings.refine_steps:  # the closest preset of each sound stays the closest
            refine_archive(synth, matcher.distance, pool_audio, archive[:, 0], archive_d[:, 0],
                           sigma, settings.refine_steps, es_gen)
        # 3. Train on (sound, archived preset) pairs, with synthetic pairs rehearsed.
        prior.train()
        losses = []
        for _ in range(settings.steps_per_round):
            i = torch.randint(pool_audio.shape[0], (n_pool,), generator=batch_gen).to(device)
            slot = (torch.randint(m, (n_pool,), generator=batch_gen).to(device) if m > 1
                    else torch.zeros_like(i))
            params, mel = archive[i, slot], pool_mel[i]
            if n_syn:
                j = torch.randint(synthetic[0].shape[0], (n_syn,), generator=batch_gen)
                j = j.to(device)
                params = torch.cat([params, synthetic[0][j]])
                mel = torch.cat([mel, synthetic[1][j].float()])
            taught = torch.arange(params.shape[0], device=device) >= n_pool
            loss = prior.loss(params, mel, noise_gen, teacher=teacher, taught=taught)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        return {"pool/sampled_best_of_k": float(torch.cat(sampled).median()),
                "pool/archive": float(archive_d[:, 0].median()),
                "pool/sample_spread": float(torch.cat(spread).mean()),
                **({"pool/es_sigma": float(sigma.median())}
                   if settings.refine_steps and settings.refine == "es" else {}),
                "loss/train": float(np.mean(losses))}

    distance = PerceptualDistance(synth.sample_rate).to(device)
    bar = tqdm(total=settings.rounds, desc="fine-tune", unit="round",
               disable=None if progress else True)
    for round_ in range(1, settings.rounds + 1):
        if settings.objective == "best-of-k":
            extra = train_best_of_k(settings, prior, synth, distance, pool_audio, pool_mel,
                                    optimizer, batch_gen, noise_gen, progress)
        elif settings.objective == "policy-gradient":
            extra = train_policy_gradient(settings, prior, synth, distance, pool_audio,
                                          pool_mel, optimizer, batch_gen, noise_gen, progress)
        else:
            extra = archive_round(round_)
        validate(round_, extra)
        save_checkpoint(prior.checkpoint(finetuned={"from": str(settings.prior),
                                                    **asdict(settings), "round": round_}),
                        run_dir / "rounds" / f"prior_{round_}.pt")
        bar.update()
    bar.close()
    prior.eval()
    shutil.copyfile(run_dir / "rounds" / f"prior_{settings.rounds}.pt", run_dir / "prior.pt")
    writer.close()
    print(f"Fine-tuned prior: {run_dir / 'prior.pt'}   History: {run_dir / 'history.json'}")
    return run_dir


def train_on_pool(settings: FinetuneSettings, prior: FlowPrior, step_loss, pool_audio: Tensor,
                  pool_mel: Tensor, optimizer: torch.optim.Optimizer,
                  batch_gen: torch.Generator, desc: str, progress: bool = True
                  ) -> tuple[list[float], Tensor, list[float]]:
    """``steps_per_round`` updates on ``sounds_per_step`` random pool sounds each, of the loss
    ``step_loss(audio, mel)`` returns with the batch's ``(B, k)`` distances and ``(B, k, P)``
    samples. Returns each step's loss, every batch's distances ``(steps * B, k)`` and each
    step's mean :func:`sample_spread`."""
    prior.train()
    losses, distances, spreads = [], [], []
    bar = tqdm(range(settings.steps_per_round), desc=desc, leave=False,
               disable=None if progress else True)
    for _ in bar:
        i = torch.randint(pool_audio.shape[0], (settings.sounds_per_step,),
                          generator=batch_gen).to(pool_audio.device)
        loss, d, samples = step_loss(pool_audio[i], pool_mel[i])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        distances.append(d)
        spreads.append(float(sample_spread(samples).mean()))
        recent = torch.cat(distances[-20:]).min(dim=1).values
        bar.set_postfix(best=f"{float(recent.median()):.3f}")
    return losses, torch.cat(distances), spreads


def train_best_of_k(settings: FinetuneSettings, prior: FlowPrior, synth: Synth,
                    distance: PerceptualDistance, pool_audio: Tensor, pool_mel: Tensor,
                    optimizer: torch.optim.Optimizer, batch_gen: torch.Generator,
                    noise_gen: torch.Generator, progress: bool = True) -> dict[str, float]:
    """One round of ``objective="best-of-k"``: :func:`train_on_pool` with
    :func:`best_of_k_loss`. Returns the round's training figures: ``pool/sampled_best_of_k``
    is here the mean over the round's batches of their sounds' best-of-k distance (the loss),
    and ``pool/sample_spread`` the samples' spread."""
    losses, _, spreads = train_on_pool(
        settings, prior, lambda audio, mel: best_of_k_loss(prior, synth, distance, audio, mel,
                                                           settings.k, noise_gen),
        pool_audio, pool_mel, optimizer, batch_gen, "best-of-k steps", progress)
    return {"pool/sampled_best_of_k": float(np.mean(losses)),
            "pool/sample_spread": float(np.mean(spreads)), "loss/train": float(np.mean(losses))}


def sde_log_prob(prior: FlowPrior, embedding: Tensor, states: Tensor, noise: float) -> Tensor:
    """``(B,)`` log-density of each trajectory of :func:`sde_rollout` under the prior's SDE,
    up to a constant that does not depend on the weights; differentiable in the weights."""
    b, n1, p = states.shape
    steps, h = n1 - 1, 1.0 / (n1 - 1)
    t = (torch.arange(steps, device=states.device) * h).repeat(b)
    x, nxt = states[:, :-1].reshape(-1, p), states[:, 1:].reshape(-1, p)
    mean = sde_mean(prior, x, t, embedding.repeat_interleave(steps, dim=0), h, noise)
    z = (nxt - mean) / sde_std(t, h, noise)
    return -0.5 * z.square().sum(dim=1).view(b, steps).sum(dim=1)


def group_advantages(d: Tensor, kind: str = "mean") -> Tensor:
    """``(B, k)`` advantages of distances ``d`` ``(B, k)``, per sound over its own samples and
    divided by their standard deviation (0 where they are all equal).

    ``kind="mean"``: the rewards (``-d``) centred. ``kind="best-of-k"``: the best's reward
    minus the best of the others', for each sample (the runner-up's margin for the closest
    sample, 0 for the rest).
    """
    scale = d.std(dim=1, keepdim=True).clamp_min(1e-6)
    if kind == "mean":
        return (d.mean(dim=1, keepdim=True) - d) / scale
    if kind != "best-of-k":
        raise ValueError(f"unknown advantage {kind!r} (mean or best-of-k)")
    two = d.topk(2, dim=1, largest=False).values
    best_of_others = torch.where(d == two[:, :1], two[:, 1:], two[:, :1])
    return (best_of_others - two[:, :1]) / scale


def searched_scores(synth: Synth, distance: PerceptualDistance, audio: Tensor, u: Tensor,
                    d: Tensor, top: int, steps: int, lr: float) -> Tensor:
    """``(B, k)`` scores of presets ``u`` ``(B, k, P)`` with distances ``d`` ``(B, k)`` to
    their sounds ``audio`` ``(B, T)``, as a gradient search from them sees them: each sound's
    ``top`` closest presets scored by the closest render of ``steps`` renders of Adam from
    it (:func:`refine_archive_gradient`; never above its own distance), the others by
    their own distance."""
    b, k, p = u.shape
    rank = d.argsort(dim=1)[:, :top]
    # gather copies, so the search may update these in place
    start = u.gather(1, rank[..., None].expand(b, top, p)).reshape(-1, p)
    start_d = d.gather(1, rank).reshape(-1)
    owner = torch.arange(b, device=u.device).repeat_interleave(top)
    refine_archive_gradient(synth, distance, audio, start, start_d, steps, lr, owner)
    return d.scatter(1, rank, start_d.view(b, top))


def policy_gradient_loss(prior: FlowPrior, synth: Synth, distance: PerceptualDistance,
                         audio: Tensor, mel: Tensor, k: int, noise: float, steps: int,
                         generator: torch.Generator, advantage: str = "mean",
                         search: tuple[int, int, float] | None = None
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """The REINFORCE loss of ``objective="policy-gradient"`` on ``(B, T)`` sounds: ``k`` SDE
    trajectories per sound, their end presets rendered and scored without gradients, and
    ``-mean(advantage * log-density)``. ``search`` ``(top, steps, lr)``: score them with
    :func:`searched_scores` instead.

    Returns:
        The loss, and detached ``(B, k)`` scores and ``(B, k, P)`` presets.
    """
    b = audio.shape[0]
    embedding = prior.embed(mel).repeat_interleave(k, dim=0)
    states = sde_rollout(prior, embedding.detach(), steps, noise, generator)
    u = prior.to_unit(states[:, -1])
    with torch.no_grad():
        d = score_samples(synth, distance, audio, u, k)
    if search is not None:
        d = searched_scores(synth, distance, audio, u.view(b, k, -1), d, *search)
    weight = group_advantages(d, advantage).reshape(-1)
    loss = -(weight * sde_log_prob(prior, embedding, states, noise)).mean()
    return loss, d, u.view(b, k, -1)


def train_policy_gradient(settings: FinetuneSettings, prior: FlowPrior, synth: Synth,
                          distance: PerceptualDistance, pool_audio: Tensor, pool_mel: Tensor,
                          optimizer: torch.optim.Optimizer, batch_gen: torch.Generator,
                          noise_gen: torch.Generator, progress: bool = True
                          ) -> dict[str, float]:
    """One round of ``objective="policy-gradient"``: :func:`train_on_pool` with
    :func:`policy_gradient_loss`. Returns the round's figures: ``pool/sampled_best_of_k`` (the
    median over its sounds of the best of their SDE samples' scores, after the search of
    ``refine_top``), ``pool/sampled_mean`` (of the mean) and ``pool/sample_spread``."""
    search = ((settings.refine_top, settings.refine_steps, settings.refine_lr)
              if settings.refine_top else None)
    losses, d, spreads = train_on_pool(
        settings, prior, lambda audio, mel: policy_gradient_loss(
            prior, synth, distance, audio, mel, settings.k, settings.sde_noise,
            settings.sde_steps, noise_gen, settings.advantage, search),
        pool_audio, pool_mel, optimizer, batch_gen, "policy-gradient steps", progress)
    return {"pool/sampled_best_of_k": float(d.min(dim=1).values.median()),
            "pool/sampled_mean": float(d.mean(dim=1).median()),
            "pool/sample_spread": float(np.mean(spreads)), "loss/train": float(np.mean(losses))}


def pick_round(histories: list[list[dict[str, Any]]], val_k: int = 16,
               max_drift: float = 0.05, domain_ks: tuple[int, ...] | None = None) -> int | None:
    """The row to use from fine-tuning runs (seeds), chosen on validation sounds only: a round
    of ``finetune_prior.py``, or an interpolation weight of ``interpolate_prior.py`` (row 0 is
    the starting prior in both).

    Among rows 1... whose mean in-domain distance (over the runs) is within ``max_drift``
    of row 0's at every ``k`` of ``domain_ks``, the one with the lowest mean validation-pool
    distance at ``val_k``; ``None`` when no row stays within the drift.

    Args:
        histories: Each run's ``history.json`` rows (row 0 first).
        val_k: The samples per sound of the validation-pool figure that ranks the rows.
        max_drift: Largest relative rise of the in-domain distance accepted.
        domain_ks: The in-domain figures checked for drift (default: every
            ``val/in_domain_best_of_<k>`` that all the histories have).
    """
    pool_key = f"val/val_pool_best_of_{val_k}"
    if domain_ks is None:
        prefix = "val/in_domain_best_of_"
        found = [set(k for k in h[0] if k.startswith(prefix)) for h in histories if h]
        domain_keys = sorted(set.intersection(*found)) if found else []
        domain_keys = domain_keys or [f"{prefix}{val_k}"]
    else:
        domain_keys = [f"val/in_domain_best_of_{k}" for k in domain_ks]
    rows = min(len(h) for h in histories)
    missing = [k for k in (pool_key, *domain_keys)
               if rows and any(k not in h[0] for h in histories)]
    if rows == 0 or missing:
        raise ValueError(f"the histories have no {(missing or [pool_key])[0]} (a run "
                         "without --val-pool, or other sample counts)")

    def mean(key: str, r: int) -> float:
        return float(np.mean([h[r][key] for h in histories]))

    ok = [r for r in range(1, rows)
          if all(mean(k, r) <= (1.0 + max_drift) * mean(k, 0) for k in domain_keys)]
    return min(ok, key=lambda r: mean(pool_key, r)) if ok else None


def rows_table(histories: list[list[dict[str, Any]]], label: str = "round") -> str:
    """A Markdown table of the runs' validation figures, row by row (mean over the runs), each
    with its change against row 0; ``label`` names the rows' first column (a key of the
    rows). Figures that not every run logged are left out."""
    rows = min(len(h) for h in histories)
    keys = [k for k in histories[0][0]
            if k.startswith("val/") and all(k in h[0] for h in histories)]
    start = [float(np.mean([h[0][k] for h in histories])) for k in keys]
    lines = ["| " + label + " | " + " | ".join(k.removeprefix("val/") for k in keys) + " |",
             "|---:|" + "---:|" * len(keys)]
    for r in range(rows):
        cells = []
        for k, s in zip(keys, start, strict=True):
            m = float(np.mean([h[r][k] for h in histories]))
            cells.append(f"{m:.3f} ({m / s - 1:+.1%})")
        lines.append(f"| {histories[0][r].get(label, r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
