// fp8d-bench: training throughput of the CUDA engine on random tokens.
//
// Prints, per configuration: tokens/s, model TFLOP/s, MFU, step time and peak GPU memory.
// Model FLOPs per token are ModelConfig::TrainFlopsPerToken: 6N over the matmul parameters
// (every Linear plus the LM head) plus causal attention, 6 * L * T * d_model (forward QK^T and
// PV, backward twice that, halved by the causal mask). MFU divides by the dense BF16 peak of
// the GPU (989 TFLOP/s for the H100 and H200 SXM).
//
//   fp8d-bench                       # 124m B16xT1024 and 1b B8xT2048, BF16
//   fp8d-bench --recipe bf16,delayed,current,rowwise,blockwise   # each recipe in turn
//   fp8d-bench --recipe delayed --min-gemm-dim 1024              # policy.min_gemm_dim
//   fp8d-bench --recipe blockwise-128x128 --min-gemm-dim 16      # 128x128 weight blocks
//   fp8d-bench --recipe delayed --unfused   # FP8 casts apart from RMSNorm/SwiGLU (for comparison)
//   fp8d-bench --recipe delayed --fp8-lm-head          # policy.skip_lm_head: false
//   fp8d-bench --recipe delayed --skip-attention-qk    # policy.skip_attention_qk: true
//   fp8d-bench --recipe delayed --gemm-timing   # FP8 GEMMs in the step vs alone (see
//                                               # step_gemm_timing.h)
//   fp8d-bench --model 124m --batch 16 --seq 1024 --steps 20 --warmup 5
//   fp8d-bench --attention cudnn       # cuDNN flash attention forward and backward (default)
//   fp8d-bench --attention cudnn-fwd   # cuDNN forward, reference-kernel backward
//   fp8d-bench --attention reference   # the simple attention kernel for both
//   fp8d-bench --attention cudnn-atomic-dq  # cuDNN backward with an atomically summed dQ:
//                                           # not reproducible, only to measure what the
//                                           # ordered dQ costs
//   fp8d-bench --ds-workspace-mib 256  # bound on the cuDNN backward's dS workspace
//   fp8d-bench --repeat 2              # each case twice: are the losses bit-identical?
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/engine.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "core/rng.h"
#include "kernels/cuda_engine.h"
#include "tests/bench/step_gemm_timing.h"

namespace {

// Dense BF16 peak used for MFU when the device does not report one.
constexpr double kDefaultPeakTflops = 989.0;

struct BenchCase {
  std::string model;
  int batch;
  int seq;
};

// The recipe's name as --recipe takes it.
std::string RecipeLabel(const fp8d::RecipeConfig& r) {
  std::string label(fp8d::RecipeKindName(r.kind));
  if (r.kind == fp8d::RecipeKind::kBlockwise && r.weight_block == fp8d::WeightBlock::k128x128) {
    label += "-128x128";
  }
  if (r.is_fp8() && !r.policy.skip_lm_head) label += "+fp8-lm-head";
  if (r.is_fp8() && r.policy.skip_attention_qk) label += "+bf16-qk";
  return label;
}

// "delayed,current" -> recipes with the default policy, changed by the policy flags.
absl::StatusOr<std::vector<fp8d::RecipeConfig>> ParseRecipes(const std::string& list,
                                                            const fp8d::v1::LayerPolicy& policy) {
  std::vector<fp8d::RecipeConfig> out;
  for (absl::string_view name : absl::StrSplit(list, ',')) {
    fp8d::v1::Recipe proto;
    // "blockwise-128x128": the blockwise recipe with 128x128 weight blocks.
    if (name == "blockwise-128x128") {
      proto.set_name("blockwise");
      proto.set_weight_block("128x128");
    } else {
      proto.set_name(std::string(name));
    }
    *proto.mutable_policy() = policy;
    absl::StatusOr<fp8d::RecipeConfig> r = fp8d::ResolveRecipe(proto);
    if (!r.ok()) return r.status();
    out.push_back(*r);
  }
  return out;
}

// What ran the attention forward and backward.
const char* AttentionLabel(const fp8d::kernels::CudaEngine& e,
                           const fp8d::kernels::CudaEngineOptions& options) {
  if (e.attention_backend() != fp8d::kernels::AttentionBackend::kCudnn) return "reference";
  if (options.cudnn_attention_backward && e.attention_note().empty()) {
    return options.attention_backward_dq == fp8d::kernels::CudnnAttention::BackwardDq::kOrdered
               ? "cudnn-fwd+bwd"
               : "cudnn-fwd+bwd-atomic-dq";
  }
  return "cudnn-fwd+reference-bwd";
}

// Every step's loss and gradient norm, to compare repeated runs bit for bit.
struct RunTrace {
  std::vector<float> loss, grad_norm;
};

int RunCase(const BenchCase& c, const fp8d::RecipeConfig& recipe, int steps, int warmup,
            fp8d::kernels::CudaEngineOptions options, bool gemm_timing, RunTrace* trace) {
  fp8d::v1::ModelConfig proto;
  proto.set_preset(c.model);
  absl::StatusOr<fp8d::ModelConfig> model = fp8d::ResolveModelConfig(proto);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 2;
  }
  const auto t_create = std::chrono::steady_clock::now();
  auto engine = fp8d::kernels::CudaEngine::Create(*model, recipe, /*seed=*/1, c.batch, c.seq,
                                                  options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s B%dxT%d: %s\n", c.model.c_str(), c.batch, c.seq,
                 std::string(engine.status().message()).c_str());
    return 1;
  }
  const double create_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_create).count();

  fp8d::Rng rng(42);
  fp8d::TokenBatch batch;
  batch.batch = c.batch;
  batch.seq_len = c.seq;
  const size_t n = static_cast<size_t>(c.batch) * c.seq;
  batch.inputs.resize(n);
  batch.targets.resize(n);
  for (size_t i = 0; i < n; ++i) {
    batch.inputs[i] = static_cast<int32_t>(rng.NextBelow(model->vocab_size));
    batch.targets[i] = static_cast<int32_t>(rng.NextBelow(model->vocab_size));
  }
  fp8d::OptimizerStepArgs args;
  args.lr = 1e-4f;
  args.weight_decay = 0.1f;
  args.grad_clip = 1.f;

  float first_loss = 0.f, last_loss = 0.f;
  std::chrono::steady_clock::time_point t0;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup) t0 = std::chrono::steady_clock::now();
    args.step = s;
    absl::StatusOr<fp8d::StepResult> r = (*engine)->TrainStep({&batch, 1}, args);
    if (!r.ok()) {
      std::fprintf(stderr, "step %d: %s\n", s, std::string(r.status().message()).c_str());
      return 1;
    }
    if (s == 0) first_loss = r->loss;
    last_loss = r->loss;
    trace->loss.push_back(r->loss);
    trace->grad_norm.push_back(r->grad_norm);
  }
  cudaDeviceSynchronize();  // TrainStep returns before the optimizer kernels finish
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  const fp8d::LayerPlan plan = (*engine)->PlanLayers(warmup + steps);

  const fp8d::DeviceInfo& dev = (*engine)->device();
  const double peak = dev.peak_bf16_tflops > 0 ? dev.peak_bf16_tflops : kDefaultPeakTflops;
  const double step_ms = 1e3 * secs / steps;
  const double tok_s = static_cast<double>(n) * steps / secs;
  const double flops_per_token = model->TrainFlopsPerToken(c.seq);
  const double tflops = tok_s * flops_per_token / 1e12;
  std::printf(
      "bench model=%s recipe=%s%s fp8_layers=%d/%zu batch=%d seq=%d params=%.1fM gpu=\"%s\" "
      "attention=%s steps=%d warmup=%d\n"
      "  step_time_ms=%.2f tokens_per_s=%.0f model_tflops=%.1f mfu=%.1f%% (peak %.0f TFLOP/s)\n"
      "  flops_per_token=%.4g (6N=%.4g + attention) peak_mem_gib=%.2f (plan %.2f GiB, "
      "device used %.2f of %.2f GiB) create_s=%.1f loss %.4f -> %.4f\n",
      c.model.c_str(), RecipeLabel(recipe).c_str(),
      options.fuse_fp8_casts ? "" : " (unfused casts)", plan.fp8_count(),
      plan.layers.size(), c.batch, c.seq, model->ParamCount() / 1e6, dev.name.c_str(),
      AttentionLabel(**engine, options), steps, warmup,
      step_ms, tok_s, tflops, 100.0 * tflops / peak, peak, flops_per_token,
      6.0 * model->MatmulParamCount(), (*engine)->MemoryBytes() / double(1 << 30),
      (*engine)->memory_plan().Estimate() / double(1 << 30), (total_b - free_b) / double(1 << 30),
      total_b / double(1 << 30), create_s, first_loss, last_loss);
  if (!(*engine)->attention_note().empty()) {
    std::printf("  attention note: %s\n", (*engine)->attention_note().c_str());
  }
  std::fflush(stdout);
  if (gemm_timing && plan.fp8_count() > 0) {
    args.step = warmup + steps;
    if (absl::Status s = fp8d::bench::PrintStepGemmTiming(**engine, batch, args, 3); !s.ok()) {
      std::fprintf(stderr, "--gemm-timing: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<BenchCase> cases;
  BenchCase one{"", 0, 0};
  int steps = 20, warmup = 5, repeat = 1;
  bool gemm_timing = false;
  fp8d::v1::LayerPolicy policy;
  std::string recipe_list = "bf16";
  fp8d::kernels::CudaEngineOptions options;
  for (int i = 1; i < argc; ++i) {
    auto next = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (!std::strcmp(argv[i], "--model")) one.model = next("--model");
    else if (!std::strcmp(argv[i], "--batch")) one.batch = std::atoi(next("--batch"));
    else if (!std::strcmp(argv[i], "--seq")) one.seq = std::atoi(next("--seq"));
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(next("--steps"));
    else if (!std::strcmp(argv[i], "--warmup")) warmup = std::atoi(next("--warmup"));
    else if (!std::strcmp(argv[i], "--recipe")) recipe_list = next("--recipe");
    else if (!std::strcmp(argv[i], "--unfused")) options.fuse_fp8_casts = false;
    else if (!std::strcmp(argv[i], "--gemm-timing")) gemm_timing = true;
    else if (!std::strcmp(argv[i], "--min-gemm-dim"))
      policy.set_min_gemm_dim(std::atoi(next("--min-gemm-dim")));
    else if (!std::strcmp(argv[i], "--fp8-lm-head")) policy.set_skip_lm_head(false);
    else if (!std::strcmp(argv[i], "--skip-attention-qk")) policy.set_skip_attention_qk(true);
    else if (!std::strcmp(argv[i], "--attention")) {
      const std::string a = next("--attention");
      if (a != "cudnn" && a != "cudnn-fwd" && a != "reference" && a != "cudnn-atomic-dq") {
        std::fprintf(stderr,
                     "--attention must be cudnn, cudnn-fwd, reference or cudnn-atomic-dq\n");
        return 2;
      }
      options.attention = a == "reference" ? fp8d::kernels::AttentionBackend::kReference
                                           : fp8d::kernels::AttentionBackend::kCudnn;
      options.cudnn_attention_backward = a == "cudnn" || a == "cudnn-atomic-dq";
      if (a == "cudnn-atomic-dq") {
        options.attention_backward_dq =
            fp8d::kernels::CudnnAttention::BackwardDq::kAtomicAccumulator;
      }
    }
    else if (!std::strcmp(argv[i], "--ds-workspace-mib")) {
      options.attention_ds_workspace_limit_bytes =
          static_cast<size_t>(std::atol(next("--ds-workspace-mib"))) << 20;
    }
    else if (!std::strcmp(argv[i], "--repeat")) repeat = std::atoi(next("--repeat"));
    else {
      std::fprintf(stderr,
                   "usage: fp8d-bench [--model NAME --batch B --seq T] [--steps N] [--warmup N] "
                   "[--recipe NAME[,NAME...]] [--min-gemm-dim N] [--fp8-lm-head] "
                   "[--skip-attention-qk] [--unfused] [--gemm-timing] "
                   "[--attention cudnn|cudnn-fwd|reference|cudnn-atomic-dq] "
                   "[--ds-workspace-mib N] [--repeat N]\n");
      return 2;
    }
  }
  if (steps < 1 || warmup < 0 || repeat < 1) {
    std::fprintf(stderr, "--steps and --repeat must be >= 1 and --warmup >= 0\n");
    return 2;
  }
  if (!one.model.empty()) {
    if (one.batch < 1 || one.seq < 1) {
      std::fprintf(stderr, "--model needs --batch >= 1 and --seq >= 1\n");
      return 2;
    }
    cases.push_back(one);
  } else {
    cases = {{"124m", 16, 1024}, {"1b", 8, 2048}};
  }
  absl::StatusOr<std::vector<fp8d::RecipeConfig>> recipes =
      ParseRecipes(recipe_list, policy);
  if (!recipes.ok()) {
    std::fprintf(stderr, "--recipe: %s\n", std::string(recipes.status().message()).c_str());
    return 2;
  }
  int rc = 0;
  for (const BenchCase& c : cases) {
    for (const fp8d::RecipeConfig& r : *recipes) {
      RunTrace first;
      for (int k = 0; k < repeat; ++k) {
        RunTrace trace;
        rc |= RunCase(c, r, steps, warmup, options, gemm_timing, &trace);
        if (k == 0) {
          first = trace;
          continue;
        }
        size_t differ = 0;
        while (differ < trace.loss.size() && differ < first.loss.size() &&
               trace.loss[differ] == first.loss[differ] &&
               trace.grad_norm[differ] == first.grad_norm[differ]) {
          ++differ;
        }
        if (differ == trace.loss.size() && differ == first.loss.size()) {
          std::printf("  repeat %d: losses and grad norms of all %zu steps bit-identical to run 1\n",
                      k + 1, differ);
        } else {
          std::printf("  repeat %d: DIFFERS from run 1 at step %zu (loss %.6f vs %.6f)\n", k + 1,
                      differ, differ < trace.loss.size() ? trace.loss[differ] : 0.f,
                      differ < first.loss.size() ? first.loss[differ] : 0.f);
          rc |= 1;
        }
      }
    }
  }
  return rc;
}
