"""Running methods on suites: chunks of targets, the render meter, metrics, and a cache.

The unit of work is a *chunk*: one method on up to ``chunk_size`` targets of one suite, run
once at the largest budget it takes, with the result read at every smaller budget (see
:mod:`synthmatch.leaderboard.meter`). Each finished chunk is written atomically to the cache
under a key made of what decides its result (suite manifest, method settings, budgets, seed,
chunk size), so an interrupted run resumes at the next chunk and a changed setting never
reuses a stale result. Checkpoints enter the key by path only: retraining a prior or policy in
place needs a fresh ``--out`` (or a deleted cache). On a Ray cluster
(:mod:`synthmatch.leaderboard.ray_jobs`) each missing chunk is a task and the driver writes
its result into the same cache, so a local run and a Ray run continue each other.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmatch.envs.core import SUCCESS_THRESHOLD
from synthmatch.fileio import cached_sha256, write_json_atomic
from synthmatch.leaderboard.meter import RenderMeter
from synthmatch.leaderboard.methods import MatchTask, Method
from synthmatch.leaderboard.metrics import envelope_cosine, mss_distance, param_mae
from synthmatch.leaderboard.report import file_stem
from synthmatch.leaderboard.suites import Suite
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import Synth

CHUNK_SIZE = 32


def method_budgets(method: Method, budgets: list[int]) -> list[int]:
    """The budgets ``method`` is shown at: those it supports, stopping at the first that
    covers its whole run (larger ones would repeat it)."""
    out = []
    for b in sorted(set(budgets)):
        if b < method.min_budget:
            continue
        out.append(b)
        if method.max_budget is not None and b >= method.max_budget:
            break
    return out


@dataclass
class Job:
    """One method on one suite.

    ``env_id`` names the registered env whose synth ``synth`` is: a Ray worker rebuilds the
    synth from it rather than receive it (a plugin's or Vital's does not travel). It is not
    part of :attr:`key`: the synth's name and parameters are. Nor is ``code``, the commit of
    the code that runs the job: each chunk it computes records it, so a result read from the
    cache still says which code made it.
    """

    suite: Suite
    method: Method
    synth: Synth
    budgets: list[int]
    seed: int = 0
    chunk_size: int = CHUNK_SIZE
    env_id: str | None = None
    code: str | None = None

    @cached_property
    def key(self) -> str:
        """Hash of everything that decides the results."""
        blob = json.dumps({"suite": self.suite.name,
                           "manifest": hashlib.sha256(json.dumps(
                               self.suite.manifest, sort_keys=True).encode()).hexdigest(),
                           "synth": self.synth.name, "params": list(self.synth.params.names),
                           "method": self.method.name, "settings": self.method.settings(),
                           "budgets": self.budgets, "seed": self.seed,
                           "chunk_size": self.chunk_size}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def chunks(self) -> Iterator[tuple[int, Suite]]:
        for c, start in enumerate(range(0, len(self.suite), self.chunk_size)):
            yield c, self.suite.subset(slice(start, start + self.chunk_size))

    def cache_path(self, cache_dir: Path, chunk: int) -> Path:
        slug = file_stem(self.suite.name)
        return (cache_dir / slug / self.method.name.replace("+", "_") / self.key
                / f"chunk-{chunk:03d}.json")

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each file the method reads (:meth:`Method.files`), by path."""
        return {str(p): cached_sha256(p) for p in self.method.files()}

    def cached(self, cache_dir: Path, chunk: int) -> dict[str, Any] | None:
        """The cached result of ``chunk``, or ``None``: not computed yet, or computed from
        files (a checkpoint retrained at the same path) whose content has changed since.
        Results cached before files were recorded are taken as they are."""
        path = self.cache_path(cache_dir, chunk)
        if not path.is_file():
            return None
        result = json.loads(path.read_text())
        files, now = result.get("files"), self.file_hashes()
        if files is not None and files != now:
            changed = sorted(p for p, h in now.items() if files.get(p) != h)
            print(f"{self.suite.name} {self.method.name}: {', '.join(changed)} changed since "
                  f"chunk {chunk} was cached; computing it again", file=sys.stderr)
            return None
        return result

    def store(self, cache_dir: Path, chunk: int, result: dict[str, Any]) -> dict[str, Any]:
        """Write ``result`` of ``chunk`` to the cache with the sha256 of the method's files
        and the commit of the code that computed it; returns what was written."""
        stored = {**result, "files": self.file_hashes(), "code": self.code}
        write_json_atomic(self.cache_path(cache_dir, chunk), stored)
        return stored


def run_chunk(job: Job, chunk: int, targets: Suite) -> dict[str, Any]:
    """Run ``job.method`` on ``targets`` and measure its best preset at every budget.

    Returns:
        ``{"budgets": {str(b): {"wall_s": ..., "targets": [per-target dict]}}}`` with, per
        target: name, distance (as the meter scored it), success, mss, envelope_cosine,
        param_mae (``None`` without true parameters), renders and the preset.
    """
    synth = job.synth
    distance = PerceptualDistance(synth.sample_rate).to(synth.device)
    meter = RenderMeter(synth, distance, targets.audio, max(job.budgets), stops=job.budgets)
    presets = job.method.run(MatchTask(synth, meter, job.seed * 10_000 + chunk))
    meter.check_rendered(presets)
    target_np = targets.audio.numpy()
    out: dict[str, Any] = {}
    for b in job.budgets:
        params, d, used, wall = meter.best(b)
        with torch.no_grad():
            audio = synth.render(params).cpu().numpy()
        mss = mss_distance(audio, target_np, synth.sample_rate)
        env = envelope_cosine(audio, target_np, synth.sample_rate)
        mae = (param_mae(params.numpy(), targets.params.numpy())
               if targets.params is not None else [None] * len(targets))
        out[str(b)] = {"wall_s": wall, "targets": [
            {"target": name, "distance": float(d[i]),
             "success": bool(d[i] < SUCCESS_THRESHOLD), "mss": float(mss[i]),
             "envelope_cosine": float(env[i]),
             "param_mae": None if mae[i] is None else float(mae[i]),
             "renders": int(used[i]), "params": [round(float(v), 7) for v in params[i]]}
            for i, name in enumerate(targets.target_names)]}
    return {"budgets": out, "settings": job.method.settings()}


def compute_chunk(job: Job, chunk: int, targets: Suite) -> dict[str, Any]:
    """:func:`run_chunk` with the global generators seeded first, as every run seeds them
    (in this process or on a Ray worker)."""
    torch.manual_seed(job.seed)
    np.random.seed(job.seed)
    return run_chunk(job, chunk, targets)


def run_job(job: Job, cache_dir: Path, progress=None) -> list[dict[str, Any]]:
    """Every chunk of ``job`` (from the cache where finished); returns one cell per budget:
    ``{"suite", "method", "budget", "wall_s", "targets": [...], "computed_at": [...]}``, the
    last the commits whose code computed its chunks (``"unknown"`` for chunks cached before
    commits were recorded)."""
    cells = {b: {"suite": job.suite.name, "method": job.method.name, "budget": b,
                 "wall_s": 0.0, "targets": []} for b in job.budgets}
    codes = set()
    for c, targets in job.chunks():
        result = job.cached(cache_dir, c)
        if result is None:
            result = job.store(cache_dir, c, compute_chunk(job, c, targets))
        codes.add(result.get("code") or "unknown")
        for b in job.budgets:
            part = result["budgets"][str(b)]
            cells[b]["wall_s"] += part["wall_s"]
            cells[b]["targets"] += part["targets"]
        if progress is not None:
            progress.update(len(targets))
    return [{**cell, "computed_at": sorted(codes)} for cell in cells.values()]
