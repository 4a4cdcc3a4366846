// fp8d-gemm-bench: FP8 against BF16 through cuBLASLt, in two modes.
//
// Default: GEMM throughput at the Linear shapes of the 124m and 1b models (forward,
// Y[tokens, out] = X[tokens, in] · W[out, in]^T, TN layout). Per shape it prints the time and
// TFLOP/s of
//   bf16       GemmRunner, BF16 in and out (the engine's BF16 path)
//   fp8        Fp8GemmRunner, E4M3 x E4M3 -> BF16, per-tensor scales, fast accumulation
//   fp8-split  the same without fast accumulation (what dgrad/wgrad use)
//   fp8-1x128  1x128 blockwise scales (VEC128_32F), no fast accumulation
// and the speed-up of fp8 over bf16.
//
// --linear-sweep: one Linear layer's whole training work per step, as the CUDA engine runs it,
// over a grid of sizes, and from it each recipe's automatic minimum GEMM volume m * n * k (the table in
// core/fp8_gemm_threshold.cc, recorded in tests/bench/RESULTS.md):
//   bf16   forward (BF16 out), dgrad (BF16 out) and wgrad accumulated into FP32, through
//          GemmRunner with kernels/cuda_engine.cc's Linear/LinearBackward configs;
//   fp8    Fp8Linear::CastWeights from the FP32 master (once per step, as the engine does),
//          Forward and Backward, with the options the delayed, current, rowwise and blockwise
//          (1x128) recipes imply (Fp8LinearOptionsFromRecipe of the default recipe).
// Shapes: m tokens in {2048, 8192, 16384}; (n, k) = (d, d), (d, 4d) and (4d, d) for d in
// kMinGemmDimGrid. Not counted on either side: the optimizer's BF16 weight copy (written for
// every layer whatever its precision) and the once-per-step delayed-scaling update (one launch
// for all layers).
//
//   fp8d-gemm-bench                   # GEMM table, both models at 16384 tokens
//   fp8d-gemm-bench --tokens 4096 --iters 100
//   fp8d-gemm-bench --linear-sweep    # sized to take well under 2 minutes on an H100
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fp8_gemm_threshold.h"
#include "core/recipe_config.h"
#include "fp8d/v1/recipe.pb.h"
#include "kernels/fp8_cast.cuh"
#include "kernels/fp8_linear.h"
#include "kernels/gemm.h"
#include "kernels/gemm_fp8.h"

namespace {

using fp8d::kernels::Fp8CastStats;
using fp8d::kernels::Fp8GemmConfig;
using fp8d::kernels::Fp8GemmRunner;
using fp8d::kernels::Fp8Linear;
using fp8d::kernels::Fp8LinearOptions;
using fp8d::kernels::Fp8LinearScales;
using fp8d::kernels::Fp8ScaleMode;
using fp8d::kernels::GemmConfig;
using fp8d::kernels::GemmRunner;
using fp8d::kernels::GemmShape;

struct LayerShape {
  const char* model;
  const char* name;
  int64_t n, k;  // out, in features
};

// d_model, q + 2 kv heads, SwiGLU hidden and the padded vocabulary of core/model_config.cc.
const LayerShape kShapes[] = {
    {"124m", "qkv", 2304, 768},   {"124m", "attn_out", 768, 768},
    {"124m", "mlp_up", 2048, 768}, {"124m", "mlp_down", 768, 2048},
    {"124m", "lm_head", 50304, 768},
    {"1b", "qkv", 3072, 2048},    {"1b", "attn_out", 2048, 2048},
    {"1b", "mlp_up", 8192, 2048}, {"1b", "mlp_down", 2048, 8192},
    {"1b", "lm_head", 50304, 2048},
};

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}

template <typename Fn>
double TimeMs(Fn&& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "cudaEventCreate");
  Check(cudaEventCreate(&stop), "cudaEventCreate");
  Check(cudaEventRecord(start), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) fn();
  Check(cudaEventRecord(stop), "cudaEventRecord");
  Check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0.f;
  Check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / iters;
}

void Die(const absl::Status& st) {
  std::fprintf(stderr, "%s\n", st.ToString().c_str());
  std::exit(1);
}

void OrDie(const absl::Status& st) {
  if (!st.ok()) Die(st);
}

// The forward GEMM alone at the model shapes (the default mode).
int RunGemmTable(int64_t tokens, int iters) {
  const int warmup = 10;
  cudaDeviceProp prop{};
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");

  int64_t max_n = 0, max_k = 0;
  for (const LayerShape& s : kShapes) {
    max_n = std::max(max_n, s.n);
    max_k = std::max(max_k, s.k);
  }
  void *workspace, *x16, *w16, *y, *x8, *w8, *scales;
  Check(cudaMalloc(&workspace, fp8d::kernels::kGemmWorkspaceBytes), "cudaMalloc");
  Check(cudaMalloc(&x16, tokens * max_k * 2), "cudaMalloc");
  Check(cudaMalloc(&w16, max_n * max_k * 2), "cudaMalloc");
  Check(cudaMalloc(&y, tokens * max_n * 2), "cudaMalloc");
  Check(cudaMalloc(&x8, tokens * max_k), "cudaMalloc");
  Check(cudaMalloc(&w8, max_n * max_k), "cudaMalloc");
  const int64_t max_scales = std::max(tokens, max_n) * fp8d::kernels::Fp8KBlocks(max_k);
  Check(cudaMalloc(&scales, max_scales * sizeof(float)), "cudaMalloc");
  // Values do not change the speed; keep them finite: BF16 0x3F3F ~ 0.75, E4M3 0x38 = 1.
  Check(cudaMemset(x16, 0x3F, tokens * max_k * 2), "cudaMemset");
  Check(cudaMemset(w16, 0x3F, max_n * max_k * 2), "cudaMemset");
  Check(cudaMemset(x8, 0x38, tokens * max_k), "cudaMemset");
  Check(cudaMemset(w8, 0x38, max_n * max_k), "cudaMemset");
  {
    std::vector<float> ones(max_scales, 1.f);
    Check(cudaMemcpy(scales, ones.data(), max_scales * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy");
  }

  auto bf16 = GemmRunner::Create(workspace, fp8d::kernels::kGemmWorkspaceBytes);
  auto fp8 = Fp8GemmRunner::Create(workspace, fp8d::kernels::kGemmWorkspaceBytes);
  if (!bf16.ok()) Die(bf16.status());
  if (!fp8.ok()) Die(fp8.status());

  std::printf("fp8d-gemm-bench on %s, tokens=%lld, %d iterations (ms per GEMM, TFLOP/s)\n",
              prop.name, static_cast<long long>(tokens), iters);
  std::printf("%-5s %-9s %6s %6s | %-16s | %-16s | %-16s | %-16s | %s\n", "model", "layer", "n",
              "k", "bf16", "fp8", "fp8-split", "fp8-1x128", "fp8/bf16");
  for (const LayerShape& s : kShapes) {
    const GemmShape shape{tokens, s.n, s.k};
    const double flops = 2.0 * tokens * s.n * s.k;
    GemmConfig bc;
    bc.trans_b = true;
    const double bf16_ms = TimeMs(
        [&] {
          const absl::Status st = (*bf16)->Run(bc, shape, x16, w16, y, nullptr);
          if (!st.ok()) Die(st);
        },
        warmup, iters);
    auto fp8_ms = [&](Fp8ScaleMode mode, bool fast) {
      Fp8GemmConfig fc;
      fc.scale_mode = mode;
      fc.fast_accum = fast;
      fc.x_scale_inv = static_cast<const float*>(scales);
      fc.w_scale_inv = static_cast<const float*>(scales);
      return TimeMs(
          [&] {
            const absl::Status st =
                (*fp8)->Run(fc, shape, static_cast<const uint8_t*>(x8),
                            static_cast<const uint8_t*>(w8), y, nullptr);
            if (!st.ok()) Die(st);
          },
          warmup, iters);
    };
    const double fast_ms = fp8_ms(Fp8ScaleMode::kTensor, true);
    const double split_ms = fp8_ms(Fp8ScaleMode::kTensor, false);
    const double block_ms = fp8_ms(Fp8ScaleMode::kBlock1x128, false);
    auto tf = [&](double ms) { return flops / (ms * 1e-3) / 1e12; };
    std::printf(
        "%-5s %-9s %6lld %6lld | %7.4f %7.1f | %7.4f %7.1f | %7.4f %7.1f | %7.4f %7.1f | %.2fx\n",
        s.model, s.name, static_cast<long long>(s.n), static_cast<long long>(s.k), bf16_ms,
        tf(bf16_ms), fast_ms, tf(fast_ms), split_ms, tf(split_ms), block_ms, tf(block_ms),
        bf16_ms / fast_ms);
  }
  Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// --linear-sweep

// What each measurement times, per iteration: one optimizer step of one Linear layer with one
// micro-batch. Each (shape, variant) runs kSweepWarmup untimed steps (plans, clocks), then
// kSweepBatches timed batches of steps, interleaved across the variants so drift in clocks hits
// all of them alike; a variant's time is the median batch's mean. A batch has enough steps to
// last about kSweepBatchMs (at least kSweepMinSteps).
constexpr int kSweepWarmup = 3;
constexpr int kSweepBatches = 5;
constexpr double kSweepBatchMs = 10.0;
constexpr int kSweepMinSteps = 3;
constexpr int kSweepMaxSteps = 200;
constexpr int64_t kSweepTokens[] = {2048, 8192, 16384};
// (n, k) = (a * d, b * d): square (attention projections), d out of 4d in (like mlp.down) and
// 4d out of d in (like mlp.gate_up).
constexpr int kSweepAspects[][2] = {{1, 1}, {1, 4}, {4, 1}};
// FP8 at least this fast relative to BF16 counts as "not slower".
constexpr double kSweepMinSpeedup = 1.0;

struct SweepScaling {
  const char* name;    // the Fp8LinearScaling, as printed
  const char* recipe;  // the recipe whose default options give it
};
constexpr SweepScaling kSweepScalings[] = {
    {"delayed", "delayed"}, {"current", "current"}, {"rowwise", "rowwise"}, {"1x128", "blockwise"}};
constexpr int kSweepScalingCount = sizeof(kSweepScalings) / sizeof(kSweepScalings[0]);

struct SweepRow {
  GemmShape shape;  // m tokens, n out features, k in features
  double bf16_ms = 0;
  double fp8_ms[kSweepScalingCount] = {};
  int64_t min_dim() const { return std::min({shape.m, shape.n, shape.k}); }
  int64_t volume() const { return shape.m * shape.n * shape.k; }
  double speedup(int s) const { return bf16_ms / fp8_ms[s]; }
};

// Fills `bytes` of device memory by tiling a device-resident pattern.
void Tile(void* dst, size_t bytes, const void* pattern, size_t pattern_bytes) {
  for (size_t off = 0; off < bytes; off += pattern_bytes) {
    Check(cudaMemcpy(static_cast<char*>(dst) + off, pattern, std::min(pattern_bytes, bytes - off),
                     cudaMemcpyDeviceToDevice),
          "cudaMemcpy");
  }
}

// Uniform values in [-1, 1) as FP32, and as BF16 (the FP32 bits' upper half), from a fixed LCG:
// random operands keep the tensor cores' power draw (and so their clocks) realistic.
struct RandomPatterns {
  void* f32 = nullptr;
  void* bf16 = nullptr;
  size_t f32_bytes = 0, bf16_bytes = 0;
};
RandomPatterns MakeRandomPatterns(size_t count) {
  std::vector<float> f(count);
  std::vector<uint16_t> h(count);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < count; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    f[i] = static_cast<float>(state >> 40) / static_cast<float>(1 << 23) - 1.f;
    uint32_t bits;
    std::memcpy(&bits, &f[i], sizeof(bits));
    h[i] = static_cast<uint16_t>(bits >> 16);
  }
  RandomPatterns p;
  p.f32_bytes = count * sizeof(float);
  p.bf16_bytes = count * sizeof(uint16_t);
  Check(cudaMalloc(&p.f32, p.f32_bytes), "cudaMalloc");
  Check(cudaMalloc(&p.bf16, p.bf16_bytes), "cudaMalloc");
  Check(cudaMemcpy(p.f32, f.data(), p.f32_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  Check(cudaMemcpy(p.bf16, h.data(), p.bf16_bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Mean ms per call of `step` over each of kSweepBatches batches, for the variants in `steps`,
// batches interleaved; returns each variant's median batch.
template <typename Step>
std::vector<double> TimeInterleaved(std::vector<Step>& steps) {
  cudaEvent_t start, stop;
  Check(cudaEventCreate(&start), "cudaEventCreate");
  Check(cudaEventCreate(&stop), "cudaEventCreate");
  auto time_calls = [&](Step& step, int calls) {
    Check(cudaEventRecord(start), "cudaEventRecord");
    for (int i = 0; i < calls; ++i) step();
    Check(cudaEventRecord(stop), "cudaEventRecord");
    Check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.f;
    Check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return static_cast<double>(ms) / calls;
  };
  std::vector<int> calls(steps.size());
  for (size_t v = 0; v < steps.size(); ++v) {
    for (int i = 0; i < kSweepWarmup; ++i) steps[v]();
    const double one = time_calls(steps[v], 1);
    calls[v] = std::clamp(static_cast<int>(std::ceil(kSweepBatchMs / std::max(one, 1e-3))),
                          kSweepMinSteps, kSweepMaxSteps);
  }
  std::vector<std::vector<double>> batches(steps.size());
  for (int b = 0; b < kSweepBatches; ++b) {
    for (size_t v = 0; v < steps.size(); ++v) batches[v].push_back(time_calls(steps[v], calls[v]));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::vector<double> median(steps.size());
  for (size_t v = 0; v < steps.size(); ++v) {
    std::sort(batches[v].begin(), batches[v].end());
    median[v] = batches[v][kSweepBatches / 2];
  }
  return median;
}

// The rule: the smallest measured volume m * n * k at and above which FP8 is never slower; -1 for none.
int64_t SweepThreshold(const std::vector<SweepRow>& rows, int scaling) {
  std::vector<int64_t> volumes;
  for (const SweepRow& r : rows) volumes.push_back(r.volume());
  std::sort(volumes.begin(), volumes.end());
  for (int64_t v : volumes) {
    bool all_faster = true;
    for (const SweepRow& r : rows) {
      if (r.volume() >= v) all_faster = all_faster && r.speedup(scaling) >= kSweepMinSpeedup;
    }
    if (all_faster) return v;
  }
  return -1;
}

int RunLinearSweep() {
  cudaDeviceProp prop{};
  Check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");

  Fp8LinearOptions options[kSweepScalingCount];
  for (int s = 0; s < kSweepScalingCount; ++s) {
    fp8d::v1::Recipe proto;
    proto.set_name(kSweepScalings[s].recipe);
    absl::StatusOr<fp8d::RecipeConfig> recipe = fp8d::ResolveRecipe(proto);
    if (!recipe.ok()) Die(recipe.status());
    absl::StatusOr<Fp8LinearOptions> o = fp8d::kernels::Fp8LinearOptionsFromRecipe(*recipe);
    if (!o.ok()) Die(o.status());
    options[s] = *o;
  }

  std::vector<GemmShape> shapes;
  for (int64_t m : kSweepTokens) {
    for (int d : fp8d::kMinGemmDimGrid) {
      for (const auto& a : kSweepAspects) shapes.push_back({m, a[0] * d, a[1] * d});
    }
  }
  // One set of buffers, sized for the largest shape of each kind, shared by every measurement.
  size_t mk = 0, mn = 0, nk = 0, fp8_ws = 0;
  for (const GemmShape& g : shapes) {
    mk = std::max<size_t>(mk, g.m * g.k);
    mn = std::max<size_t>(mn, g.m * g.n);
    nk = std::max<size_t>(nk, g.n * g.k);
    for (const Fp8LinearOptions& o : options) {
      fp8_ws = std::max(fp8_ws, Fp8Linear::WorkspaceBytes(g, o));
    }
  }
  void *gemm_ws, *fp8_workspace, *x, *dy, *y, *dx, *w16, *w32, *dw, *scales, *stats;
  Check(cudaMalloc(&gemm_ws, fp8d::kernels::kGemmWorkspaceBytes), "cudaMalloc");
  Check(cudaMalloc(&fp8_workspace, fp8_ws), "cudaMalloc");
  Check(cudaMalloc(&x, mk * 2), "cudaMalloc");
  Check(cudaMalloc(&dx, mk * 2), "cudaMalloc");
  Check(cudaMalloc(&dy, mn * 2), "cudaMalloc");
  Check(cudaMalloc(&y, mn * 2), "cudaMalloc");
  Check(cudaMalloc(&w16, nk * 2), "cudaMalloc");
  Check(cudaMalloc(&w32, nk * 4), "cudaMalloc");
  Check(cudaMalloc(&dw, nk * 4), "cudaMalloc");
  Check(cudaMalloc(&scales, fp8d::kernels::kFp8LinearRoles * sizeof(float)), "cudaMalloc");
  Check(cudaMalloc(&stats, fp8d::kernels::kFp8LinearRoles * sizeof(Fp8CastStats)), "cudaMalloc");
  {
    const RandomPatterns p = MakeRandomPatterns(size_t{1} << 22);
    Tile(x, mk * 2, p.bf16, p.bf16_bytes);
    Tile(dy, mn * 2, p.bf16, p.bf16_bytes);
    Tile(w16, nk * 2, p.bf16, p.bf16_bytes);
    Tile(w32, nk * 4, p.f32, p.f32_bytes);
    Check(cudaMemset(dw, 0, nk * 4), "cudaMemset");
    // Delayed scaling's scales: fp8_max / amax for values in [-1, 1] (E4M3 X and W, E5M2 dY).
    const float s[fp8d::kernels::kFp8LinearRoles] = {448.f, 448.f, 57344.f};
    Check(cudaMemcpy(scales, s, sizeof(s), cudaMemcpyHostToDevice), "cudaMemcpy");
    Check(cudaFree(p.f32), "cudaFree");
    Check(cudaFree(p.bf16), "cudaFree");
  }
  auto bf16_runner = GemmRunner::Create(gemm_ws, fp8d::kernels::kGemmWorkspaceBytes);
  auto fp8_runner = Fp8GemmRunner::Create(gemm_ws, fp8d::kernels::kGemmWorkspaceBytes);
  if (!bf16_runner.ok()) Die(bf16_runner.status());
  if (!fp8_runner.ok()) Die(fp8_runner.status());
  const auto* scale = static_cast<const float*>(scales);
  const Fp8LinearScales delayed_scales{scale + fp8d::kernels::kFp8Input,
                                       scale + fp8d::kernels::kFp8Weight,
                                       scale + fp8d::kernels::kFp8GradOutput};
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* dyb = static_cast<const __nv_bfloat16*>(dy);

  std::printf(
      "fp8d-gemm-bench --linear-sweep on %s: one Linear layer's training step, ms (median of %d "
      "batches)\n"
      "  bf16: forward + dgrad + wgrad (FP32 accumulate) GEMMs; fp8: CastWeights + Forward + "
      "Backward; speed-up = bf16 / fp8\n",
      prop.name, kSweepBatches);
  std::printf("%6s %6s %6s %6s | %8s", "m", "n", "k", "min", "bf16");
  for (const SweepScaling& sc : kSweepScalings) std::printf(" | %8s %6s", sc.name, "x");
  std::printf("\n");

  std::vector<SweepRow> rows;
  for (const GemmShape& g : shapes) {
    std::vector<Fp8Linear> layers;
    for (const Fp8LinearOptions& o : options) {
      absl::StatusOr<Fp8Linear> l =
          Fp8Linear::Create(fp8_runner->get(), g, o, delayed_scales, fp8_workspace, fp8_ws,
                            static_cast<Fp8CastStats*>(stats));
      if (!l.ok()) Die(l.status());
      layers.push_back(*std::move(l));
    }
    std::vector<std::function<void()>> steps;
    // kernels/cuda_engine.cc's Linear and LinearBackward: y = x W^T, dx = dy W, dW += dy^T x.
    steps.push_back([&, g] {
      GemmConfig fwd;
      fwd.trans_b = true;
      GemmConfig dgrad;
      GemmConfig wgrad;
      wgrad.trans_a = true;
      wgrad.c_type = CUDA_R_32F;
      wgrad.beta = 1.f;
      GemmRunner& runner = **bf16_runner;
      OrDie(runner.Run(fwd, {g.m, g.n, g.k}, x, w16, y, nullptr));
      OrDie(runner.Run(dgrad, {g.m, g.k, g.n}, dy, w16, dx, nullptr));
      OrDie(runner.Run(wgrad, {g.n, g.k, g.m}, dy, x, dw, nullptr));
    });
    for (Fp8Linear& layer : layers) {
      steps.push_back([&] {
        layer.CastWeights(static_cast<const float*>(w32), nullptr);
        OrDie(layer.Forward(xb, static_cast<__nv_bfloat16*>(y), nullptr));
        OrDie(layer.Backward(dyb, xb, static_cast<__nv_bfloat16*>(dx), static_cast<float*>(dw),
                             nullptr));
      });
    }
    const std::vector<double> ms = TimeInterleaved(steps);
    SweepRow row;
    row.shape = g;
    row.bf16_ms = ms[0];
    for (int s = 0; s < kSweepScalingCount; ++s) row.fp8_ms[s] = ms[1 + s];
    std::printf("%6lld %6lld %6lld %6lld | %8.4f", static_cast<long long>(g.m),
                static_cast<long long>(g.n), static_cast<long long>(g.k),
                static_cast<long long>(row.min_dim()), row.bf16_ms);
    for (int s = 0; s < kSweepScalingCount; ++s) {
      std::printf(" | %8.4f %5.2fx", row.fp8_ms[s], row.speedup(s));
    }
    std::printf("\n");
    std::fflush(stdout);
    rows.push_back(row);
  }
  Check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");

  std::printf(
      "\nRule: a recipe's min_gemm_volume is the smallest measured m * n * k such that FP8 is at "
      "least as fast as BF16 (speed-up >= %.2f) at every measured shape of that volume or more; "
      "`none` when no volume qualifies. Copy the lines below into core/fp8_gemm_threshold.cc.\n",
      kSweepMinSpeedup);
  for (int s = 0; s < kSweepScalingCount; ++s) {
    // The evidence: how many shapes FP8 loses, and the largest of them (it sets the threshold).
    int slower = 0;
    const SweepRow* largest_slower = nullptr;
    for (const SweepRow& r : rows) {
      if (r.speedup(s) >= kSweepMinSpeedup) continue;
      ++slower;
      if (largest_slower == nullptr || r.volume() > largest_slower->volume()) largest_slower = &r;
    }
    std::printf("%s: slower than BF16 at %d of %zu shapes", kSweepScalings[s].name, slower,
                rows.size());
    if (largest_slower != nullptr) {
      std::printf("; the largest: m=%lld n=%lld k=%lld (%.2fx)",
                  static_cast<long long>(largest_slower->shape.m),
                  static_cast<long long>(largest_slower->shape.n),
                  static_cast<long long>(largest_slower->shape.k), largest_slower->speedup(s));
    }
    std::printf("\n");
  }
  for (int s = 0; s < kSweepScalingCount; ++s) {
    const int64_t t = SweepThreshold(rows, s);
    const std::string value = t < 0 ? "none" : std::to_string(t);
    std::printf("threshold scaling=%s min_gemm_volume=%s recipe=%s\n", kSweepScalings[s].name,
                value.c_str(), kSweepScalings[s].recipe);
  }
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 16384;
  int iters = 50;
  bool linear_sweep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--tokens" && i + 1 < argc) {
      tokens = std::atoll(argv[++i]);
    } else if (arg == "--iters" && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else if (arg == "--linear-sweep") {
      linear_sweep = true;
    } else {
      std::fprintf(stderr,
                   "usage: fp8d-gemm-bench [--tokens N] [--iters N]\n"
                   "       fp8d-gemm-bench --linear-sweep\n");
      return 2;
    }
  }
  if (linear_sweep) return RunLinearSweep();
  if (tokens <= 0 || tokens % 16 != 0 || iters <= 0) {
    std::fprintf(stderr, "--tokens must be a positive multiple of 16, --iters positive\n");
    return 2;
  }
  return RunGemmTable(tokens, iters);
}
