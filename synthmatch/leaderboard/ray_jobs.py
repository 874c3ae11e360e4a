"""The leaderboard's chunks as tasks on a Ray cluster (``leaderboard.py --ray``).

A task is one chunk of one job: one method on up to ``chunk_size`` targets of one suite, run
once at the job's largest budget and read at every smaller one, which is how the harness
measures all the budgets of a (suite, method, chunk) cell. The driver writes each result into
the same cache as a local run, as it arrives, so the workers need no shared file system, and
:func:`~synthmatch.leaderboard.harness.run_job` then assembles the table from the cache. A
task seeds and runs exactly what a local run does
(:func:`~synthmatch.leaderboard.harness.compute_chunk`), so the results are a local run's (to
the last bits of a float, in which any two processes may differ: FFT and matmul kernels take
other paths with another memory layout). A task whose worker dies is retried.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from synthmatch.distributed import connect, run_tasks, task_options
from synthmatch.leaderboard.harness import Job, compute_chunk

# (env id, device) -> synth, built once per worker process.
_SYNTHS: dict[tuple[str, str], Any] = {}


def chunk_task(job: Job, chunk: int, device: str) -> dict[str, Any]:
    """Ray task: chunk ``chunk`` of ``job`` (sent without its synth), on ``device``."""
    from synthmatch.envs.registration import env_synth

    if device == "cpu":
        torch.set_num_threads(1)  # one CPU per task
    key = (job.env_id, device)
    if key not in _SYNTHS:
        _SYNTHS.clear()
        _SYNTHS[key] = env_synth(job.env_id, device)
    job = replace(job, synth=_SYNTHS[key])
    targets = next(t for c, t in job.chunks() if c == chunk)
    return compute_chunk(job, chunk, targets)


def fill_cache_ray(jobs: list[Job], cache_dir: Path, device: str = "cpu",
                   progress=None) -> int:
    """Run every chunk of ``jobs`` missing from ``cache_dir`` as a Ray task, writing each
    result into the cache as it arrives; returns the chunks run.

    Args:
        jobs: Jobs with ``env_id`` set.
        cache_dir: The leaderboard's cache (``<out>/cache``).
        device: Where tasks render: ``"cpu"`` (one CPU each) or ``"cuda"`` (one GPU each).
        progress: A tqdm bar over targets; moves as chunks finish (cached ones at once).

    Raises:
        ValueError: a job without ``env_id``.
        TaskFailedError: a task failed; the chunks finished before are cached.
        KeyboardInterrupt: Ctrl-C; the chunks finished before are cached.
    """
    missing = [j for j in jobs if j.env_id is None]
    if missing:
        raise ValueError(f"{missing[0].suite.name} {missing[0].method.name}: a job needs its "
                         "env_id to run on Ray")
    todo = []
    for job in jobs:
        for c, targets in job.chunks():
            if job.cached(cache_dir, c) is not None:
                if progress is not None:
                    progress.update(len(targets))
            else:
                todo.append((job, c, len(targets)))
    if not todo:
        return 0
    ray = connect(device=device)
    task = ray.remote(chunk_task).options(**task_options(device))
    # Each job travels once (its suite's audio, a loaded prior...), without its synth.
    sent = {id(job): ray.put(replace(job, synth=None)) for job, _, _ in todo}

    def done(item: tuple[Job, int, int], result: dict[str, Any]) -> None:
        job, c, n = item
        job.store(cache_dir, c, result)
        if progress is not None:
            progress.update(n)

    run_tasks(lambda item: task.remote(sent[id(item[0])], item[1], device), todo, done)
    return len(todo)
