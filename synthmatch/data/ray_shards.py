"""Writing a dataset's shards as tasks on a Ray cluster (``write_dataset(..., ray=True)``).

Each missing shard is one task that calls :func:`~synthmatch.data.shards.render_shard`, the
function the local worker processes run, so a shard is the same file either way: written under
a temporary name and renamed when complete. A task whose worker dies (killed, out of memory,
node lost) is retried by Ray (:data:`~synthmatch.distributed.MAX_RETRIES`); the dead worker's
temporary file is never renamed, and is removed once every task has finished. The output
directory must be a path every node reaches (a shared file system), since workers write it.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch

from synthmatch.data.check import TMP_GLOB
from synthmatch.data.config import DatasetConfig, shard_name
from synthmatch.data.shards import incomplete, progress_bar, render_shard
from synthmatch.distributed import TaskFailedError, connect, run_tasks, task_options


def render_shard_task(config_json: str, root: str, index: int, device: str) -> int:
    """Ray task: render shard ``index`` unless a final file exists; returns its rows."""
    config = DatasetConfig.from_dict(json.loads(config_json))
    if (Path(root) / shard_name(index)).exists():
        # A retried task whose first attempt died after its rename: the file is whole.
        return config.shard_rows(index)
    if device == "cpu":
        torch.set_num_threads(1)  # one CPU per task, as each local worker process
    return render_shard(config_json, root, index, device,
                        owner=f"{socket.gethostname()}-{os.getpid()}")


def render_shards_ray(config: DatasetConfig, root: Path, todo: list[int], device: str,
                      max_in_flight: int | None, progress: bool) -> None:
    """Render the shards ``todo`` of ``config`` into ``root`` as Ray tasks; the bar moves as
    each shard finishes.

    Raises:
        IncompleteDatasetError: a task failed (after Ray's retries) or Ctrl-C; the finished
            shards stay, and the same call resumes.
    """
    ray = connect(device=device)
    task = ray.remote(render_shard_task).options(**task_options(device))
    config_json = config.to_json()
    bar = progress_bar(config, root, todo, progress, " (ray)")
    with bar:
        try:
            run_tasks(lambda i: task.remote(config_json, str(root), i, device), todo,
                      lambda i, rows: bar.update(rows), max_in_flight)
        except (TaskFailedError, KeyboardInterrupt) as exc:
            cause = ("interrupted" if isinstance(exc, KeyboardInterrupt) else
                     f"{type(exc.cause).__name__} rendering {shard_name(exc.item)}: "
                     f"{exc.cause}")
            raise incomplete(config, root, cause, exc) from exc
    # Every task has finished: a temporary file left now is a killed attempt's.
    for stale in root.glob(TMP_GLOB):
        stale.unlink(missing_ok=True)
