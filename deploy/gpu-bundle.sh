#!/usr/bin/env bash
# Builds the GPU binaries for Hopper (sm_90a) and packs them into bundle/: stripped binaries
# plus every shared library they need that the GPU machine lacks (gRPC, protobuf, abseil,
# spdlog, ...). glibc, libstdc++, libgcc and the CUDA, cuBLAS, cuDNN and NCCL libraries are
# left out: the GPU machine has them. bundle/run-gpu-suite.sh (deploy/run-gpu-suite.sh) runs
# the GPU suite there, in a default and a long tier, and writes logs to $OUT (or bundle/logs).
#
#   deploy/gpu-bundle.sh                  # build into build-gpu/, pack bundle/
#   BUILD_DIR=build-cuda deploy/gpu-bundle.sh
#   JOBS=2 deploy/gpu-bundle.sh
#   SKIP_BUILD=1 BUILD_DIR=build-cuda deploy/gpu-bundle.sh   # pack what is already built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
BUNDLE="$ROOT/bundle"
JOBS="${JOBS:-2}"
MAX_BUNDLE_MB=64
TARGETS=(fp8d_gpu_tests fp8d-bench)
OPTIONAL_TARGETS=(fp8d fp8ctl fp8d-gemm-bench fp8d_integration_tests fp8d-metrics)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
    -DCMAKE_CUDA_ARCHITECTURES=90a >/dev/null
  ninja -C "$BUILD_DIR" -j"$JOBS" "${TARGETS[@]}"
  for t in "${OPTIONAL_TARGETS[@]}"; do
    if ninja -C "$BUILD_DIR" -t targets all 2>/dev/null | grep -q "^$t:"; then
      ninja -C "$BUILD_DIR" -j"$JOBS" "$t"
      TARGETS+=("$t")
    fi
  done
else
  for t in "${OPTIONAL_TARGETS[@]}"; do
    [ -n "$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x | head -n1)" ] && TARGETS+=("$t")
  done
fi

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
for t in "${TARGETS[@]}"; do
  bin="$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x | head -n1)"
  [ -n "$bin" ] || { echo "gpu-bundle: built target $t not found" >&2; exit 1; }
  cp "$bin" "$BUNDLE/bin/$t"
  strip --strip-unneeded "$BUNDLE/bin/$t"
done

# Libraries the GPU machine provides itself.
SYSTEM_LIBS='^(linux-vdso|ld-linux|libc\.|libm\.|libpthread|libdl\.|librt\.|libutil|libstdc\+\+|libgcc_s|libcuda\.|libcudart|libcublas|libcublasLt|libcudnn|libnccl|libnvrtc|libnvJitLink)'
for b in "$BUNDLE"/bin/*; do
  ldd "$b" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if ! [[ "$name" =~ $SYSTEM_LIBS ]] && [ ! -e "$BUNDLE/lib/$name" ]; then
      cp -L "$path" "$BUNDLE/lib/$name"
      strip --strip-unneeded "$BUNDLE/lib/$name" 2>/dev/null || true
    fi
  done
done

cp "$ROOT/tests/bench/torch_peer.py" "$BUNDLE/"
# Reads the runs' TensorBoard event files with the tensorboard package of the GPU machine.
cp "$ROOT/tests/integration/tensorboard_check.py" "$BUNDLE/"
# The demo job and its data (Debian's fortune cookies), for the daemon run on the GPU.
mkdir -p "$BUNDLE/demo"
cp "$ROOT/deploy/jobs/demo.yaml" "$BUNDLE/demo/"
if [ -f /usr/share/games/fortunes/cookie ]; then
  cp /usr/share/games/fortunes/cookie "$BUNDLE/demo/cookie.txt"
fi

# Real English text for the FP8 loss-parity and recipe-switch tests (bundle/data/text.txt, read
# through FP8D_PARITY_TEXT): the GNU manuals in /usr/share/info, the fortune cookies (one
# paragraph per fortune; the ASCII-art files left out) and /usr/share/common-licenses, about
# 7.5 MB. Paragraphs are shuffled in a fixed order, so the tail the data loader holds out for
# validation is a sample of the same mix as the training part rather than the last source.
MAX_TEXT_MB=16
mkdir -p "$BUNDLE/data"
{
  for f in /usr/share/info/*.info*.gz; do [ -f "$f" ] && zcat "$f"; done
  for f in /usr/share/games/fortunes/*; do
    case "$(basename "$f")" in *.dat | *.u8 | art | ascii-art) continue ;; esac
    if [ -f "$f" ] && [ ! -L "$f" ]; then sed 's/^%$//' "$f"; fi
  done
  find /usr/share/common-licenses -maxdepth 1 -type f | sort | xargs -r cat
} | tr -d '\037\r' | awk 'BEGIN { RS = ""; ORS = "\0" } { print $0 "\n" }' \
  | shuf -z --random-source=<(yes fp8d) | tr '\0' '\n' >"$BUNDLE/data/text.txt"
text_bytes=$(stat -c %s "$BUNDLE/data/text.txt")
echo "gpu-bundle: data/text.txt is $text_bytes bytes"
if [ "$text_bytes" -lt $((2 * 1024 * 1024)) ] || [ "$text_bytes" -ge $((MAX_TEXT_MB * 1024 * 1024)) ]; then
  echo "gpu-bundle: data/text.txt should hold 2 to ${MAX_TEXT_MB} MiB of text; found $text_bytes bytes" >&2
  exit 1
fi

cp "$ROOT/deploy/run-gpu-suite.sh" "$BUNDLE/run-gpu-suite.sh"
chmod +x "$BUNDLE/run-gpu-suite.sh"

size_mb=$(du -sm "$BUNDLE" | cut -f1)
echo "gpu-bundle: $BUNDLE is ${size_mb} MiB ($(ls "$BUNDLE/bin" | tr '\n' ' '))"
if [ "$size_mb" -ge "$MAX_BUNDLE_MB" ]; then
  echo "gpu-bundle: bundle exceeds ${MAX_BUNDLE_MB} MiB" >&2
  exit 1
fi
