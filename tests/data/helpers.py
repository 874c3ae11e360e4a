"""Helpers shared by the dataset tests: scripts as subprocesses or modules, shard readers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"

h5py = pytest.importorskip("h5py")


def run_script(name: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``experiments/<name>`` with this interpreter; output captured as text."""
    return subprocess.run([sys.executable, str(EXPERIMENTS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def load_script(name: str):
    """Import ``experiments/<name>`` as a module (its ``main`` is not run)."""
    module_name = f"experiments_{name.removesuffix('.py')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXPERIMENTS / name)
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks the module up by name while building Args.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def read_shard(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Every dataset of a shard file and its attributes."""
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f}, dict(f.attrs)


def shard_arrays(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{shard file name: {dataset: array}}`` for every final shard of ``root``."""
    return {p.name: read_shard(p)[0] for p in sorted(root.glob("shard-*.h5"))}


def assert_same_shards(a: Path, b: Path) -> None:
    """The two directories hold the same shard files with the same rows: parameters and
    audio bit-identical, log-mels within one float16 step.

    The float32 log-mel of the same audio can differ in its last bits between processes (the
    FFT and matmul kernels take different paths with other memory alignment or thread
    counts); rounding to float16 then turns such a difference into one step (2**-10 relative)
    in a few values.
    """
    left, right = shard_arrays(a), shard_arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert sorted(left[name]) == sorted(right[name]), name
        for field in left[name]:
            x, y = left[name][field], right[name][field]
            if field == "mel":
                np.testing.assert_allclose(x.astype(np.float32), y.astype(np.float32),
                                           rtol=2.0 ** -9, atol=1e-3, err_msg=f"{name}/{field}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{name}/{field}")
