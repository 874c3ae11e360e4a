#!/usr/bin/env bash
# What the test suite needs beyond the Python packages: a headless Chromium and its WebDriver
# (the browser tests of the report and the web app, from Debian's archive) and the test VST3
# instruments (scripts/build_test_plugins.sh). Each part does nothing when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing chromium and chromium-driver"
    apt-get update -qq
    apt-get install -y --no-install-recommends chromium chromium-driver
fi
bash scripts/build_test_plugins.sh

