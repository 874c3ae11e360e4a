#!/usr/bin/env bash
# Build the test VST3 plugins from Debian's dpf-plugins source package: the instruments
# Nekobi and Kars, and the effect PingPongPan.
#
# The plugins are cached outside git, in ${SYNTHMATCH_PLUGIN_DIR:-$HOME/.cache/synthmatch/plugins};
# a second run finds them there and does nothing. The machine's own apt configuration is left
# untouched: the source index is fetched into a temporary directory with its own sources file.
#
# Usage: scripts/build_test_plugins.sh        (prints the plugin directory)
set -euo pipefail

# PingPongPan is a small effect: the tests use it to check that effects are refused.
PLUGINS=(Nekobi Kars PingPongPan)
DEST="${SYNTHMATCH_PLUGIN_DIR:-$HOME/.cache/synthmatch/plugins}"

have_all() {
    local p
    for p in "${PLUGINS[@]}"; do
        [[ -d "$DEST/$p.vst3" ]] || return 1
    done
}

if have_all; then
    echo "test plugins already built in $DEST"
    exit 0
fi

# Build tools: only what the DPF makefiles need without OpenGL/Cairo UIs.
missing=()
for tool in gcc:gcc g++:g++ make:make xz:xz-utils pkg-config:pkg-config; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if (( ${#missing[@]} )); then
    echo "installing build tools: ${missing[*]}"
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/parts" "$TMP/lists/partial" "$TMP/src"
: > "$TMP/sources.list"
SYS_SOURCES=/etc/apt/sources.list.d/debian.sources
if [[ ! -f "$SYS_SOURCES" ]]; then
    echo "error: $SYS_SOURCES not found (this script expects Debian's deb822 sources)" >&2
    exit 1
fi
sed 's/^Types:.*deb$/Types: deb-src/' "$SYS_SOURCES" > "$TMP/parts/debian-src.sources"
APT_OPTS=(-o "Dir::Etc::SourceList=$TMP/sources.list"
          -o "Dir::Etc::SourceParts=$TMP/parts"
          -o "Dir::State::Lists=$TMP/lists")

apt-get "${APT_OPTS[@]}" update -qq
# apt exits non-zero because Debian's packaging tarball (.debian.tar.xz) answers 404; the
# upstream .orig tarball holds everything we need, so judge success by that file.
(cd "$TMP/src" && apt-get "${APT_OPTS[@]}" source --download-only dpf-plugins) || true
ORIG="$(find "$TMP/src" -maxdepth 1 -name 'dpf-plugins_*.orig.tar.xz' | head -n 1)"
if [[ -z "$ORIG" ]]; then
    echo "error: dpf-plugins .orig.tar.xz was not downloaded" >&2
    exit 1
fi

tar -xJf "$ORIG" -C "$TMP/src"
TREE="$(find "$TMP/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
mkdir -p "$DEST"
for p in "${PLUGINS[@]}"; do
    make -C "$TREE/plugins/$p" vst3 HAVE_OPENGL=false HAVE_CAIRO=false -j2 >/dev/null
    rm -rf "${DEST:?}/$p.vst3"
    cp -r "$TREE/bin/$p.vst3" "$DEST/"
done

echo "test plugins built in $DEST"
