#!/usr/bin/env bash
# Builds the release bundle a GPU machine needs: no Rust, no network.
#
#   scripts/bundle.sh [--out DIR]
#
# Writes DIR/cnn-course-<version>-x86_64-linux.tar.xz (default DIR: dist/): the stripped `train`
# binary, configs/, samples/, the GPU check's scripts and a README of its own. It runs on an
# x86-64 Linux whose glibc is at least the build machine's, with a Vulkan loader (libvulkan1) and
# a driver for wgpu; the CPU backends need neither.
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    *) echo "usage: scripts/bundle.sh [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

# The largest bundle a GPU visit carries comfortably (the device machines take 64 MiB in all).
max_bytes=$((40 * 1000 * 1000))

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p train
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="cnn-course-$version-x86_64-linux"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/scripts" "$out"

cp "$CARGO_TARGET_DIR/release/train" "$root/train"
strip "$root/train"
cp -r configs samples "$root/"
cp scripts/gpu_check.sh scripts/torch_reference.py scripts/cnn_models.py "$root/scripts/"
cp scripts/bundle_readme.md "$root/README.md"
glibc=$(ldd --version | sed -n '1s/.* //p')
echo "built $(date -u +%Y-%m-%d) from $(git rev-parse --short HEAD 2>/dev/null || echo 'a source tree'), glibc $glibc" \
  > "$root/BUILD"

archive="$out/$name.tar.xz"
tar -C "$stage" -cf - "$name" | xz -9 -T0 > "$archive.tmp"
mv "$archive.tmp" "$archive"
bytes=$(stat -c %s "$archive")
echo "$archive: $((bytes / 1000000)) MB (train $(($(stat -c %s "$root/train") / 1000000)) MB stripped), needs glibc >= $glibc"
if [ "$bytes" -gt "$max_bytes" ]; then
  echo "the bundle is over $((max_bytes / 1000000)) MB" >&2
  exit 1
fi
