"""The device policy of the package, written once: which devices exist, and how large a batch
one call should take on each.

On CPU, batches are processed in chunks small enough that their temporaries stay in cache
(benchmarks/bench_chunks.py chose the sizes); results do not depend on the chunking, since
every item is independent. On a GPU, whole batches keep the device busy, bounded only where
memory requires it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

# Reward features computed per call on CPU (the env core's steps).
CPU_FEATURE_CHUNK = 32
# Within those, spectra are computed a few items at a time and written into the whole batch's
# tensors: an STFT's temporaries (framed audio, complex spectrum, power) then stay in cache
# across the passes over them. In env steps at 64 envs on the 2-core CPU, 4 items at a time
# made the reward about 8% cheaper than whole chunks of 32 (2 and 8 did no better).
CPU_SPECTRA_CHUNK = 4
# Candidates rendered and scored per call by searches: on CPU, features of larger batches fall
# out of cache; on a GPU, this bounds the memory of the features.
CPU_SCORE_CHUNK = 256
GPU_SCORE_CHUNK = 4096
# Presets a dataset renders per call on a GPU (on CPU: the dataset's ``render_batch``).
GPU_RENDER_BATCH = 4096


def resolve_device(device: torch.device | str | None) -> torch.device:
    """A device that exists on this machine, from ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
    ``None`` (CPU).

    Raises:
        ValueError: an unknown device name, CUDA on a machine without it, or a CUDA index this
            machine does not have; the message says what is available.
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device {device!r} is not supported: use 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here "
                         f"(torch {torch.__version__}); use 'cpu'")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"device {device!r} does not exist: this machine has {count} CUDA "
                         f"device(s), cuda:0 to cuda:{count - 1}")
    return dev


def set_cpu_threads(threads: int) -> None:
    """Run torch on ``threads`` CPU threads. Searches' results depend on the count at the
    float-rounding level (docs/results.md, "Seventeenth session"), so the scripts whose results
    are published pin it.

    Raises:
        ValueError: fewer than one thread.
    """
    if isinstance(threads, bool) or threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def free_memory(device: torch.device | str) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, or the host's available
    memory (``MemAvailable`` of /proc/meminfo); ``None`` where it cannot be known."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def chunk_size(device: torch.device | str, cpu: int | None, gpu: int | None = None) -> int | None:
    """Items per call on ``device``: ``cpu`` on a CPU, ``gpu`` elsewhere; ``None``: the whole
    batch in one call."""
    return cpu if torch.device(device).type == "cpu" else gpu


def chunks(num_items: int, size: int | None) -> list[slice]:
    """Consecutive slices covering ``range(num_items)``, ``size`` items each (the last may be
    shorter); one slice when ``size`` is ``None``."""
    if size is None or size >= num_items:
        return [slice(0, num_items)]
    return [slice(start, min(start + size, num_items)) for start in range(0, num_items, size)]


def count_syncs(fn: Callable[[], object]) -> int:
    """How many times ``fn()`` makes the host wait for the GPU (``.item()``, ``.cpu()``,
    ``nonzero``...), counted with ``torch.cuda.set_sync_debug_mode``; 0 without CUDA."""
    if not torch.cuda.is_available():
        fn()
        return 0
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)
