#!/usr/bin/env bash
# The GPU suite, run on the GPU machine from the bundle that deploy/gpu-bundle.sh packs (it is
# copied there as bundle/run-gpu-suite.sh). Logs go to $OUT (or bundle/logs).
#
#   bundle/run-gpu-suite.sh              # default tier (about 3 minutes on an H200): every
#                                        # kernel against the CPU reference, the engine against
#                                        # the CPU engine for every recipe, determinism and
#                                        # exact resume at the 124m preset shape
#   TIER=long bundle/run-gpu-suite.sh    # the rest (about 9 minutes): the 1b determinism runs,
#                                        # FP8 loss parity on real text, the daemon on the GPU
#                                        # (demo job, recipe switch, kill -9 and exact resume,
#                                        # overhead with 8 streaming clients), the runs'
#                                        # TensorBoard files read by tensorboard, fp8d-bench and
#                                        # fp8d-gemm-bench; RUN_PEER=1 adds the PyTorch peer
#
# GTEST_FILTER replaces the tier's test filter; BENCH_ARGS are passed to fp8d-bench. Exit status
# is non-zero when anything failed. The last lines printed are a summary with wall times.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOGS="${OUT:-$HERE/logs}"
TIER="${TIER:-default}"
mkdir -p "$LOGS"
CUDNN_LIB=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib
export LD_LIBRARY_PATH="$HERE/lib:$CUDNN_LIB:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The text of the loss-parity and daemon tests (they say SKIPPED without it).
export FP8D_PARITY_TEXT="${FP8D_PARITY_TEXT:-$HERE/data/text.txt}"
export FP8D_BIN_DIR="$HERE/bin"

# Tests in the long tier: whole-model runs of minutes and the 1b preset.
LONG_TESTS='LossParity*:*Long*'
case "$TIER" in
  default) filter="-$LONG_TESTS" ;;
  long) filter="$LONG_TESTS" ;;
  *) echo "TIER must be default or long, not '$TIER'" >&2; exit 2 ;;
esac
filter="${GTEST_FILTER:-$filter}"

rc=0
summary=()
# step NAME COMMAND...: runs it with its output in $LOGS/NAME.log and records its wall time.
step() {
  local name="$1"; shift
  local t0=$SECONDS
  "$@" 2>&1 | tee "$LOGS/$name.log"
  local status=${PIPESTATUS[0]}
  summary+=("$(printf '%-22s %s  %4ds' "$name" "$([ "$status" -eq 0 ] && echo ok || echo FAILED)" \
    $((SECONDS - t0)))")
  [ "$status" -eq 0 ] || rc=1
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt"
suite_start=$SECONDS

# The whole test output goes to gpu_tests.full.log; the console (and gpu_tests.log) gets failures,
# the totals and the tables the long tests print.
gpu_tests() {
  "$HERE/bin/fp8d_gpu_tests" --gtest_color=no --gtest_filter="$filter" \
    --gtest_output="json:$LOGS/gpu_tests.json" 2>&1 | tee "$LOGS/gpu_tests.full.log" |
    grep -E '^\[ *(FAILED|PASSED|SKIPPED) |^\[==========\]|Failure|error|^(cuDNN|against|one seq|[0-9a-z]+B[0-9]+T)|parity|^ *(recipe|bf16|delayed|current|rowwise|blockwise)'
  return "${PIPESTATUS[0]}"
}
step gpu_tests gpu_tests

if [ "$TIER" = long ]; then
  step bench "$HERE/bin/fp8d-bench" ${BENCH_ARGS:-}

  # The demo job through the daemon on the GPU, followed with fp8ctl.
  DEMO_DIR="$(mktemp -d)"
  demo() {
    local dir="$DEMO_DIR"
    export FP8D_ADDR=127.0.0.1:7071
    "$HERE/bin/fp8d" --listen "$FP8D_ADDR" --state-dir "$dir/state" --data-root "$HERE/demo" \
      --engine cuda >"$LOGS/daemon.log" 2>&1 &
    local daemon=$!
    for _ in $(seq 50); do "$HERE/bin/fp8ctl" info >/dev/null 2>&1 && break; sleep 0.2; done
    "$HERE/bin/fp8ctl" info
    timeout 300 "$HERE/bin/fp8ctl" submit "$HERE/demo/demo.yaml" --set data.train=cookie.txt --watch
    local demo_rc=$?
    "$HERE/bin/fp8ctl" jobs
    kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null
    return $demo_rc
  }
  step demo demo

  # TensorBoard's own reader on the event files of the demo job (bf16) and of the demo in delayed
  # FP8 on the GPU, value by value against their logs.
  tensorboard_check() {
    export FP8D_ADDR=127.0.0.1:7072
    "$HERE/bin/fp8d" --listen "$FP8D_ADDR" --state-dir "$DEMO_DIR/fp8" --data-root "$HERE/demo" \
      --engine cuda >"$LOGS/daemon_fp8.log" 2>&1 &
    local daemon=$!
    for _ in $(seq 50); do "$HERE/bin/fp8ctl" info >/dev/null 2>&1 && break; sleep 0.2; done
    timeout 300 "$HERE/bin/fp8ctl" submit "$HERE/demo/demo.yaml" --set data.train=cookie.txt \
      --set recipe.name=delayed --watch >"$LOGS/demo_fp8.log" 2>&1
    local fp8_rc=$?
    kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null
    [ "$fp8_rc" -eq 0 ] || { echo "the delayed demo job failed: see $LOGS/demo_fp8.log"; return 1; }
    python3 "$HERE/tensorboard_check.py" --fp8d-metrics "$HERE/bin/fp8d-metrics" \
      "$DEMO_DIR"/state/jobs/*/ "$DEMO_DIR"/fp8/jobs/*/
  }
  step tensorboard_check tensorboard_check

  # bf16 -> delayed -> current -> bf16, kill -9 and exact resume, and the daemon's overhead with
  # 8 clients streaming metrics and amax, through fp8d --engine cuda.
  step daemon_gpu_tests "$HERE/bin/fp8d_integration_tests" --gtest_color=no \
    --gtest_filter='GpuRecipeSwitch*:GpuDaemonResume*:GpuDaemonOverhead*'

  # FP8 against BF16 cuBLASLt throughput at the model's GEMM shapes.
  step gemm_bench "$HERE/bin/fp8d-gemm-bench"

  if [ "${RUN_PEER:-0}" = 1 ]; then
    step peer python3 "$HERE/torch_peer.py"
  fi
fi

echo
echo "GPU suite, tier $TIER, on $(cut -d, -f1 "$LOGS/gpu.txt"): $((SECONDS - suite_start)) s"
printf '  %s\n' "${summary[@]}"
exit $rc
