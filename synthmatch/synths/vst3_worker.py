"""VST3 instrument instances: fast loading, verified writes, deterministic renders, workers.

This module imports only numpy and pedalboard (not torch), so the worker processes of
:class:`synthmatch.synths.vst3.VST3Synth` start quickly under the "spawn" context. Everything
here works on plain numpy arrays of normalised values.

Parallel rendering uses processes ("spawn": no forked plugin state): plugins must reset on the
main thread of their process, and threads sharing one instance are not deterministic. A worker
that dies or stops answering is killed and restarted, and the caller gets a
:class:`VST3WorkerError` naming the batch items it was rendering: never a hang.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import re
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np

# A read-back may differ from the written normalised value by float32 rounding in the host.
WRITE_TOLERANCE = 1e-4
# Parameter changes land during the next process call; this silent block applies them before
# the reset render, which makes renders bit-identical across repeats and processes.
SETTLE_S = 0.05
# DPF (and JUCE) expose MIDI CCs as pseudo-parameters named "MIDI Ch. 1 CC 7" or "MIDI CC 7".
MIDI_CC_NAME = re.compile(r"^MIDI (Ch\. ?\d+ )?CC \d+$")

_LOAD_LOCK = threading.Lock()


class ParameterWriteError(RuntimeError):
    """The plugin did not take a parameter value (read-back differs from what was written)."""


@contextlib.contextmanager
def _without_parameter_scan() -> Iterator[None]:
    """Skip pedalboard's eager scan of every parameter while a plugin loads.

    pedalboard's constructor builds a Python wrapper for each parameter, probing 1,000 values
    of each for its text; on a DPF plugin (2,088 parameters, mostly MIDI CCs) that is ~20 s of
    a ~20 s load. We read the few parameters we need from the native list instead. If the
    private hook moves in another pedalboard version, loading just takes the slow path.
    """
    import pedalboard._pedalboard as pb

    mixin = getattr(pb, "_PythonExternalPluginMixin", None)
    original = getattr(mixin, "__set_initial_parameter_values__", None)
    if original is None:
        yield
        return

    def skip_when_empty(self, parameter_values):
        if parameter_values:
            original(self, parameter_values)

    with _LOAD_LOCK:
        mixin.__set_initial_parameter_values__ = skip_when_empty
        try:
            yield
        finally:
            mixin.__set_initial_parameter_values__ = original


def load_plugin(path: str | Path):
    """Load a VST3 plugin file without pedalboard's parameter scan.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is not a VST3 bundle/file, or pedalboard cannot load it.
    """
    from pedalboard import VST3Plugin

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"VST3 plugin not found: {path}")
    if path.suffix.lower() != ".vst3":
        raise ValueError(f"{path} is not a VST3 plugin (expected a '.vst3' bundle or file)")
    try:
        with _without_parameter_scan():
            return VST3Plugin(path_to_plugin_file=str(path), parameter_values={},
                              plugin_name=None, initialization_timeout=10.0)
    except ImportError as err:
        raise ValueError(f"{path} could not be loaded as a VST3 plugin: {err}") from None


def set_plugin_state(plugin, data: bytes) -> None:
    """Load ``.vstpreset`` bytes into ``plugin``.

    Through the class's descriptor: pedalboard's ``__setattr__`` first looks the name up among
    the parameters, which scans all of them (~20 s on a DPF plugin).
    """
    type(plugin).preset_data.__set__(plugin, data)


def output_channels(plugin, sample_rate: int) -> int:
    """2 if the plugin renders stereo, else 1 (pedalboard refuses a channel count it lacks)."""
    for channels in (2, 1):
        try:
            plugin([], duration=0.01, sample_rate=sample_rate, num_channels=channels, reset=True)
            return channels
        except (ValueError, RuntimeError):
            continue
    raise ValueError(f"plugin {plugin.name!r} renders neither mono nor stereo audio")


def write_verified(plugin, index: int, value: float, name: str, params=None) -> None:
    """Set native parameter ``index`` to normalised ``value`` and check the read-back.

    ``params`` is ``plugin._parameters`` fetched after the last render (building that list
    costs ~0.5 ms on a DPF plugin, so a row of writes shares one). Parameter objects held from
    before a render are invalid: a reset re-creates the plugin instance.

    Raises:
        ParameterWriteError: the plugin ignored or changed the value (names the parameter).
    """
    param = (plugin._parameters if params is None else params)[index]
    param.raw_value = float(value)
    got = float(param.raw_value)
    if not abs(got - value) <= WRITE_TOLERANCE:  # NaN-safe: a NaN read-back fails too
        raise ParameterWriteError(
            f"plugin {plugin.name!r} did not take parameter {name!r} (native {param.name!r}): "
            f"wrote {value:.6f}, read back {got:.6f} (normalised); the plugin ignores or "
            f"limits this value")


class Voice:
    """A loaded instrument that renders the probe note for rows of normalised parameters.

    Args:
        plugin: A loaded pedalboard VST3 instrument.
        indices: Native parameter indices, one per column of a parameter row.
        names: Names of those columns (for error messages).
        probe: Dict of :class:`~synthmatch.synths.base.ProbeNote` fields.
        num_channels: Channels to render (downmixed to mono).
    """

    def __init__(self, plugin, indices: Sequence[int], names: Sequence[str], probe: dict,
                 num_channels: int):
        self.plugin = plugin
        self.indices = list(indices)
        self.names = list(names)
        self.sample_rate = int(probe["sample_rate"])
        self.duration_s = float(probe["render_duration_s"])
        self.num_samples = int(round(self.duration_s * self.sample_rate))
        self.num_channels = num_channels
        pitch, velocity = int(probe["midi_pitch"]), int(probe["velocity"])
        self.midi = [([0x90, pitch, velocity], 0.0),
                     ([0x80, pitch, 0], float(probe["note_duration_s"]))]

    def set_row(self, row: np.ndarray) -> None:
        params = self.plugin._parameters
        for index, name, value in zip(self.indices, self.names, row, strict=True):
            write_verified(self.plugin, index, float(value), name, params)

    def settle(self) -> None:
        """Render a short silent block: parameter changes land during a process call."""
        self.plugin([], duration=SETTLE_S, sample_rate=self.sample_rate,
                    num_channels=self.num_channels, reset=False)

    def render_row(self, row: np.ndarray) -> np.ndarray:
        """Normalised ``(P,)`` -> mono float32 ``(T,)``."""
        self.set_row(row)
        self.settle()
        audio = self.plugin(self.midi, duration=self.duration_s, sample_rate=self.sample_rate,
                            num_channels=self.num_channels, reset=True)
        mono = audio.mean(axis=0) if audio.shape[0] > 1 else audio[0]
        out = np.zeros(self.num_samples, dtype=np.float32)
        n = min(self.num_samples, mono.shape[-1])
        out[:n] = mono[:n]
        return out

    def render(self, rows: np.ndarray, items: Sequence[int] | None = None) -> np.ndarray:
        """Normalised ``(B, P)`` -> float32 ``(B, T)``; ``items`` numbers rows in errors."""
        out = np.zeros((len(rows), self.num_samples), dtype=np.float32)
        for i, row in enumerate(rows):
            try:
                out[i] = self.render_row(row)
            except ParameterWriteError as err:
                item = i if items is None else items[i]
                raise ParameterWriteError(f"batch item {item}: {err}") from None
        return out


def worker_main(conn, path: str, indices: list[int], names: list[str], probe: dict,
                num_channels: int, state: bytes | None) -> None:
    """Entry point of a worker process: load, report ready, then serve render requests.

    Protocol (over ``conn``): the worker sends ``("ready", None)`` or ``("error", message)``
    after loading; it then answers each ``("render", (rows, item_numbers))`` row by row with
    ``("row", audio)``, or ``("error", (exception_type, message))`` for the first row that
    fails (the rest are skipped), and exits on ``("close", None)`` or a closed pipe.
    """
    try:
        plugin = load_plugin(path)
        if state is not None:
            set_plugin_state(plugin, state)
        voice = Voice(plugin, indices, names, probe, num_channels)
        conn.send(("ready", None))
    except Exception as err:  # report any load failure to the parent, then exit
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):
            return
        if command == "close":
            return
        rows, items = payload
        for row, item in zip(rows, items, strict=True):
            try:
                answer = ("row", voice.render_row(row))
            except Exception as err:  # the parent re-raises it; the rest of the chunk is void
                detail = "".join(traceback.format_exception_only(type(err), err)).strip()
                answer = ("error", (type(err).__name__, f"batch item {item}: {detail}"))
            conn.send(answer)
            if answer[0] == "error":
                break

# A fresh worker imports pedalboard and loads the plugin before its first answer.
START_TIMEOUT_S = 60.0


def _main_guard_hint() -> str:
    """Why a fresh worker may have died at once: with the ``spawn`` start method a worker first
    imports the parent's main script, and a script that makes a synth with workers at its top
    level (no ``if __name__ == "__main__":`` guard) then tries to start workers of its own,
    which Python refuses."""
    import sys

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        source = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""
    if path and "__main__" not in source:
        return (f" at start-up: {path} has no `if __name__ == \"__main__\":` guard; worker "
                "processes start by importing the main script, so put the code that makes the "
                "synth (workers > 1) under that guard")
    return ""


class VST3WorkerError(RuntimeError):
    """A worker process crashed, hung or failed; the message names the affected batch items."""


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    ready: bool = False


class WorkerPool:
    """``num_workers`` processes, each running :func:`worker_main` with ``worker_args``.

    Workers start lazily on the first render and after a restart.
    """

    def __init__(self, num_workers: int, worker_args: tuple):
        self._ctx = mp.get_context("spawn")
        self._args = worker_args
        self._workers: list[_Worker | None] = [None] * num_workers

    @property
    def pids(self) -> list[int | None]:
        """Process ids of the workers (``None`` for one not started yet)."""
        return [w.process.pid if w is not None else None for w in self._workers]

    def _start(self, k: int) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=worker_main, args=(child, *self._args), daemon=True,
                                    name=f"synthmatch-vst3-worker-{k}")
        process.start()
        child.close()
        self._workers[k] = _Worker(process, parent)
        return self._workers[k]

    def _stop(self, k: int, graceful: bool) -> None:
        worker = self._workers[k]
        self._workers[k] = None
        if worker is None:
            return
        if graceful and worker.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(("close", None))
                worker.process.join(2.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(5.0)
        worker.conn.close()

    def render(self, rows: np.ndarray, timeout_s: float) -> np.ndarray:
        """Render normalised ``(B, P)`` rows split across the workers -> float32 ``(B, T)``.

        Workers answer row by row, so ``timeout_s`` bounds the silence of a worker (one row's
        render, plus :data:`START_TIMEOUT_S` for a fresh worker), whatever the batch size.

        Raises:
            ParameterWriteError: a worker's plugin rejected a parameter value.
            VST3WorkerError: a worker crashed, stayed silent past ``timeout_s`` or failed
                otherwise; it has been restarted.
        """
        try:
            return self._render(rows, timeout_s)
        except (ParameterWriteError, VST3WorkerError):
            raise
        except BaseException:
            self.close()  # e.g. Ctrl-C: answers still in flight must not reach the next render
            raise

    def _render(self, rows: np.ndarray, timeout_s: float) -> np.ndarray:
        parts = [p for p in np.array_split(np.arange(len(rows)), len(self._workers)) if len(p)]
        pending: dict[Connection, int] = {}
        last_heard: dict[int, float] = {}
        for k, items in enumerate(parts):
            worker = self._workers[k] or self._start(k)
            with contextlib.suppress(OSError, ValueError):  # a dead worker reads as EOF below
                worker.conn.send(("render", (rows[items], items.tolist())))
            pending[worker.conn] = k
            last_heard[k] = time.monotonic()

        def deadline(k: int) -> float:
            grace = 0.0 if self._workers[k].ready else START_TIMEOUT_S
            return last_heard[k] + timeout_s + grace

        received: dict[int, list[np.ndarray]] = {k: [] for k in range(len(parts))}
        failures: list[tuple[int, np.ndarray, object, bool]] = []  # k, items, reason, restart
        while pending:
            now = time.monotonic()
            for conn, k in list(pending.items()):
                if deadline(k) <= now:
                    limit = deadline(k) - last_heard[k]
                    failures.append((k, parts[k], f"was silent for {limit:.0f} s", True))
                    del pending[conn]
            if not pending:
                break
            soonest = min(deadline(k) for k in pending.values())
            for conn in wait(list(pending), timeout=max(soonest - now, 0.0)):
                k = pending[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    self._workers[k].process.join(1.0)
                    code = self._workers[k].process.exitcode
                    reason = f"crashed (exit code {code})"
                    if not self._workers[k].ready:
                        reason += _main_guard_hint()
                    failures.append((k, parts[k], reason, True))
                    del pending[conn]
                    continue
                last_heard[k] = time.monotonic()
                if kind == "ready":
                    self._workers[k].ready = True
                elif kind == "row":
                    received[k].append(payload)
                    if len(received[k]) == len(parts[k]):
                        del pending[conn]
                else:
                    failures.append((k, parts[k], payload, not self._workers[k].ready))
                    del pending[conn]

        if failures:
            self._raise(failures)
        return np.stack([row for k in range(len(parts)) for row in received[k]])

    def _raise(self, failures: list[tuple[int, np.ndarray, object, bool]]) -> None:
        lines = []
        write_errors = []
        for k, items, reason, restart in failures:
            pid = self._workers[k].process.pid if self._workers[k] else None
            if restart:
                self._stop(k, graceful=False)
                self._start(k)
                reason = f"{reason}; restarted"
            elif isinstance(reason, tuple):
                kind, detail = reason
                if kind == ParameterWriteError.__name__:
                    write_errors.append(detail)
                reason = detail
            lines.append(f"worker {k} (pid {pid}) {reason}; batch items {items.tolist()}")
        if write_errors and len(write_errors) == len(failures):
            raise ParameterWriteError("\n".join(write_errors))
        raise VST3WorkerError("VST3 rendering failed:\n  " + "\n  ".join(lines))

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for k in range(len(self._workers)):
            self._stop(k, graceful=True)
