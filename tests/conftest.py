"""Shared test fixtures and helpers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# Popen keyword arguments for a child that a test stops with SIGINT: the child takes Ctrl-C
# as from a terminal even where the suite itself runs with it ignored (a background job of a
# shell without job control, whose children inherit the ignore).
INTERRUPTIBLE = {"preexec_fn": _default_sigint}


def peak_frequency(audio: torch.Tensor, sample_rate: int) -> float:
    """Frequency (Hz) of the largest magnitude bin of a 1-D signal (Hann-windowed)."""
    x = audio.detach().cpu().double().numpy()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / sample_rate)[np.argmax(spectrum)])


def band_energy(audio: torch.Tensor, sample_rate: int, lo: float, hi: float) -> float:
    """Energy of a 1-D signal between ``lo`` and ``hi`` Hz."""
    x = audio.detach().cpu().double().numpy()
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    return float(spectrum[(f >= lo) & (f < hi)].sum())


def plugin_path(name: str) -> Path:
    """The test VST3 plugin ``name`` built by scripts/build_test_plugins.sh.

    Missing: fails in CI (which must build it first), skips elsewhere with the build command.
    """
    root = Path(os.environ.get("SYNTHMATCH_PLUGIN_DIR",
                               Path.home() / ".cache" / "synthmatch" / "plugins"))
    path = root / f"{name}.vst3"
    if not path.exists():
        message = f"test plugin {path} is missing; build it with scripts/build_test_plugins.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI must run the build script before the tests)")
        pytest.skip(message)
    return path


def preset(synth, batch_size: int = 1, **real: float) -> torch.Tensor:
    """Normalised ``(B, P)`` batch: the synth's defaults with some parameters in real units."""
    u = synth.params.defaults(batch_size)
    for name, value in real.items():
        x = torch.tensor(value, dtype=torch.float64)
        u[:, synth.params.index(name)] = synth.params[name].to_normalized(x)
    return u


def spectrum(audio: torch.Tensor) -> torch.Tensor:
    """Magnitude spectrum of ``(T,)`` audio through a Hann window (bin = sr / T Hz)."""
    window = torch.hann_window(audio.shape[-1], periodic=False, dtype=torch.float64)
    return torch.fft.rfft(audio.double() * window).abs()


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests run in parallel on small CI machines; one thread each avoids oversubscription.
    torch.set_num_threads(1)
    yield
