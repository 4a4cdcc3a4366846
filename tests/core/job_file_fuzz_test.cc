// A bounded, seeded fuzzer for job files: mutations of real job files (byte flips, insertions,
// deletions, splices of YAML tokens, random bytes) go through ParseJobText, ResolveJobSpec and
// --set overrides. Every input must come back OK or with an error that says something; a crash
// or hang fails the suite. Bounded by kIterations and kBudget; the seed makes it repeatable.
#include <random>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "core/job_spec.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

constexpr int kIterations = 20000;
constexpr absl::Duration kBudget = absl::Seconds(20);
constexpr uint32_t kSeed = 12;

const std::vector<std::string>& Seeds() {
  static const std::vector<std::string> seeds = {
      "name: demo\nmodel:\n  preset: tiny\ndata:\n  train: /usr/share/games/fortunes/cookie\n"
      "  val_fraction: 0.05\noptimizer:\n  lr: 3e-3\n  min_lr: 3e-4\n  warmup_steps: 20\n"
      "steps: 300\nbatch_size: 4\nseq_len: 64\nrecipe:\n  name: delayed\n"
      "  amax_history_len: 16\n  policy:\n    skip_lm_head: true\n"
      "    exclude: [\"layers\\\\.0\\\\..*\"]\neval_interval: 100\ncheckpoint_interval: 100\n",
      "{\"name\": \"j\", \"model\": {\"preset\": \"124m\", \"n_layer\": 2}, \"data\": {\"train\": "
      "\"a.bin\", \"format\": \"bin\"}, \"steps\": 10, \"recipe\": {\"name\": \"blockwise\", "
      "\"weight_block\": \"128x128\", \"policy\": {\"include\": [\"lm_head\"]}}}",
      "model: {preset: tiny}\ndata: {train: a.txt}\nsteps: 1\nrecipe: {name: current, margin: 2}\n",
  };
  return seeds;
}

const std::vector<std::string>& Tokens() {
  static const std::vector<std::string> tokens = {
      ":", "\n", "- ", "[", "]", "{", "}", "---\n", "&a ", "*a", "!!binary ", "\"", "'", "#",
      "  ", "\t", "1e999", "-1", "nan", ".inf", "0x10", "99999999999999999999", "null", "~",
      "true", "recipe:", "policy:", "include:", "(.*)*(.*)*!", "\\", "\xff", std::string(1, '\0'),
      "steps: ", "model:", "n_layer: ", "<<: *a", "? ", "|\n", ">\n", "%YAML 1.2\n"};
  return tokens;
}

std::string Mutate(std::string s, std::mt19937& rng) {
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  const int edits = 1 + static_cast<int>(pick(4));
  for (int e = 0; e < edits; ++e) {
    switch (pick(5)) {
      case 0:  // flip a byte
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1 << pick(8));
        break;
      case 1:  // insert a token
        s.insert(s.empty() ? 0 : pick(s.size() + 1), Tokens()[pick(Tokens().size())]);
        break;
      case 2:  // delete a range
        if (!s.empty()) {
          const size_t at = pick(s.size());
          s.erase(at, pick(std::min<size_t>(32, s.size() - at) + 1));
        }
        break;
      case 3: {  // duplicate a range (repeats keys, nests deeper)
        if (!s.empty()) {
          const size_t at = pick(s.size());
          const std::string piece = s.substr(at, pick(64) + 1);
          s.insert(pick(s.size() + 1), piece);
        }
        break;
      }
      default:  // random bytes
        for (size_t n = pick(16) + 1; n > 0; --n) {
          s.insert(s.empty() ? 0 : pick(s.size() + 1), 1, static_cast<char>(pick(256)));
        }
    }
  }
  return s;
}

void ExpectMessage(const absl::Status& s, const std::string& input) {
  if (s.ok()) return;
  EXPECT_FALSE(s.message().empty()) << s << " for input:\n" << input;
}

TEST(JobFileFuzz, EveryMutatedJobFileParsesOrSaysWhy) {
  std::mt19937 rng(kSeed);
  const absl::Time deadline = absl::Now() + kBudget;
  int ran = 0, parsed = 0;
  for (; ran < kIterations && absl::Now() < deadline; ++ran) {
    const std::string input = Mutate(Seeds()[ran % Seeds().size()], rng);
    absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText(input, "fuzz.yaml");
    ExpectMessage(spec.status(), input);
    if (!spec.ok()) continue;
    ++parsed;
    ExpectMessage(ResolveJobSpec(*spec).status(), input);
    // The same bytes as a --set value.
    fp8d::v1::JobSpec copy = *spec;
    const std::string value = input.substr(0, std::min<size_t>(input.size(), 200));
    ExpectMessage(ApplySetOverride(&copy, "recipe.policy.include=" + value), value);
    ExpectMessage(ApplySetOverride(&copy, value), value);
  }
  std::printf("job file fuzz: %d inputs, %d parsed\n", ran, parsed);
  EXPECT_GE(ran, 100) << "the time budget ran out far too early";
}

}  // namespace
}  // namespace fp8d
