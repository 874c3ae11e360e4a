"""Ray, for the jobs that outgrow one machine: connecting, task resources, a driver loop.

Ray is an optional extra (``pip install "synthmatch[ray]"``). No module imports it at import
time: the single-machine paths never load it, and every ``--ray`` path goes through
:func:`require_ray`, whose error names the extra. The ``--ray`` paths of ``make_dataset.py``
and ``leaderboard.py`` and ``experiments/sweep.py`` all use the helpers here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

RAY_EXTRA = "pip install 'synthmatch[ray]'"
# Retries of a task whose worker process died (killed, out of memory, node lost). A task that
# raises is not retried: the same inputs would raise again.
MAX_RETRIES = 3


class RayMissingError(ImportError):
    """Ray was asked for (``--ray``) but is not installed."""


class TaskFailedError(RuntimeError):
    """A Ray task raised, or its worker died more often than :data:`MAX_RETRIES` allows.

    Attributes:
        item: The item the task was working on (a shard index, a chunk...).
        cause: The exception; for a task that raised, the task's own exception.
    """

    def __init__(self, item: Any, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.item, self.cause = item, cause


def require_ray(tune: bool = False) -> Any:
    """The ``ray`` module (``ray.tune`` loaded too with ``tune=True``).

    Raises:
        RayMissingError: Ray (or Tune's dependencies) is not installed; the one-line message
            names the extra to install.
    """
    try:
        import ray

        if tune:
            import ray.tune  # noqa: F401  (needs pandas and pyarrow besides ray)
    except ImportError as exc:
        raise RayMissingError(f"--ray needs Ray, which is not installed here ({exc}); install "
                              f"it with: {RAY_EXTRA}") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None, tune: bool = False,
            device: str = "cpu") -> Any:
    """Connect this process to a Ray cluster, unless it already is; returns ``ray``.

    Args:
        address: A running cluster (``ray start --head`` prints it, e.g. ``10.0.0.1:6379``, or
            ``auto``). ``None``: the ``RAY_ADDRESS`` variable if set, else a Ray instance
            started on this machine with ``num_cpus`` CPUs (default: all).
        num_cpus: CPUs of a Ray instance started here; ignored when connecting.
        tune: Also load Ray Tune (its dependencies come with the extra too).
        device: Where the tasks will render; ``cuda`` needs a GPU in the cluster.

    Raises:
        RayMissingError: Ray is not installed.
        ConnectionError: no cluster answers at ``address`` (the message names it).
        ValueError: ``device`` is CUDA and the cluster has no GPU (its tasks would wait
            forever).
    """
    ray = require_ray(tune)
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = {} if address else {"num_cpus": num_cpus, "include_dashboard": False}
    try:
        ray.init(address=address, logging_level=logging.WARNING, **local)
    except ConnectionError as exc:
        raise ConnectionError(f"cannot reach a Ray cluster at {address!r} ({exc}); start one "
                              "with `ray start --head` and pass the address it prints") from None
    if device.startswith("cuda") and not ray.cluster_resources().get("GPU"):
        raise ValueError(f"{device} asked for, but the Ray cluster has no GPU (`ray status` "
                         "lists its resources): use cpu, or add nodes with GPUs")
    return ray


def task_options(device: str) -> dict[str, Any]:
    """Ray options of a task that renders on ``device``: one CPU, or one GPU for CUDA (the
    task then sees only that GPU, as ``cuda``)."""
    gpu = device.startswith("cuda")
    return {"num_cpus": 1, "num_gpus": 1 if gpu else 0, "max_retries": MAX_RETRIES,
            "retry_exceptions": False}


def run_tasks(submit: Callable[[T], Any], items: Iterable[T],
              on_done: Callable[[T, Any], None], max_in_flight: int | None = None,
              poll_s: float = 0.5) -> None:
    """Submit a task per item and hand each result to ``on_done`` as soon as it finishes.

    Args:
        submit: ``item -> ObjectRef`` (``remote_function.remote(...)``).
        items: What to submit, in order.
        on_done: Called in this process as ``on_done(item, result)``, in completion order.
        max_in_flight: Tasks submitted at once (``None``: all; Ray runs as many as the
            cluster's resources allow).
        poll_s: Longest wait between checks (Ctrl-C is noticed within it).

    Raises:
        TaskFailedError: a task failed; the tasks not yet finished are cancelled.
        KeyboardInterrupt: Ctrl-C; the tasks not yet finished are cancelled.
    """
    import ray

    waiting = list(items)[::-1]
    running: dict[Any, T] = {}
    try:
        while waiting or running:
            while waiting and (max_in_flight is None or len(running) < max_in_flight):
                item = waiting.pop()
                running[submit(item)] = item
            finished, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
            for ref in finished:
                item = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None) or exc
                    raise TaskFailedError(item, cause) from exc
                on_done(item, result)
    except BaseException:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
