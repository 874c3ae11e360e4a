"""Search baselines over a synth's presets, and the scoring they share with the prior.

Every method here proposes candidate presets per target, renders them and keeps the one
closest to the target by the perceptual distance (the env's reward distance), so their results
compare directly: what differs is where the candidates come from and how many renders it took.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synthmatch.devices import CPU_SCORE_CHUNK, GPU_SCORE_CHUNK, chunk_size
from synthmatch.rewards import AudioFeatures, PerceptualDistance
from synthmatch.synths import Synth


def score_chunk(device: torch.device | str) -> int:
    """Candidates to render and score per call on ``device`` (see :mod:`synthmatch.devices`)."""
    return chunk_size(device, CPU_SCORE_CHUNK, GPU_SCORE_CHUNK)


@dataclass
class MatchResult:
    """Best candidate per target and what the search saw.

    Attributes:
        params: ``(B, P)`` best normalised preset per target.
        distance: ``(B,)`` its perceptual distance to the target.
        candidates: ``(B, K, P)`` every candidate preset.
        candidate_distances: ``(B, K)`` distance of every candidate.
    """

    params: Tensor
    distance: Tensor
    candidates: Tensor
    candidate_distances: Tensor

    @property
    def renders(self) -> int:
        """Renders spent per target."""
        return self.candidates.shape[1]


@torch.no_grad()
def score_candidates(synth: Synth, distance: PerceptualDistance, target_audio: Tensor,
                     candidates: Tensor, chunk: int | None = None,
                     target_features: AudioFeatures | None = None) -> Tensor:
    """Render ``candidates`` ``(B, K, P)`` and return their distances ``(B, K)`` to
    ``target_audio`` ``(B, T)``, about ``chunk`` renders at a time (whole targets, so at
    least ``K``; default: :func:`score_chunk` of the device). A caller that holds the
    targets' features already passes them as ``target_features`` (``B`` rows)."""
    b, k, p = candidates.shape
    chunk = chunk or score_chunk(candidates.device)
    if target_audio.shape[0] != b:
        raise ValueError(f"{b} candidate sets for {target_audio.shape[0]} targets")
    flat = candidates.reshape(b * k, p)
    owner = torch.arange(b, device=flat.device).repeat_interleave(k)
    out = torch.empty(b * k, device=flat.device)
    per = max(1, chunk // k)  # whole targets per chunk: their features are computed once
    for t0 in range(0, b, per):
        t1 = min(b, t0 + per)
        target = (target_features.rows(t0, t1) if target_features is not None
                  else distance.features(target_audio[t0:t1].to(flat.device)))
        rows = slice(t0 * k, t1 * k)
        audio = synth.render(flat[rows])
        out[rows] = distance.distance(distance.features(audio), target.index(owner[rows] - t0))
    return out.reshape(b, k)


def best_of(synth: Synth, distance: PerceptualDistance, target_audio: Tensor,
            candidates: Tensor) -> MatchResult:
    """Score ``candidates`` ``(B, K, P)`` and keep the closest per target."""
    d = score_candidates(synth, distance, target_audio, candidates)
    best = d.argmin(dim=1)
    rows = torch.arange(d.shape[0], device=d.device)
    return MatchResult(candidates[rows, best], d[rows, best], candidates, d)


def random_search(synth: Synth, distance: PerceptualDistance, target_audio: Tensor,
                  renders: int, generator: torch.Generator | None = None) -> MatchResult:
    """Best of ``renders`` uniform random presets per target (the synth's
    :meth:`~synthmatch.synths.ParamTable.sample`, discrete parameters snapped)."""
    if renders < 1:
        raise ValueError(f"renders must be >= 1, got {renders}")
    b = target_audio.shape[0]
    u = synth.params.sample(b * renders, generator, device=synth.device)
    return best_of(synth, distance, target_audio, u.reshape(b, renders, -1))
