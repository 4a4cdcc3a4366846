#!/usr/bin/env bash
# Installs the dependencies, builds fp8d (RelWithDebInfo) into build/ and trains the demo job: a tiny
# Llama-style model learning English byte by byte from Debian's fortune cookies, on the CPU,
# with live progress. Extra arguments go to fp8d-train, e.g. --set recipe.name=delayed.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)" --target fp8d-train
exec build/server/fp8d-train deploy/jobs/demo.yaml --engine auto --out runs/demo "$@"
