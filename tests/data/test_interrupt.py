"""A worker killed mid-shard: the run stops cleanly and the same command resumes it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synthmatch.data import (
    DatasetConfig,
    assign_splits,
    check_dataset,
    compute_stats,
    render_shard,
    shard_name,
)
from tests.data.helpers import EXPERIMENTS, ROOT, assert_same_shards, run_script, shard_arrays

# A shard takes about half a second (appended 16 rows at a time): it is still being written
# when the test sees its temporary file a few milliseconds after it appears.
N, SHARD_SIZE = 1024, 256
ARGS = ["--synth", "subtractive", "--n", N, "--shard-size", SHARD_SIZE, "--render-batch", 16,
        "--workers", 2, "--no-progress"]
TMP = re.compile(r"^\.(shard-\d{5}\.h5)\.tmp\.(\d+)$")


def wait_for(condition, timeout: float, process: subprocess.Popen):
    """Poll ``condition()`` until it returns something truthy; fail on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process.poll() is not None:
            pytest.fail(f"make_dataset.py exited early:\n{process.communicate()[1]}")
        time.sleep(0.02)
    process.kill()
    pytest.fail("timed out waiting for the run to reach the point of the test")


def assert_close(a, b, path: str = "stats") -> None:
    """Nested JSON values equal, numbers within 1e-4 relative (the log-mels they summarise
    may differ by one float16 step: see ``assert_same_shards``)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for key in a:
            assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), path
    else:
        assert a == b, path


def temporary_files(root: Path) -> list[tuple[str, int]]:
    if not root.exists():
        return []
    return [(m.group(1), int(m.group(2))) for m in map(TMP.match, (p.name for p in
                                                                   root.iterdir())) if m]


@pytest.mark.slow
def test_killed_worker_loses_nothing_and_the_same_command_resumes(tmp_path):
    root = tmp_path / "interrupted"
    command = [sys.executable, str(EXPERIMENTS / "make_dataset.py"), *map(str, ARGS),
               "--out", str(root)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # Shards 0 and 1 go to the two workers first: a temporary file of shard 2 or 3 means
        # an earlier shard is complete (something to keep) and this one has just started.
        def later_shard():
            return [(name, pid) for name, pid in temporary_files(root) if name >= shard_name(2)]

        victim, pid = wait_for(later_shard, 120, process)[0]
        os.kill(pid, signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    kept = sorted(p.name for p in root.glob("shard-*.h5"))
    mtimes = {name: (root / name).stat().st_mtime_ns for name in kept}
    assert f"{len(kept)} of 4 shards complete; run the same command again to resume" in stderr
    assert "worker process died" in stderr
    assert victim not in kept and 1 <= len(kept) < 4
    assert not (root / "splits.json").exists()

    resumed = run_script("make_dataset.py", *ARGS, "--out", root, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert temporary_files(root) == []
    assert {name: (root / name).stat().st_mtime_ns for name in kept} == mtimes
    # The uninterrupted reference, rendered here shard by shard (spares a second pool start).
    reference = tmp_path / "reference"
    reference.mkdir()
    config = DatasetConfig("subtractive", n=N, shard_size=SHARD_SIZE, render_batch=16)
    assert json.loads((root / "dataset.json").read_text())["config"] == config.to_dict()
    for index in range(config.num_shards):
        render_shard(config.to_json(), str(reference), index)
    assert_same_shards(root, reference)
    arrays = shard_arrays(root)
    assert sorted(arrays) == [shard_name(i) for i in range(4)]
    params = np.concatenate([arrays[n]["params"] for n in sorted(arrays)])
    assert params.shape[0] == N and len(np.unique(params, axis=0)) == N
    splits = assign_splits(config)
    assert json.loads((root / "splits.json").read_text()) == splits
    names = list(config.make_synth().params.names)
    stats = compute_stats(reference, config, splits["train"], names)
    assert_close(json.loads((root / "stats.json").read_text()), stats)
    assert check_dataset(root).ok
