"""Writing a dataset: shards rendered in worker processes, resumable, never half-written.

Each shard is rendered by one worker into ``.shard-NNNNN.h5.tmp.<pid>`` and renamed to
``shard-NNNNN.h5`` only once complete, so a final name always holds a whole shard. Shard
``i`` draws its presets from its own generator seeded from ``(seed, i)``: its content does not
depend on the number of workers, the order of completion or on resumes. The same holds on a
Ray cluster (``ray=True``, :mod:`synthmatch.data.ray_shards`), where each shard is a task.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from synthmatch.data.check import TMP_GLOB, inspect_shard
from synthmatch.data.config import (
    DATASET_JSON,
    FORMAT_VERSION,
    SPLITS_JSON,
    STATS_JSON,
    DatasetConfig,
    metadata_differences,
    require_h5py,
    shard_name,
    shard_seed,
)
from synthmatch.data.dataset import DatasetError, ShardedDataset, open_dataset, read_json
from synthmatch.data.splits import assign_splits, compute_stats
from synthmatch.devices import GPU_RENDER_BATCH, chunk_size, resolve_device
from synthmatch.fileio import temporary_name, write_json_atomic


class DatasetMismatchError(DatasetError, ValueError):
    """The output directory holds a dataset written with a different config."""


class IncompleteDatasetError(DatasetError):
    """Rendering stopped early; completed shards are kept and a re-run resumes.

    Attributes:
        done: Shards complete on disk.
        total: Shards of the dataset.
        interrupted: Stopped by Ctrl-C (``KeyboardInterrupt``) rather than a failure.
    """

    def __init__(self, message: str, done: int, total: int, interrupted: bool = False):
        super().__init__(message)
        self.done, self.total, self.interrupted = done, total, interrupted


def write_dataset(config: DatasetConfig, out_dir: str | Path, *, workers: int | None = None,
                  progress: bool = True, device: str = "cpu",
                  ray: bool = False) -> ShardedDataset:
    """Render ``config`` into ``out_dir``, or finish a dataset an earlier call started.

    Writes ``dataset.json`` first, then every missing shard (in worker processes), then
    ``splits.json`` and ``stats.json``. Completed shards of an earlier run are kept.
    Workers are spawned processes, so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard.

    Args:
        config: What to render.
        out_dir: The dataset directory (created if needed).
        workers: Worker processes; ``None``: ``min(os.cpu_count(), missing shards)``.
            CPU only: on a GPU, shards render one after another in this process.
        progress: Show a tqdm bar over items.
        device: ``"cpu"`` or a CUDA device. The presets are the same on every device (drawn
            on the CPU); audio and log-mels agree within float tolerance.
        ray: Render each missing shard as a task on the Ray cluster this process is connected
            to (one is started on this machine if none is; see
            :func:`synthmatch.distributed.connect`), with one CPU, or one GPU for ``"cuda"``.
            ``workers`` then bounds the tasks at once. ``out_dir`` must be a path every node
            reaches. The shards are the same as without Ray.

    Returns:
        The finished dataset.

    Raises:
        DatasetMismatchError: ``out_dir`` holds a dataset with another config.
        DatasetError: a final shard file is broken (the message names it), or ``out_dir``
            is not a directory.
        IncompleteDatasetError: a worker died or failed, or Ctrl-C; re-run to resume.
        RayMissingError: ``ray=True`` without Ray installed.
    """
    require_h5py()
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be >= 1 or None, got {workers!r}")
    # With Ray, the GPUs are the workers' (the driver may have none): check the name only.
    device = _ray_device(device) if ray else resolve_device(device)
    if not ray and device.type != "cpu" and workers not in (None, 1):
        raise ValueError("workers applies to CPU rendering; on a GPU, shards render one after "
                         "another in this process")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"output path {root} exists and is not a directory")
    synth = config.make_synth()
    metadata = config.metadata(synth)
    _claim_directory(root, metadata)
    for stale in root.glob(TMP_GLOB):
        stale.unlink(missing_ok=True)
    todo = _missing_shards(root, config, metadata)
    if todo and ray:
        from synthmatch.data.ray_shards import render_shards_ray

        render_shards_ray(config, root, todo, device.type, workers, progress)
    elif todo and device.type == "cpu":
        _render_shards(config, root, todo, workers, progress)
    elif todo:
        _render_on_device(config, root, todo, device, progress)
    splits = assign_splits(config)
    write_json_atomic(root / SPLITS_JSON, splits)
    write_json_atomic(root / STATS_JSON, compute_stats(root, config, splits["train"],
                                                       metadata["param_names"]))
    return open_dataset(root)


def _ray_device(device: str) -> torch.device:
    """``cpu`` or ``cuda`` for Ray tasks, where each task sees only the GPU it was given."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'") from None
    if dev.type not in ("cpu", "cuda") or dev.index is not None:
        raise ValueError(f"device {device!r} with Ray: use 'cpu' or 'cuda' (each task gets a "
                         "GPU of its own and sees it as 'cuda')")
    return dev


def _claim_directory(root: Path, metadata: dict[str, Any]) -> None:
    """Write ``dataset.json``, or check that the one there describes the same dataset."""
    path = root / DATASET_JSON
    if path.exists():
        recorded = read_json(path, "the dataset description")
        diffs = metadata_differences(recorded, metadata)
        if diffs:
            raise DatasetMismatchError(
                f"{root} already holds a dataset written with different settings; refusing "
                "to mix them. Differences (recorded -> requested):\n  " + "\n  ".join(diffs)
                + f"\nUse another output directory, re-run with the recorded settings to "
                f"resume, or delete {root} to start over.")
        return
    if root.exists() and any(root.glob("shard-*.h5")):
        raise DatasetError(f"{root} holds shard files but no {DATASET_JSON}; it was not "
                           "written by this tool or is damaged: use an empty directory")
    ours = [root / name for name in (SPLITS_JSON, STATS_JSON)]
    if any(p.exists() for p in ours):
        # Files a dataset would overwrite, in a directory that holds no dataset: a user's.
        raise DatasetError(f"{root} holds {', '.join(p.name for p in ours if p.exists())} but "
                           f"no {DATASET_JSON}; refusing to overwrite files this tool did not "
                           "write: use an empty or new directory")
    write_json_atomic(path, metadata)


def _missing_shards(root: Path, config: DatasetConfig, metadata: dict[str, Any]) -> list[int]:
    """Indices of shards without a final file; a final file that fails its check is fatal."""
    todo, broken = [], []
    for index in range(config.num_shards):
        path = root / shard_name(index)
        if not path.exists():
            todo.append(index)
            continue
        info = inspect_shard(path, config, metadata, deep=False)
        if info.problems:
            broken.append(f"{path}: {'; '.join(info.problems)}")
    if broken:
        raise DatasetError(
            "final shard file(s) fail their check; they are not overwritten automatically:\n  "
            + "\n  ".join(broken) + "\nDelete them and run again to re-render those shards.")
    return todo


# -- worker side -----------------------------------------------------------------------------

_ROWS_WRITTEN: Any = None  # shared array: rows written per shard, for the progress bar
# (config JSON, device) -> (synth, log-mel), built once per worker
_TOOLS: dict[tuple[str, str], tuple[Any, Any]] = {}


def _exit_with_parent(parent: int, period_s: float = 1.0) -> None:
    """End this worker when the process that started it is gone (killed with ``kill -9``,
    say): a daemon thread notices the re-parenting and exits without cleanup."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(rows_written: Any, parent: int) -> None:
    global _ROWS_WRITTEN
    _exit_with_parent(parent)
    _ROWS_WRITTEN = rows_written
    # One process per core: torch's own thread pool would only oversubscribe.
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group; the main process alone decides what to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _tools(config_json: str, config: DatasetConfig, device: str) -> tuple[Any, Any]:
    key = (config_json, device)
    if key not in _TOOLS:
        _TOOLS.clear()
        _TOOLS[key] = (config.make_synth(device),
                       config.log_mel().to(device) if config.store_mel else None)
    return _TOOLS[key]


def render_shard(config_json: str, root: str, index: int, device: str = "cpu",
                 owner: str | None = None) -> int:
    """Render shard ``index`` into a temporary file and rename it when complete.

    Runs in a worker process (and can be called directly). Returns the rows written.
    ``owner`` names the writer in the temporary file's name (default: the process id; Ray
    tasks add the host, since processes of two machines may share an id).
    """
    h5py = require_h5py()
    config = DatasetConfig.from_dict(json.loads(config_json))
    final = Path(root) / shard_name(index)
    tmp = temporary_name(final, f"tmp.{owner or os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            rows = _fill_shard(f, config, *_tools(config_json, config, device), index)
    except BaseException:
        # A Python-level failure leaves nothing behind; a killed worker leaves the temporary
        # file, which the next run removes.
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    return rows


def _fill_shard(f, config: DatasetConfig, synth, log_mel, index: int) -> int:
    """Draw the shard's presets, render them chunk by chunk and append every chunk."""
    rows = config.shard_rows(index)
    seed = shard_seed(config.seed, index)
    params = synth.params.sample(rows, torch.Generator().manual_seed(seed))
    f.attrs.update(_shard_attrs(config, synth, index, seed, rows))
    shapes = {"params": (synth.num_params,), "audio": (synth.num_samples,)}
    if log_mel is not None:
        shapes["mel"] = (log_mel.n_mels, log_mel.num_frames(synth.num_samples))
    datasets = {name: _create(f, name, rows, shapes[name]) for name in config.stored_fields}
    datasets["params"].attrs["names"] = json.dumps(list(synth.params.names))
    if "mel" in datasets:
        datasets["mel"].attrs["units"] = "dB"
    batch = chunk_size(synth.device, config.render_batch, GPU_RENDER_BATCH)
    for start in range(0, rows, batch or rows):
        u = params[start:start + (batch or rows)]
        with torch.inference_mode():
            audio = synth.render(u).float()
            chunk = {"params": u.numpy(), "audio": audio.cpu().numpy()}
            if log_mel is not None:
                # Computed in float32, stored as float16 (0.06 dB steps near -100 dB).
                chunk["mel"] = log_mel(audio).to(torch.float16).cpu().numpy()
        end = start + u.shape[0]
        for name, data in datasets.items():
            data.resize(end, axis=0)
            data[start:end] = chunk[name]
        if _ROWS_WRITTEN is not None:
            _ROWS_WRITTEN[index] = end
    # Last: a file without this flag was not finished (check_dataset and resumes test it).
    f.attrs["complete"] = True
    return rows


def _shard_attrs(config: DatasetConfig, synth, index: int, seed: int,
                 rows: int) -> dict[str, Any]:
    import synthmatch

    return {"format_version": FORMAT_VERSION, "synthmatch_version": synthmatch.__version__,
            "synth": config.synth, "config": config.to_json(),
            "param_names": json.dumps(list(synth.params.names)),
            "sample_rate": synth.sample_rate, "num_samples": synth.num_samples,
            "probe": json.dumps(config.probe), "mel": json.dumps(config.mel),
            "seed": config.seed, "shard_index": index, "shard_seed": seed, "num_rows": rows,
            "complete": False}


def _create(f, name: str, rows: int, row_shape: tuple[int, ...]):
    dtype = {"params": np.float32, "mel": np.float16, "audio": np.float32}[name]
    row_bytes = int(np.prod(row_shape)) * np.dtype(dtype).itemsize
    # About 1 MiB chunks: small enough for random access, large enough for fast scans.
    chunk_rows = max(1, min(rows, (1 << 20) // row_bytes))
    return f.create_dataset(name, shape=(0, *row_shape), maxshape=(rows, *row_shape),
                            dtype=dtype, chunks=(chunk_rows, *row_shape))


# -- main side -------------------------------------------------------------------------------

def _render_shards(config: DatasetConfig, root: Path, todo: list[int], workers: int | None,
                   progress: bool) -> None:
    workers = min(workers or os.cpu_count() or 1, len(todo))
    context = multiprocessing.get_context("spawn")
    rows_written = context.RawArray("q", config.num_shards)
    done_before = config.n - sum(config.shard_rows(i) for i in todo)
    bar = progress_bar(config, root, todo, progress)
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(rows_written, os.getpid()))
    config_json = config.to_json()
    futures = {}
    try:
        futures = {executor.submit(render_shard, config_json, str(root), i): i for i in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()
            bar.update(done_before + sum(rows_written[i] for i in todo) - bar.n)
    except BaseException as exc:
        _stop(executor)
        bar.close()
        if isinstance(exc, KeyboardInterrupt):
            cause = "interrupted"
        elif isinstance(exc, BrokenProcessPool):
            cause = "a worker process died (killed, or out of memory?)"
        else:
            failed = next((futures[f] for f in futures if f.done() and not f.cancelled()
                           and f.exception() is exc), None)
            where = f" rendering {shard_name(failed)}" if failed is not None else ""
            cause = f"{type(exc).__name__}{where}: {exc}"
        raise incomplete(config, root, cause, exc) from exc
    executor.shutdown()
    bar.close()


def _render_on_device(config: DatasetConfig, root: Path, todo: list[int], device: torch.device,
                      progress: bool) -> None:
    """Render the missing shards one after another on ``device``, in this process."""
    bar = progress_bar(config, root, todo, progress, f" ({device})")
    config_json = config.to_json()
    with bar:
        for i in todo:
            try:
                bar.update(render_shard(config_json, str(root), i, str(device)))
            except BaseException as exc:
                cause = ("interrupted" if isinstance(exc, KeyboardInterrupt) else
                         f"{type(exc).__name__} rendering {shard_name(i)}: {exc}")
                raise incomplete(config, root, cause, exc) from exc


def progress_bar(config: DatasetConfig, root: Path, todo: list[int], progress: bool,
                 where: str = "") -> tqdm:
    """A bar over the dataset's items that starts at those of the shards not in ``todo``
    (shown on a terminal only, and only with ``progress``)."""
    done_before = config.n - sum(config.shard_rows(i) for i in todo)
    return tqdm(total=config.n, initial=done_before, unit="item",
                disable=None if progress else True,
                desc=f"{config.synth} -> {root.name}{where}", smoothing=0.1)


def incomplete(config: DatasetConfig, root: Path, cause: str,
               exc: BaseException) -> IncompleteDatasetError:
    """The error of a run that stopped early because of ``exc``: ``cause``, the shards done and
    how to resume."""
    done = sum((root / shard_name(i)).exists() for i in range(config.num_shards))
    return IncompleteDatasetError(
        f"{cause}; {done} of {config.num_shards} shards complete; run the same command again "
        "to resume", done, config.num_shards, isinstance(exc, KeyboardInterrupt))


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop every worker now; their unfinished shards stay temporary files."""
    # ``shutdown`` would wait for running shards to finish; there is no public way to end
    # workers before Python 3.14's ``terminate_workers``, hence the private ``_processes``.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
