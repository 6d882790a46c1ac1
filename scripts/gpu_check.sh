#!/usr/bin/env bash
# One-shot proof of the GPU code path on whatever Vulkan device this machine has.
#
#   scripts/gpu_check.sh [--quick] [--no-tests] [--budget SECONDS] [--out DIR]
#
# Runs from a source tree (building the binary where cargo is installed) or from an unpacked
# release bundle (scripts/bundle.sh; no cargo needed). First checks for a Vulkan loader and a
# driver manifest and says what to install or set when one is missing. Then runs the wgpu tests
# (source tree with cargo only) and times training steps with `train bench` on wgpu and flex:
# Graham's FMP net on CIFAR-10 at full size (k = 160, batch 50) and at k = 64, the FMP net on
# MNIST and the modern LeNet, next to scripts/torch_reference.py --device cuda where PyTorch has
# CUDA. Each line gives ms per step, images/s, achieved GFLOP/s and its share of the device's
# own 2048^3 matrix-product ceiling, and the first step apart (kernel compilation and tuning);
# each phase prints its wall time. Names the adapter and the compiler wgpu chose, and times wgpu
# with both compilers where a SPIR-V build is at hand (the bundle's train-spirv; from a source
# tree with cargo, built here): WGSL (the default build) and SPIR-V. Where wgpu sees several adapters, times the CIFAR-10 net split between all of them
# (--devices all) against one. Ends with one table of every timing, and writes
# DIR/gpu_check.json and DIR/gpu_check.svg (images per second).
#
# --quick: the FMP net on the MNIST sample, one step, for a software renderer (lavapipe) and CI.
# --no-tests: leave the wgpu tests out (CI has just run them with every other test).
# --budget SECONDS: start no new phase once this much time has passed since the binaries were
#   ready (default 420: the default run is sized to finish within 8 minutes on one H100); what
#   was timed is still tabled.
# CIFAR-10 is generated in its official format when absent (timing does not depend on pixel
# values).
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."

quick=false
tests=true
budget=420
out="$caller/gpu-check"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=true ;;
    --no-tests) tests=false ;;
    --budget) budget="$2"; shift ;;
    --out) out=$(cd "$caller" && realpath -m "$2"); shift ;;
    *) echo "usage: scripts/gpu_check.sh [--quick] [--no-tests] [--budget SECONDS] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"

# The Vulkan loader and a driver: wgpu finds no adapter without both.
# (grep without -q: under pipefail, ldconfig killed by an early-exiting grep would fail the test.)
loader=false
if { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep 'libvulkan.so.1 ' >/dev/null; then
  loader=true
fi
for lib in /usr/lib/x86_64-linux-gnu/libvulkan.so.1 /usr/lib64/libvulkan.so.1 /usr/lib/libvulkan.so.1; do
  [ -e "$lib" ] && loader=true
done
if ! $loader; then
  echo "no Vulkan loader (libvulkan.so.1): install it (Debian/Ubuntu: apt-get install libvulkan1)," >&2
  echo "or put a libvulkan.so.1 on LD_LIBRARY_PATH" >&2
  exit 1
fi
for manifest in ${VK_DRIVER_FILES:-} ${VK_ICD_FILENAMES:-}; do
  for file in ${manifest//:/ }; do
    if [ ! -e "$file" ]; then
      echo "the Vulkan driver manifest $file (VK_DRIVER_FILES / VK_ICD_FILENAMES) does not exist:" >&2
      echo "point it at the driver's .json (NVIDIA: nvidia_icd.json), or unset it" >&2
      exit 1
    fi
  done
done
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
  standard=$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json 2>/dev/null || true)
  if [ -z "$standard" ]; then
    # Containers often mount NVIDIA's driver where the loader does not look.
    mounted=$(ls /usr/local/nvidia/share/vulkan/icd.d/*.json /usr/local/nvidia/icd.d/*.json 2>/dev/null | head -1 || true)
    if [ -n "$mounted" ]; then
      echo "== using the driver manifest $mounted (VK_DRIVER_FILES)"
      export VK_DRIVER_FILES="$mounted" VK_ICD_FILENAMES="$mounted"
    else
      echo "no Vulkan driver manifest in /usr/share/vulkan/icd.d, /etc/vulkan/icd.d or" >&2
      echo "/usr/local/share/vulkan/icd.d: install the GPU's Vulkan driver (NVIDIA: the driver's" >&2
      echo "nvidia_icd.json; software: apt-get install mesa-vulkan-drivers), or set" >&2
      echo "VK_DRIVER_FILES=/path/to/nvidia_icd.json where the driver is mounted elsewhere" >&2
      exit 1
    fi
  fi
fi

# The binaries: the bundle's own, else the source tree's (built here where cargo is installed;
# the dev profile, which optimises, as the README's commands do; the SPIR-V build first, kept as
# train-spirv, so that debug/train is the default build).
if [ -x train ] && [ ! -f Cargo.toml ]; then
  train="$PWD/train"
  train_spirv="$PWD/train-spirv"
  cargo_here=false
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
  train="$CARGO_TARGET_DIR/debug/train"
  train_spirv="$CARGO_TARGET_DIR/debug/train-spirv"
  cargo_here=false
  if command -v cargo >/dev/null; then
    cargo_here=true
    cargo build -p train --features spirv
    cp "$train" "$train_spirv.tmp" && mv "$train_spirv.tmp" "$train_spirv"
    cargo build -p train
  elif [ ! -x "$train" ]; then
    echo "no $train and no cargo to build it: build it first (cargo build -p train)," >&2
    echo "or run this script from an unpacked release bundle (scripts/bundle.sh)" >&2
    exit 1
  fi
fi
echo "== $("$train" --version) ($train)"
if [ -x "$train_spirv" ]; then
  echo "== and the SPIR-V build: $train_spirv"
else
  echo "(no SPIR-V build at $train_spirv: wgpu is timed with WGSL alone)"
  train_spirv=""
fi
# The budget counts from here: building is not part of the check.
started=$SECONDS

# Wall time of each phase; false once the budget is spent (checked between phases: a phase that
# has started finishes).
phase_started=$SECONDS
phase() {
  echo "   ($(( SECONDS - phase_started )) s)"
  phase_started=$SECONDS
  if [ $(( SECONDS - started )) -ge "$budget" ]; then
    echo "== the budget of $budget s is spent: no further phase"
    return 1
  fi
}

# Data: the quick configs train on the MNIST sample shipped with the project; the full ones on
# MNIST and CIFAR-10 where CNN_DATA_DIR has them, else on CIFAR-10 generated in the official
# binary format.
data="${CNN_DATA_DIR:-$PWD/data}"
if ! $quick && [ ! -d "$data/cifar10/cifar-10-batches-bin" ] \
    && [ ! -f "$data/cifar10/cifar-10-binary.tar.gz" ]; then
  generated="$out/data"
  mkdir -p "$generated"
  if [ -d "$data/mnist" ]; then
    ln -sfn "$(cd "$data" && pwd)/mnist" "$generated/mnist"
  fi
  data="$generated"
  folder="$data/cifar10/cifar-10-batches-bin"
  if [ ! -f "$folder/test_batch.bin" ]; then
    echo "== generating CIFAR-10-format batches in $folder (no CIFAR-10 here)"
    mkdir -p "$folder"
    printf '%s\n' airplane automobile bird cat deer dog frog horse ship truck \
      > "$folder/batches.meta.txt"
    for batch in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
      perl -e 'srand(7); for (1..200) { print chr(int(rand(10))), pack("C*", map { int(rand(256)) } 1..3072) }' \
        > "$folder/$batch.bin"
    done
  fi
fi
export CNN_DATA_DIR="$data"

within_budget=true
if $tests; then
  echo "== wgpu tests"
  if $cargo_here; then
    cargo test --workspace -- wgpu
  else
    echo "NOT RUN: no cargo and source tree here; run the wgpu tests where the binary was built"
  fi
  phase || within_budget=false
fi

if $quick; then
  # One config, one step, warm-up included: on a software renderer the figures only show that
  # the path runs (shader compilation and autotuning take most of a first step there).
  configs=(fmp_quickstart)
  steps=1
  warmup=0
else
  configs=(fmp_cifar fmp_cifar_k64 fmp_mnist lenet_mnist)
  if [ ! -d "$CNN_DATA_DIR/mnist" ]; then
    echo "(no MNIST in $CNN_DATA_DIR: the MNIST nets are timed on the bundled sample configs)"
    configs=(fmp_cifar fmp_cifar_k64 fmp_quickstart quickstart)
  fi
  steps=5
  warmup=2
fi
torch=false
if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  torch=true
else
  echo "(no CUDA PyTorch here: the PyTorch reference is left out)"
fi

include=()
for config in "${configs[@]}"; do
  $within_budget || break
  echo "== $config"
  if $torch; then
    python3 scripts/torch_reference.py "configs/$config.toml" --device cuda \
      --steps "$steps" --warmup "$warmup" --json "$out/$config.torch.json"
    include+=(--include "$out/$config.torch.json")
  fi
  "$train" bench "configs/$config.toml" --backends wgpu,flex --steps "$steps" \
    --warmup "$warmup" --accumulate auto --json "$out/$config.json"
  include+=(--include "$out/$config.json")
  if [ -n "$train_spirv" ]; then
    echo "== $config, wgpu with SPIR-V"
    if "$train_spirv" bench "configs/$config.toml" --backends wgpu --steps "$steps" \
        --warmup "$warmup" --accumulate auto --json "$out/$config.spirv.json"; then
      include+=(--include "$out/$config.spirv.json")
    else
      echo "   (SPIR-V not timed: see the lines above)"
    fi
  fi
  if [ -z "${adapter:-}" ]; then
    adapter=$(grep -m1 -o '"device": "[^"]*wgpu<[^"]*"' "$out/$config.json" | cut -d'"' -f4 || true)
    echo "== adapter and compiler: ${adapter:-no wgpu adapter (see the wgpu line above)}"
  fi
  phase || within_budget=false
done

# Several GPUs: the headline net split between every wgpu adapter (Burn's multi-device step),
# at the smallest batch of at least 50 that splits evenly between them.
adapters=0
if ! $quick; then
  adapters=$("$train" devices --backends wgpu | grep -cE '^  [0-9]+  ' || true)
fi
if [ "$adapters" -ge 2 ] && $within_budget; then
  echo "== fmp_cifar on all $adapters wgpu adapters"
  batch=$(( (50 + adapters - 1) / adapters * adapters ))
  "$train" bench configs/fmp_cifar.toml --backends wgpu --devices all --batch-size "$batch" \
    --steps "$steps" --warmup "$warmup" --accumulate auto --json "$out/devices.json"
  include+=(--include "$out/devices.json")
  phase || true
elif $quick; then
  echo "(--quick leaves the several-device bench out)"
else
  echo "(the several-device bench needs two or more wgpu adapters; found ${adapters})"
fi

if [ ${#include[@]} -eq 0 ]; then
  echo "nothing was timed within the budget of $budget s: give a larger --budget" >&2
  exit 1
fi
echo "== every timing ($(( SECONDS - started )) s in all): $out/gpu_check.json, chart $out/gpu_check.svg"
"$train" bench configs/quickstart.toml --steps 0 "${include[@]}" \
  --json "$out/gpu_check.json" --chart "$out/gpu_check.svg"
if [ -z "${adapter:-}" ]; then
  echo "GPU check failed: wgpu found no adapter (see the wgpu lines above)" >&2
  exit 1
fi
echo "GPU check done"
