#!/usr/bin/env bash
# What the test suite needs beyond the Python packages: a headless Chromium and its WebDriver
# (the browser tests of the report and the web app, from Debian's archive) and the test VST3
# instruments (scripts/build_test_plugins.sh), and librosa's compiled pitch tracker. Each part
# does nothing when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing chromium and chromium-driver"
    apt-get update -qq
    apt-get install -y --no-install-recommends chromium chromium-driver
fi
bash scripts/build_test_plugins.sh

# librosa's pitch tracker (synthmatch match --note auto) compiles numba gufuncs into a cache
# on disk. Two pytest workers compiling them at once can leave a mismatched pair of cache files
# that makes every later pitch estimate segfault (numba/numba#10128, open upstream). Compile
# them once here, before the workers start.
.venv/bin/python -c "import numpy as np; from synthmatch.app.targets import estimate_midi_pitch
estimate_midi_pitch(np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32), 16000)"
