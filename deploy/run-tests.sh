#!/usr/bin/env bash
# Installs the dependencies, builds everything into build/ and runs the whole test suite:
# core unit tests, daemon + client integration tests over loopback and, when nvcc is present,
# the GPU tests (each of which reports SKIPPED on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j2
