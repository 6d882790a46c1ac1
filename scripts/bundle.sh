#!/usr/bin/env bash
# Builds the release bundle a GPU machine needs: no Rust, no network.
#
#   scripts/bundle.sh [--out DIR]
#
# Writes DIR/cnn-course-<version>-x86_64-linux.tar.xz (default DIR: dist/): two stripped builds
# of `train` (`train` compiles wgpu's kernels to WGSL, `train-spirv` to SPIR-V, so that the GPU
# check times both compilers on the same adapter; docs/gpu.md), configs/, samples/, the trained
# weights/, the GPU check's scripts and a README of its own. It runs on an
# x86-64 Linux whose glibc is at least the build machine's, with a Vulkan loader (libvulkan1) and
# a driver for wgpu; the CPU backends need neither.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."

out=$PWD/dist
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$(cd "$caller" && realpath -m "$2"); shift ;;
    *) echo "usage: scripts/bundle.sh [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

# The largest bundle a GPU visit carries with room for the Vulkan loader beside it (the device
# machines take 64 MiB in all).
max_bytes=$((56 * 1000 * 1000))

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="cnn-course-$version-x86_64-linux"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/scripts" "$out"

# The dev profile, which optimises (Cargo.toml): the build the README's commands and the tests
# use, so that after them the default build only links. Cargo names its folder "debug". The
# SPIR-V build first, so that debug/train is the default build afterwards (cargo keeps both
# builds' dependencies: switching back only links).
cargo build -p train --features spirv
cp "$CARGO_TARGET_DIR/debug/train" "$root/train-spirv"
cargo build -p train
cp "$CARGO_TARGET_DIR/debug/train" "$root/train"
strip "$root/train" "$root/train-spirv"
cp -r configs samples weights "$root/"
cp scripts/gpu_check.sh scripts/torch_reference.py scripts/cnn_models.py "$root/scripts/"
cp scripts/bundle_readme.md "$root/README.md"
glibc=$(ldd --version | sed -n '1s/.* //p')
echo "built $(date -u +%Y-%m-%d) from $(git rev-parse --short HEAD 2>/dev/null || echo 'a source tree'), glibc $glibc" \
  > "$root/BUILD"

archive="$out/$name.tar.xz"
# The two builds share most of their code: one xz stream whose dictionary spans both (a third
# smaller than two separate ones; unpacking needs 256 MiB of memory).
(cd "$stage" && tar -cf - "$name/train" "$name/train-spirv" \
  $(find "$name" -mindepth 1 -maxdepth 1 ! -name train ! -name train-spirv | sort)) \
  | xz -T1 --lzma2=preset=9,dict=256MiB > "$archive.tmp"
mv "$archive.tmp" "$archive"
bytes=$(stat -c %s "$archive")
echo "$archive: $((bytes / 1000000)) MB (train $(($(stat -c %s "$root/train") / 1000000)) MB, train-spirv $(($(stat -c %s "$root/train-spirv") / 1000000)) MB stripped), needs glibc >= $glibc"
if [ "$bytes" -gt "$max_bytes" ]; then
  echo "the bundle is over $((max_bytes / 1000000)) MB" >&2
  exit 1
fi
