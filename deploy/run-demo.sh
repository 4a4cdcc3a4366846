#!/usr/bin/env bash
# Installs the dependencies, builds fp8d (RelWithDebInfo) into build/ and runs the demo the way
# the product is used: start the fp8d daemon, submit the demo job with fp8ctl, watch it train
# live, and pull its final checkpoint. The job is a tiny Llama-style model learning English byte
# by byte from Debian's fortune cookies, on the CPU (or the GPU when there is one).
# Extra arguments go to `fp8ctl submit`, e.g. --set recipe.name=delayed.
# FP8D_DEMO_PORT picks the loopback port (default 7070); the dashboard and /metrics are on the
# next one (http://127.0.0.1:7071/).
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)" --target fp8d fp8ctl

port="${FP8D_DEMO_PORT:-7070}"
export FP8D_ADDR="127.0.0.1:${port}"
mkdir -p runs/demo
build/server/fp8d --listen "${FP8D_ADDR}" --http-listen "127.0.0.1:$((port + 1))" \
  --state-dir runs/fp8d-state --data-root /usr/share/games/fortunes --engine auto \
  > runs/demo/fp8d.log 2>&1 &
daemon=$!
# SIGTERM checkpoints whatever still runs and exits cleanly; the state dir keeps every job.
trap 'kill -TERM "${daemon}" 2>/dev/null && wait "${daemon}" || true' EXIT

for _ in $(seq 100); do
  build/client/fp8ctl info > /dev/null 2>&1 && break
  kill -0 "${daemon}" 2>/dev/null || { cat runs/demo/fp8d.log; exit 1; }
  sleep 0.1
done
build/client/fp8ctl info

job=$(build/client/fp8ctl submit deploy/jobs/demo.yaml "$@" | awk '/^submitted/ {print $2}')
echo "dashboard: http://127.0.0.1:$((port + 1))/"
echo "TensorBoard: tensorboard --logdir runs/fp8d-state/jobs"
echo "watching ${job} (Ctrl-C ends the demo; the daemon checkpoints the job on the way out)"
build/client/fp8ctl watch "${job}"
build/client/fp8ctl checkpoint pull "${job}" --out runs/demo/demo.safetensors
